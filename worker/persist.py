"""Storing a batch of permits: one transaction, idempotent on the reference id."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

import structlog
from sqlalchemy import Insert, bindparam, cast, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from shared.db import insert_ignoring_duplicates
from shared.models import DeadLetter, Permit
from shared.schemas import PermitJob
from worker.zones import ZoneIndex

log = structlog.get_logger(__name__)

# Errors that belong to a row (the database refused it, or a value does not convert):
# retrying the same row cannot help. Anything else is a fault of the code or of the
# database and fails the job, which RQ keeps and retries.
ROW_ERRORS = (IntegrityError, DataError, InvalidOperation, ValueError, KeyError)


@dataclass(frozen=True, slots=True)
class StoreResult:
    stored: int  # new rows
    duplicates: int  # already stored (a resend, or a re-run of the job)
    dead_lettered: int


def store_permits(
    session: Session,
    permits: Sequence[PermitJob],
    zones: ZoneIndex,
    job_id: str | None = None,
) -> StoreResult:
    """Store ``permits`` in one transaction; rows that cannot be stored go to dead letters.

    A batch that fails as a whole is split in halves, each stored in a transaction of its
    own, and so on down to the bad rows: one bad row in 200 costs about 2 log2(200) + 2
    transactions (not one per row), and the good rows are stored all the same. Database
    outages (OperationalError) are not caught: RQ retries the job.
    """
    stored, dead = _store_halving(session, list(permits), zones, job_id, whole=True)
    return StoreResult(stored, len(permits) - stored - dead, dead)


def _store_halving(
    session: Session,
    permits: list[PermitJob],
    zones: ZoneIndex,
    job_id: str | None,
    *,
    whole: bool = False,
) -> tuple[int, int]:
    """(stored, dead-lettered) for ``permits``: all in one transaction, else by halves."""
    try:
        with session.begin():
            return _insert(session, zones, [to_row(p, zones.zone_id) for p in permits]), 0
    except ROW_ERRORS as exc:
        if len(permits) == 1:
            _dead_letter(session, permits[0], exc, job_id)
            return 0, 1
        if whole:
            log.warning("batch_failed_bisecting", size=len(permits))
    middle = len(permits) // 2
    first = _store_halving(session, permits[:middle], zones, job_id)
    second = _store_halving(session, permits[middle:], zones, job_id)
    return first[0] + second[0], first[1] + second[1]


def to_row(permit: PermitJob, zone_id: Callable[[str | None], int | None]) -> dict[str, Any]:
    return {
        "reference_id": permit["reference_id"],
        "client_id": permit["client_id"],
        "permit_type": permit["permit_type"],
        "plate": permit["plate"],
        "plate_normalized": permit["plate_normalized"],
        "zone_name": permit["zone"],
        "zone_normalized": permit["zone_normalized"],
        "zone_id": zone_id(permit["zone_normalized"]),
        "permit_no": permit["permit_no"],
        "amount": Decimal(permit["amount"]) if permit["amount"] is not None else None,
        "currency": permit["currency"],
        "start_raw": permit["start_raw"],
        "end_raw": permit["end_raw"],
        "starts_at": datetime.fromisoformat(permit["starts_at"]),
        "ends_at": datetime.fromisoformat(permit["ends_at"]),
        "received_at": datetime.fromisoformat(permit["received_at"]),
    }


def _insert(session: Session, zones: ZoneIndex, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows``, skipping reference ids already stored; return how many were new."""
    # A zone added a moment ago may be missing from the cached map: see shared/zones.py.
    zones.link_disconnected(session, rows)
    if session.get_bind().dialect.name == "postgresql":
        columns = {name: [row[name] for row in rows] for name in rows[0]}
        return len(session.execute(_unnest_insert(tuple(columns)), columns).all())
    statement = insert_ignoring_duplicates(session, Permit, ["reference_id"]).returning(
        Permit.reference_id
    )
    return len(session.execute(statement, rows).all())


@cache
def _unnest_insert(names: tuple[str, ...]) -> Insert:
    """PostgreSQL: one INSERT of the whole batch as column arrays, the same text every time.

    A multi-row VALUES statement differs with each batch size, is too long for psycopg to
    cache and was re-parsed in Python for every batch (44% of a busy worker); this text
    is fixed and the arrays are bound in psycopg's C code. Skips stored reference ids.
    """
    # The Core table, not the ORM class: ORM inserts would take the arrays for rows.
    table = Permit.metadata.tables[Permit.__tablename__]
    arrays = [cast(bindparam(name), ARRAY(table.c[name].type)) for name in names]
    rows = func.unnest(*arrays).table_valued(*names).render_derived()
    return (
        postgresql.insert(table)
        .from_select([*names, "stored_at"], select(*rows.c, func.now()))
        .on_conflict_do_nothing(index_elements=["reference_id"])
        .returning(table.c.reference_id)
    )


def _dead_letter(session: Session, permit: PermitJob, exc: Exception, job_id: str | None) -> None:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:2000]
    log.error("permit_dead_lettered", ref=permit.get("reference_id"), error=type(exc).__name__)
    reference_id = str(permit.get("reference_id", ""))[:36]
    with session.begin():
        # A re-run of the job (a retry, an abandoned job) finds the letter already there.
        pending = select(DeadLetter.id).where(
            DeadLetter.reference_id == reference_id, DeadLetter.requeued_at.is_(None)
        )
        if session.scalar(pending.limit(1)) is not None:
            return
        session.add(
            DeadLetter(
                reference_id=reference_id,
                job_id=job_id,
                payload=dict(permit),
                reason=reason,
            )
        )
