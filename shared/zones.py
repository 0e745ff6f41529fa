"""The zone catalog: zones and aliases, and how a change to it reaches workers without a race.

Matching is exact, on the normalised name (`normalize_zone`) of a zone or of an alias;
never fuzzy, since a wrong link is worse than a disconnected permit. A normalised name
means one zone: it is one zone's name or one alias, never both (checked under the lock).

The race: a worker stores a permit as disconnected because its cached zone map lacks the
zone while an operator adds that zone; if the worker's insert commits after the reconcile
job has scanned, the permit stays disconnected. Two things close it:

- every change to the catalog first calls `begin_change`: an exclusive lock (a PostgreSQL
  advisory lock; SQLite's one writer lock) and a version bump, in the change's own
  transaction. The reconcile job is enqueued only once that transaction has committed.
- a worker about to store a disconnected row first calls `lock_for_store` in its own
  transaction: the same lock, shared, held until it commits. It then reads the version
  and, if its map is older, reloads it and looks the row's zone up again.

Either the store holds the lock first, and the change (so the reconcile job) waits until
the disconnected row is committed, where the reconcile will find it; or the change holds
it first, and the store waits until the change is committed, then sees the new version
and links the row itself. Stores whose rows all link take no lock.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from redis import Redis
from rq import Retry
from sqlalchemy import CursorResult, func, insert, select, update
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.constants import (
    RECONCILE_JOB_TIMEOUT_S,
    RECONCILE_ZONES_JOB,
    ZONE_CATALOG_LOCK_KEY,
)
from shared.errors import ZoneConflictError, ZoneExistsError, ZoneNotFoundError
from shared.models import Permit, Zone, ZoneAlias, ZoneCatalog, utcnow
from shared.normalize import normalize_zone
from shared.queue import JobWriter

NAME_MAX_CHARS = 200  # as the push contract's `zone`
CODE_MAX_CHARS = 50
_CATALOG_ROW = 1

# A reconcile job that failed (database away) runs again: it is idempotent.
RECONCILE_RETRY = Retry(max=5, interval=[10, 30, 60, 300, 600])


# The lock and the version.


def begin_change(session: Session) -> None:
    """Lock the catalog against stores of disconnected permits and bump its version.

    Call it first in the transaction that changes zones or aliases, before any read: on
    SQLite the UPDATE is what takes the writer lock (and starts the transaction).
    """
    if _is_postgresql(session):
        session.execute(select(func.pg_advisory_xact_lock(ZONE_CATALOG_LOCK_KEY)))
    bumped = session.execute(
        update(ZoneCatalog)
        .where(ZoneCatalog.id == _CATALOG_ROW)
        .values(version=ZoneCatalog.version + 1, changed_at=utcnow())
    )
    if cast("CursorResult[Any]", bumped).rowcount == 0:  # the row was deleted: make it again
        session.execute(insert(ZoneCatalog).values(id=_CATALOG_ROW, version=1))


# A store runs these per batch, so they are fixed SQL text, built from int constants only
# (no parameters, so no paramstyle to mind). CPU per statement, round trip included,
# measured here: 350-430 us built through the ORM each time, 145-190 us as a ready Core
# statement, 135-140 as text.
_LOCK_FOR_STORE = f"SELECT pg_advisory_xact_lock_shared({ZONE_CATALOG_LOCK_KEY})"
# SQLite has no shared locks: the writer lock, which a change takes too.
_LOCK_FOR_STORE_SQLITE = f"UPDATE zone_catalog SET version = version WHERE id = {_CATALOG_ROW}"  # noqa: S608
_CATALOG_VERSION = f"SELECT version FROM zone_catalog WHERE id = {_CATALOG_ROW}"  # noqa: S608


def lock_for_store(session: Session) -> int:
    """Hold catalog changes off until this transaction ends; return the catalog version."""
    lock = _LOCK_FOR_STORE if _is_postgresql(session) else _LOCK_FOR_STORE_SQLITE
    session.connection().exec_driver_sql(lock)
    return catalog_version(session)


def catalog_version(session: Session) -> int:
    """The catalog's version: it moves on every change to zones or aliases."""
    return int(session.connection().exec_driver_sql(_CATALOG_VERSION).scalar() or 0)


