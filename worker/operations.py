"""Updates and deletes, applied in the order received whatever order they arrive in.

The receiver numbers every operation from one Redis counter (``seq``): that is the order
received. Jobs may still reach the database out of that order (several workers, RQ
retries), and an operation may arrive before its permit's create is stored. So:

1. An operation is first recorded in ``permit_operations`` as *parked* and committed
   (idempotent on ``(reference_id, seq)``: a re-run job records nothing new).
2. Then its permit is *drained*: under the permit's row lock (``SELECT ... FOR UPDATE``;
   on SQLite the database write lock, ``BEGIN IMMEDIATE``), the permit row is rebuilt as
   the fold, in ``seq`` order, of its state as created (snapshot at seq 0, taken when the
   first operation is applied) and every operation recorded for it. A late operation is
   folded in at its place: an update received before a delete that was applied first is
   still applied, and one received after it is rejected, whichever job ran first.
3. Storing a create drains it too (``drain_created`` after ``store_permits``): operations
   parked while the create was queued are applied then.

Each side commits its fact (the operation, or the permit) before it drains, and each drain
re-reads under the lock, so whichever of the two commits last sees the other: nothing
stays parked, and two drains of one permit simply agree (the fold is deterministic).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import structlog
from redis import Redis
from sqlalchemy import Connection, func, select, tuple_
from sqlalchemy.orm import Session

from shared import opseq
from shared.constants import OPERATION_CLASH_REASON
from shared.db import insert_ignoring_duplicates
from shared.models import DeadLetter, Permit, PermitAlias, PermitOperation, utcnow
from shared.operations import OperationJob

log = structlog.get_logger(__name__)

# The attributes an operation can change, as keys of OperationChanges.
_FIELDS = ("plate", "plate_normalized", "amount", "currency", "end_raw", "ends_at")


@dataclass(frozen=True, slots=True)
class DrainResult:
    applied: int = 0  # operations applied now (first time)
    rejected: int = 0  # an update of a deleted permit, or an end time before the start
    not_found: int = 0  # no such permit for that client
    parked: int = 0  # still waiting for their permit's create

    def as_dict(self) -> dict[str, int]:
        return {
            "applied": self.applied,
            "rejected": self.rejected,
            "not_found": self.not_found,
            "parked": self.parked,
        }


def apply_batch(session: Session, operations: Sequence[OperationJob]) -> DrainResult:
    """Record ``operations`` (idempotently), then fold them into their permits.

    An operation naming an alias (a second reference id of a stored permit) is recorded
    on the permit's own reference id.
    """
    with session.begin():
        aliases = resolve_aliases(session, [op["reference_id"] for op in operations])
    if aliases:
        operations = [
            {**op, "reference_id": aliases.get(op["reference_id"], op["reference_id"])}
            for op in operations
        ]
    record_operations(session, operations)
    return drain(session, {op["reference_id"] for op in operations})


def resolve_aliases(session: Session, reference_ids: Sequence[str]) -> dict[str, str]:
    """{alias: the permit's reference id} for those of ``reference_ids`` that are aliases."""
    if not reference_ids:
        return {}
    rows = session.execute(
        select(PermitAlias.reference_id, PermitAlias.permit_reference_id).where(
            PermitAlias.reference_id.in_(sorted(set(reference_ids)))
        )
    )
    return {alias: permit for alias, permit in rows}


def record_operations(session: Session, operations: Sequence[OperationJob]) -> None:
    """Commit each operation as parked; one already recorded (a re-run job) is skipped.

    Another operation already recorded under the same (reference id, seq), a clash, is
    never skipped silently: it is dead-lettered, with an error logged (``failed list``
    shows it, ``failed requeue`` applies it with a new number).
    """
    rows = [
        {
            "reference_id": op["reference_id"],
            "client_id": op["client_id"],
            "seq": op["seq"],
            "kind": op["kind"],
            "changes": dict(op["changes"]),
            "create_expected": op["create_expected"],
            "state": "parked",
            "received_at": datetime.fromisoformat(op["received_at"]),
        }
        for op in operations
    ]
    with session.begin():
        # Unique on (reference id, seq): a re-run job records nothing twice.
        statement = insert_ignoring_duplicates(session, PermitOperation, ["reference_id", "seq"])
        session.execute(statement, rows)
        _dead_letter_clashes(session, operations)


def _dead_letter_clashes(session: Session, operations: Sequence[OperationJob]) -> None:
    """Dead-letter each operation whose (reference id, seq) holds another operation."""
    keys = [(op["reference_id"], op["seq"]) for op in operations]
    recorded = {
        (row.reference_id, row.seq): row
        for row in session.scalars(
            select(PermitOperation).where(
                tuple_(PermitOperation.reference_id, PermitOperation.seq).in_(keys)
            )
        )
    }
    for op in operations:
        row = recorded.get((op["reference_id"], op["seq"]))
        if row is None or _same_operation(row, op):
            continue
        log.error(
            "operation_seq_clash",
            reference_id=op["reference_id"],
            seq=op["seq"],
            action="dead-lettered; permit-push failed requeue applies it with a new number",
        )
        session.add(
            DeadLetter(
                reference_id=op["reference_id"],
                payload=dict(op),
                reason=(
                    f"{OPERATION_CLASH_REASON}: seq {op['seq']} of this permit is another "
                    f"operation's; this {op['kind']} was not applied"
                ),
            )
        )


def _same_operation(row: PermitOperation, op: OperationJob) -> bool:
    """Whether ``row`` is ``op`` recorded before (a re-run job), not another operation."""
    return (
        row.client_id == op["client_id"]
        and row.kind == op["kind"]
        and dict(row.changes) == dict(op["changes"])
        and _aware(row.received_at) == datetime.fromisoformat(op["received_at"])
    )


def raise_operation_counter(session: Session, redis: Redis) -> int | None:
    """Raise Redis's order counter above the largest number the database holds.

    The receivers' floor is their clock (shared/opseq.py); this covers a clock that ran
    ahead, after Redis lost its counter. Returns the database's largest number.
    """
    top = session.scalar(select(func.max(PermitOperation.seq)))
    if top is not None:
        opseq.raise_to(redis, int(top))
    return top


def drain(session: Session, reference_ids: Iterable[str]) -> DrainResult:
    """Fold the parked operations of ``reference_ids`` into their permits, in seq order."""
    wanted = sorted(set(reference_ids))
    if not wanted:
        return DrainResult()
    with session.begin():
        _lock_database_if_sqlite(session)
        parked = set(
            session.scalars(
                select(PermitOperation.reference_id)
                .where(PermitOperation.reference_id.in_(wanted), PermitOperation.state == "parked")
                .distinct()
            )
        )
        if not parked:
            return DrainResult()
        # Locked in one order (by reference id) so two drains cannot deadlock.
        permits = {
            p.reference_id: p
            for p in session.scalars(
                select(Permit)
                .where(Permit.reference_id.in_(sorted(parked)))
                .order_by(Permit.reference_id)
                .with_for_update()
            )
        }
        operations: dict[str, list[PermitOperation]] = {}
        for op in session.scalars(
            select(PermitOperation)
            .where(PermitOperation.reference_id.in_(sorted(parked)))
            .order_by(PermitOperation.reference_id, PermitOperation.seq)
        ):
            operations.setdefault(op.reference_id, []).append(op)
        counts = {"applied": 0, "rejected": 0, "not_found": 0, "parked": 0}
        for reference_id, ops in operations.items():
            permit = permits.get(reference_id)
            if permit is None:
                _without_permit(ops, counts)
            else:
                _fold(session, permit, ops, counts)
    return DrainResult(**counts)


def drain_created(session: Session, reference_ids: Iterable[str]) -> DrainResult:
    """`drain` for permits just stored: almost always nothing is parked for them, and on
    PostgreSQL that is found in one round trip outside a transaction (a transaction would
    add BEGIN and COMMIT). The read comes after the store's commit, as any drain's must
    (the module's docstring); when it finds something, the drain proper re-reads it under
    the permits' row locks."""
    wanted = sorted(set(reference_ids))
    bind = session.get_bind()
    if (
        wanted
        and isinstance(bind, Connection)  # the worker's connection for the job (worker/jobs.py)
        and bind.dialect.name == "postgresql"
        and not bind.in_transaction()
        and not _any_parked_autocommit(bind, wanted)
    ):
        return DrainResult()
    return drain(session, wanted)


# Whether any of these reference ids (a JSON array: one parameter, whatever the batch's
# size, so the text stays fixed) has a parked operation. PostgreSQL only.
_ANY_PARKED_PG = (
    "SELECT 1 FROM permit_operations"
    " WHERE reference_id IN (SELECT jsonb_array_elements_text(CAST(%(ids)s AS jsonb)))"
    " AND state = 'parked' LIMIT 1"
)


def _any_parked_autocommit(connection: Connection, wanted: list[str]) -> bool:
    """One statement on ``connection`` in autocommit mode, then the isolation level it had."""
    level = connection.get_execution_options().get(
        "isolation_level", connection.default_isolation_level
    )
    connection.execution_options(isolation_level="AUTOCOMMIT")
    try:
        found = connection.exec_driver_sql(_ANY_PARKED_PG, {"ids": orjson.dumps(wanted).decode()})
        return found.first() is not None
    finally:
        # Ends SQLAlchemy's record of the statement's transaction (the driver, in
        # autocommit, sends nothing), so the level may change back. A connection lost
        # meanwhile is discarded by the caller and needs neither.
        if not connection.invalidated:
            connection.rollback()
            connection.execution_options(isolation_level=level)


def _without_permit(ops: list[PermitOperation], counts: dict[str, int]) -> None:
    for op in ops:
        if op.state != "parked":
            continue
        if op.create_expected:
            counts["parked"] += 1  # its create is still queued (or dead-lettered)
        else:
            op.state, op.reason, op.applied_at = "not_found", "no such permit", utcnow()
            counts["not_found"] += 1


def _fold(
    session: Session, permit: Permit, ops: list[PermitOperation], counts: dict[str, int]
) -> None:
    """Rebuild ``permit`` as its create followed by ``ops`` in seq order."""
    base = next((op for op in ops if op.kind == "create"), None)
    if base is None:
        # No operation was ever applied: the row is still as created. Keep that state.
        base = PermitOperation(
            reference_id=permit.reference_id,
            client_id=permit.client_id,
            seq=0,
            kind="create",
            changes=_snapshot(permit),
            create_expected=True,
            state="applied",
            received_at=permit.received_at,
            applied_at=utcnow(),
        )
        session.add(base)
    state: dict[str, Any] = dict(base.changes)
    deleted_at: datetime | None = None
    last_seq = 0
    for op in ops:
        if op.kind == "create" or op.state == "not_found":
            continue
        last_seq = max(last_seq, op.seq)
        if op.client_id != permit.client_id:
            outcome, reason = "not_found", "not this client's permit"
        elif deleted_at is not None:
            outcome, reason = (
                ("applied", "already deleted")
                if op.kind == "delete"
                else (
                    "rejected",
                    "the permit was deleted before this update",
                )
            )
        elif op.kind == "delete":
            deleted_at, (outcome, reason) = op.received_at, ("applied", None)
        elif _instant(str(op.changes.get("ends_at", state["ends_at"]))) <= _aware(permit.starts_at):
            outcome, reason = "rejected", "the end time is not after the start time"
        else:
            state.update({k: v for k, v in op.changes.items() if k in _FIELDS})
            outcome, reason = "applied", None
        if (op.state, op.reason) != (outcome, reason):
            if op.state == "parked":
                counts[outcome] += 1
            op.state, op.reason, op.applied_at = outcome, reason, utcnow()
    _write(permit, state, deleted_at, last_seq)


def _write(
    permit: Permit, state: dict[str, Any], deleted_at: datetime | None, last_seq: int
) -> None:
    permit.plate, permit.plate_normalized = state["plate"], state["plate_normalized"]
    permit.amount = Decimal(state["amount"]) if state["amount"] is not None else None
    permit.currency = state["currency"]
    permit.end_raw, permit.ends_at = state["end_raw"], _instant(state["ends_at"])
    permit.deleted_at = deleted_at
    permit.last_seq = last_seq
    permit.updated_at = utcnow()


def _snapshot(permit: Permit) -> dict[str, Any]:
    return {
        "plate": permit.plate,
        "plate_normalized": permit.plate_normalized,
        "amount": str(permit.amount) if permit.amount is not None else None,
        "currency": permit.currency,
        "end_raw": permit.end_raw,
        "ends_at": _aware(permit.ends_at).isoformat(),
    }


def _instant(value: str) -> datetime:
    return _aware(datetime.fromisoformat(value))


def _aware(value: datetime) -> datetime:
    """SQLite gives back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _lock_database_if_sqlite(session: Session) -> None:
    # SQLite has no row locks, and pysqlite starts a transaction only at the first write,
    # so reads before it could be stale: take the write lock first. PostgreSQL locks the
    # permit rows instead (FOR UPDATE below).
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
