"""Zone look-up for the worker: normalised name or alias -> zone id, cached in memory."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.models import Zone, ZoneAlias


class ZoneIndex:
    """All zone names and aliases, reloaded when older than ``ttl_s`` seconds.

    A zone table is small (thousands of names), so the whole map is held in memory and
    each permit costs one dict look-up.
    """

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._ids: dict[str, int] = {}
        self._loaded_at = float("-inf")

    def zone_id(self, zone_normalized: str | None) -> int | None:
        if zone_normalized is None:
            return None
        if time.monotonic() - self._loaded_at > self._ttl_s:
            self.reload()
        return self._ids.get(zone_normalized)

    def reload(self) -> None:
        with self._sessions() as session:
            aliases = session.execute(select(ZoneAlias.alias_normalized, ZoneAlias.zone_id))
            names = session.execute(select(Zone.name_normalized, Zone.id))
            # A zone's own name wins over another zone's alias of the same spelling.
            ids = {name: zone_id for name, zone_id in (*aliases, *names)}
        self._ids = ids
        self._loaded_at = time.monotonic()