def load_zone_map(session: Session) -> dict[str, int]:
    """Every normalised zone name and alias, with its zone id."""
    aliases = session.execute(select(ZoneAlias.alias_normalized, ZoneAlias.zone_id))
    names = session.execute(select(Zone.name_normalized, Zone.id))
    # The checks below keep names and aliases apart; should a row slip past them (an
    # edit by hand), a zone's own name wins over another zone's alias.
    return {name: zone_id for name, zone_id in (*aliases, *names)}


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# Changes. Each one calls begin_change first and returns the normalised names that the
# reconcile job should look for.


def add_zone(session: Session, name: str, code: str | None = None) -> Zone:
    """Add a zone; its name must not be a zone's name or an alias already."""
    begin_change(session)
    normalized = checked_name(name)
    if (existing := find_zone(session, normalized)) is not None:
        raise ZoneExistsError(f"zone {existing.name!r} already exists")
    _refuse_alias(session, normalized, name)
    code = _checked_code(session, code)
    zone = Zone(name=name.strip(), name_normalized=normalized, code=code)
    session.add(zone)
    session.flush()
    return zone


def add_alias(session: Session, zone_name: str, alias: str) -> tuple[Zone, bool]:
    """Make ``alias`` another name of zone ``zone_name``; False if it already was one."""
    begin_change(session)
    zone = get_zone(session, zone_name)
    normalized = checked_name(alias)
    if (other := find_zone(session, normalized)) is not None:
        raise ZoneConflictError(f"{alias!r} is the name of zone {other.name!r}, not an alias")
    owner = _alias_owner(session, normalized)
    if owner is not None and owner.id == zone.id:
        return zone, False
    if owner is not None:
        raise ZoneConflictError(f"{alias!r} is already an alias of zone {owner.name!r}")
    session.add(ZoneAlias(alias=alias.strip(), alias_normalized=normalized, zone_id=zone.id))
    session.flush()
    return zone, True


def rename_zone(session: Session, old: str, new: str, *, keep_old_as_alias: bool = True) -> Zone:
    """Rename a zone; its permits stay linked. The old name stays an alias unless told not.

    Meters may go on sending the old name for a while: keeping it as an alias keeps
    their permits linked. A new name that was this zone's alias stops being an alias.
    """
    begin_change(session)
    zone = get_zone(session, old)
    normalized = checked_name(new)
    if (other := find_zone(session, normalized)) is not None and other.id != zone.id:
        raise ZoneExistsError(f"zone {other.name!r} already exists")
    owner = _alias_owner(session, normalized)
    if owner is not None and owner.id != zone.id:
        raise ZoneConflictError(f"{new!r} is already an alias of zone {owner.name!r}")
    old_name, old_normalized = zone.name, zone.name_normalized
    if owner is not None:
        alias = session.scalars(
            select(ZoneAlias).where(ZoneAlias.alias_normalized == normalized)
        ).one()
        session.delete(alias)
        session.flush()  # before the name takes its place
    zone.name, zone.name_normalized = new.strip(), normalized
    session.flush()
    if keep_old_as_alias and old_normalized != normalized:
        session.add(ZoneAlias(alias=old_name, alias_normalized=old_normalized, zone_id=zone.id))
        session.flush()
    return zone


# Reads.


@dataclass(frozen=True, slots=True)
class ZoneListing:
    name: str
    code: str | None
    aliases: list[str]


def list_zones(session: Session) -> list[ZoneListing]:
    """Every zone with its code and aliases, by name."""
    aliases: dict[int, list[str]] = {}
    for zone_id, alias in session.execute(
        select(ZoneAlias.zone_id, ZoneAlias.alias).order_by(ZoneAlias.alias_normalized)
    ):
        aliases.setdefault(zone_id, []).append(alias)
    zones = session.scalars(select(Zone).order_by(Zone.name_normalized))
    return [ZoneListing(z.name, z.code, aliases.get(z.id, [])) for z in zones]


def find_zone(session: Session, name: str) -> Zone | None:
    """The zone whose own name is ``name`` once normalised (aliases do not count)."""
    return session.scalar(select(Zone).where(Zone.name_normalized == normalize_zone(name)))


def get_zone(session: Session, name: str) -> Zone:
    zone = find_zone(session, name)
    if zone is None:
        raise ZoneNotFoundError(f"no zone is named {name!r} (see: permit-push zones list)")
    return zone


def checked_name(name: str) -> str:
    """``name`` normalised, refused when it is empty or longer than a push may send."""
    normalized = normalize_zone(name)
    if not normalized:
        raise ZoneConflictError("a zone name or alias cannot be empty")
    if len(name.strip()) > NAME_MAX_CHARS:
        raise ZoneConflictError(f"a zone name or alias is at most {NAME_MAX_CHARS} characters")
    return normalized


