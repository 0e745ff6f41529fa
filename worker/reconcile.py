"""Linking disconnected permits to the zone their name now matches, in bounded batches."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.constants import RECONCILE_BATCH_ROWS
from shared.models import Permit
from shared.normalize import normalize_zone
from shared.zones import load_zone_map

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    names: int  # normalised names looked for that match a zone or an alias
    linked: int  # permits linked
    batches: int  # transactions run


def reconcile(
    sessions: sessionmaker[Session],
    names: Iterable[str] | None = None,
    batch_rows: int = RECONCILE_BATCH_ROWS,
) -> ReconcileResult:
    """Link every disconnected permit named ``names`` (None: any name) that matches a zone.

    ``names`` are zone names as sent or normalised (they are normalised here).

    Idempotent: a permit once linked is never looked at again, so a re-run (RQ's retry,
    a second job, an operator) links only what is still disconnected. Each batch is one
    transaction of at most ``batch_rows`` permits of one name, taken in id order from
    where the last batch stopped (keyset), so memory and lock time stay bounded and a
    crash loses only the batch in flight.
    """
    with sessions() as session:
        zone_map = load_zone_map(session)
    wanted: set[str] = set(zone_map)
    if names is not None:
        wanted &= {normalize_zone(name) for name in names}
    linked = batches = 0
    for name in sorted(wanted):
        name_linked, after_id = 0, 0
        while True:
            with sessions.begin() as session:
                ids = link_batch(session, name, zone_map[name], after_id, batch_rows)
            batches += 1
            name_linked += len(ids)
            if len(ids) < batch_rows:
                break
            after_id = max(ids)
        if name_linked:
            log.info("zone_name_reconciled", zone_id=zone_map[name], linked=name_linked)
        linked += name_linked
    return ReconcileResult(len(wanted), linked, batches)


def link_batch(session: Session, name: str, zone_id: int, after_id: int, limit: int) -> list[int]:
    """Link up to ``limit`` disconnected permits named ``name`` with ids above ``after_id``.

    Returns the ids linked. The batch is locked in id order (FOR UPDATE; SQLite, with its
    one writer, ignores it), so two reconciles of one name queue behind each other
    instead of deadlocking; a permit linked meanwhile by the other is skipped.
    """
    batch = (
        select(Permit.id)
        .where(
            Permit.zone_normalized == name,
            Permit.unlinked,
            Permit.id > after_id,
        )
        .order_by(Permit.id)
        .limit(limit)
        .with_for_update()
    )
    statement = (
        update(Permit)
        .where(Permit.id.in_(batch.scalar_subquery()), Permit.zone_id.is_(None))
        .values(zone_id=zone_id)
        .returning(Permit.id)
    )
    return list(session.scalars(statement))
