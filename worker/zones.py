"""Zone look-up for the worker: normalised name or alias -> zone id, cached in memory."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.zones import catalog_version, load_zone_map, lock_for_store


class ZoneIndex:
    """All zone names and aliases, reloaded when the zone catalog changes.

    A zone table is small (thousands of names), so the whole map is held in memory and
    each permit costs one dict look-up. Every ``ttl_s`` seconds one small query reads the
    catalog's version, and the map is reloaded only when it moved. A row the map cannot
    link gets a second look under the catalog lock as it is stored (`link_disconnected`),
    so a stale map never leaves a permit disconnected for good.
    """

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._ids: dict[str, int] = {}
        self._version: int | None = None
        self._checked_at = float("-inf")

    def zone_id(self, zone_normalized: str | None) -> int | None:
        if zone_normalized is None:
            return None
        if time.monotonic() - self._checked_at > self._ttl_s:
            self.refresh()
        return self._ids.get(zone_normalized)

    def refresh(self) -> None:
        """Reload the map if the catalog changed since it was loaded."""
        with self._sessions() as session:
            # The version first: a change committed between the two reads makes the map
            # newer than the version, which only costs one more reload, never a stale map.
            version = catalog_version(session)
            if version != self._version:
                self._load(session, version)
        self._checked_at = time.monotonic()

    def link_disconnected(self, session: Session, rows: Sequence[dict[str, Any]]) -> None:
        """Look the zone of each row the map could not link up again, under the catalog lock.

        Call it in the transaction that stores ``rows``, before the insert: it holds zone
        changes off until that transaction ends (shared/zones.py says why this closes the
        race with reconciliation). Rows that all link cost nothing.
        """
        disconnected = [
            row for row in rows if row["zone_id"] is None and row["zone_normalized"] is not None
        ]
        if not disconnected:
            return
        version = lock_for_store(session)
        if version != self._version:
            self._load(session, version)
            for row in disconnected:
                row["zone_id"] = self._ids.get(row["zone_normalized"])

    def _load(self, session: Session, version: int) -> None:
        self._ids = load_zone_map(session)
        self._version = version
        self._checked_at = time.monotonic()