def _alias_owner(session: Session, normalized: str) -> Zone | None:
    return session.scalar(
        select(Zone).join(ZoneAlias).where(ZoneAlias.alias_normalized == normalized)
    )


def _refuse_alias(session: Session, normalized: str, name: str) -> None:
    if (owner := _alias_owner(session, normalized)) is not None:
        raise ZoneConflictError(f"{name!r} is already an alias of zone {owner.name!r}")


def _checked_code(session: Session, code: str | None) -> str | None:
    if code is None or not code.strip():
        return None
    code = code.strip()
    if len(code) > CODE_MAX_CHARS:
        raise ZoneConflictError(f"a zone code is at most {CODE_MAX_CHARS} characters")
    holder = session.scalar(select(Zone).where(Zone.code == code))
    if holder is not None:
        raise ZoneConflictError(f"code {code!r} belongs to zone {holder.name!r}")
    return code


@dataclass(frozen=True, slots=True)
class DisconnectedName:
    """Permits whose zone name matches no zone, grouped by the normalised name."""

    normalized: str
    sent_as: str  # one spelling as sent
    permits: int
    first_seen: datetime
    last_seen: datetime
    # The closest zone names by spelling, for the operator to judge: never applied.
    suggestions: list[str]


@dataclass(frozen=True, slots=True)
class DisconnectedReport:
    names: list[DisconnectedName]  # the most frequent first, up to the limit asked for
    total_names: int
    total_permits: int


def disconnected_names(session: Session, limit: int = 50) -> DisconnectedReport:
    """The zone names that match no zone, with their permit counts and first/last seen."""
    permits = func.count()
    rows = session.execute(
        select(
            Permit.zone_normalized,
            func.min(Permit.zone_name),
            permits,
            func.min(Permit.received_at),
            func.max(Permit.received_at),
            func.count().over(),  # groups, before the limit
            func.sum(permits).over(),
        )
        .where(Permit.disconnected)
        .group_by(Permit.zone_normalized)
        .order_by(permits.desc(), Permit.zone_normalized)
        .limit(limit)
    ).all()
    if not rows:
        return DisconnectedReport([], 0, 0)
    known = _display_names(session)
    names = [
        DisconnectedName(
            str(normalized), str(sent_as), count, first, last, suggest_zones(str(normalized), known)
        )
        for normalized, sent_as, count, first, last, _, _ in rows
    ]
    return DisconnectedReport(names, int(rows[0][5]), int(rows[0][6]))


def suggest_zones(normalized: str, known: Mapping[str, str], n: int = 3) -> list[str]:
    """Zone names spelt like ``normalized`` (by difflib), closest first: suggestions only.

    ``known`` maps each normalised zone name and alias to its zone's name. Matching never
    uses this: a permit is linked only by an exact normalised name or alias.
    """
    suggestions: list[str] = []
    for close in difflib.get_close_matches(normalized, known, n=n * 2, cutoff=0.6):
        if known[close] not in suggestions:
            suggestions.append(known[close])
    return suggestions[:n]


def _display_names(session: Session) -> dict[str, str]:
    """Each normalised zone name and alias -> its zone's name."""
    aliases = session.execute(
        select(ZoneAlias.alias_normalized, Zone.name).join(Zone, ZoneAlias.zone_id == Zone.id)
    )
    names = {alias: zone for alias, zone in aliases}
    zones = session.execute(select(Zone.name_normalized, Zone.name))
    names.update({normalized: name for normalized, name in zones})
    return names


# The reconcile job.


def enqueue_reconcile(redis: Redis, settings: Settings, names: Sequence[str] | None) -> str:
    """Queue a reconcile of the disconnected permits named ``names`` (None: every name).

    Call it after the change's transaction has committed: a job that ran before would
    not see the new zone. Returns the job id.

    The job goes to the front of the permits queue, so it never waits behind a backlog of
    batches. Not to a queue of its own: RQ moves a job atomically into its intermediate
    queue (BLMOVE), which is what lets a killed worker's batch be re-run, only for a
    worker that listens to a single queue; with two it falls back to BLPOP.
    """
    wanted = None if names is None else sorted({normalize_zone(name) for name in names})
    return JobWriter.connect(redis, settings).write(
        RECONCILE_ZONES_JOB,
        {"names": wanted},
        f"reconcile_zones({'all' if wanted is None else len(wanted)} names)",
        {},
        retry=RECONCILE_RETRY,
        timeout_s=RECONCILE_JOB_TIMEOUT_S,
        at_front=True,
    )
