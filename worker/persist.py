"""Storing a batch of permits: one transaction, idempotent on the reference id and on the
permit's fingerprint (a permit is stored once, ever, whatever reference id it carries)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

import orjson
import structlog
from sqlalchemy import Dialect, Insert, bindparam, cast, column, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from shared.db import insert_ignoring_duplicates
from shared.fingerprint import permit_fingerprint
from shared.models import DeadLetter, Permit, PermitAlias, PermitOperation
from shared.schemas import PermitJob
from worker.zones import ZoneIndex

log = structlog.get_logger(__name__)

# Errors that belong to a row (the database refused it, or a value does not convert):
# retrying the same row cannot help. Anything else is a fault of the code or of the
# database and fails the job, which RQ keeps and retries.
ROW_ERRORS = (IntegrityError, DataError, InvalidOperation, ValueError, KeyError)


STORED = "stored"
DUPLICATE = "duplicate"  # already stored (a resend, or a re-run of the job)
DEAD_LETTERED = "dead_lettered"
# A batch's figures (its job's result) by name, and the outcome each counts.
_FIGURES = {"stored": STORED, "duplicates": DUPLICATE, "dead_lettered": DEAD_LETTERED}


@dataclass(frozen=True, slots=True)
class StoreResult:
    outcomes: tuple[str, ...]  # each permit's, in the order given: STORED, DUPLICATE, ...
    aliased: int = 0  # a second reference id recorded for a permit already stored

    @property
    def stored(self) -> int:  # new rows
        return self.outcomes.count(STORED)

    @property
    def duplicates(self) -> int:
        return self.outcomes.count(DUPLICATE)

    @property
    def dead_lettered(self) -> int:
        return self.outcomes.count(DEAD_LETTERED)

    def figures(self, start: int = 0, end: int | None = None) -> dict[str, int]:
        """Stored, duplicates and dead-lettered among permits ``start`` to ``end``."""
        outcomes = self.outcomes[start:end]
        return {name: outcomes.count(outcome) for name, outcome in _FIGURES.items()}


def store_permits(
    session: Session,
    permits: Sequence[PermitJob],
    zones: ZoneIndex,
    job_ids: Sequence[str | None] | None = None,
) -> StoreResult:
    """Store ``permits`` in one transaction; rows that cannot be stored go to dead letters,
    each with the id of the job that carried it (``job_ids``, one per permit).

    A batch that fails as a whole is split in halves, each stored in a transaction of its
    own, and so on down to the bad rows: one bad row in 200 costs about 2 log2(200) + 2
    transactions (not one per row), and the good rows are stored all the same. Database
    outages (OperationalError) are not caught: RQ retries the job.
    """
    batch = _Batch(session, list(permits), zones, job_ids or [None] * len(permits))
    batch.store(0, len(permits), whole=True)
    return StoreResult(tuple(batch.outcomes), batch.aliased)


class _Batch:
    """The permits of one store and what became of each."""

    def __init__(
        self,
        session: Session,
        permits: list[PermitJob],
        zones: ZoneIndex,
        job_ids: Sequence[str | None],
    ) -> None:
        self.session = session
        self.permits = permits
        self.zones = zones
        self.job_ids = job_ids
        self.outcomes = [DUPLICATE] * len(permits)
        self.aliased = 0

    def store(self, start: int, end: int, *, whole: bool = False) -> None:
        """Permits ``start`` to ``end`` in one transaction, else by halves."""
        permits = self.permits[start:end]
        try:
            with self.session.begin():
                rows = [to_row(p, self.zones.zone_id) for p in permits]
                inserted = _insert(self.session, self.zones, rows)
                aliased = (
                    _alias_duplicates(self.session, rows, inserted)
                    if len(inserted) < len(rows)
                    else 0
                )
        except ROW_ERRORS as exc:
            if len(permits) == 1:
                _dead_letter(self.session, permits[0], exc, self.job_ids[start])
                self.outcomes[start] = DEAD_LETTERED
                return
            if whole:
                log.warning("batch_failed_bisecting", size=len(permits))
            middle = (start + end) // 2
            self.store(start, middle)
            self.store(middle, end)
            return
        self.aliased += aliased
        # A reference id twice in the batch is inserted once: the first is the one stored.
        for index in range(start, end):
            if self.permits[index]["reference_id"] in inserted:
                inserted.discard(self.permits[index]["reference_id"])
                self.outcomes[index] = STORED


def to_row(permit: PermitJob, zone_id: Callable[[str | None], int | None]) -> dict[str, Any]:
    return {
        "reference_id": permit["reference_id"],
        "client_id": permit["client_id"],
        "fingerprint": job_fingerprint(permit),
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


def job_fingerprint(permit: PermitJob) -> str:
    """The fingerprint the receiver computed for this permit (shared/fingerprint.py)."""
    return permit_fingerprint(
        permit["client_id"],
        permit["plate_normalized"],
        permit["start_raw"],
        permit["end_raw"],
        permit["amount"],
        permit["currency"],
        permit["permit_no"],
        permit["zone_normalized"],
    )


def _insert(session: Session, zones: ZoneIndex, rows: list[dict[str, Any]]) -> set[str]:
    """Insert ``rows``, skipping reference ids and fingerprints already stored; return the
    reference ids inserted."""
    # A zone added a moment ago may be missing from the cached map: see shared/zones.py.
    zones.link_disconnected(session, rows)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        try:
            # Decimal is the one type orjson leaves to `default`; datetimes keep their offset.
            document = orjson.dumps(rows, default=str).decode()
        except orjson.JSONEncodeError as exc:  # a lone surrogate: a row's fault, bisected
            raise ValueError(f"a value is not UTF-8 text: {exc}") from None
        connection = session.connection()
        insert, defaults = _recordset_insert(connection.dialect, tuple(rows[0]))
        found = connection.exec_driver_sql(insert, {**defaults, "rows": document})
        return set(found.scalars())
    if dialect == "sqlite":
        # No conflict target: a row repeating either unique key (reference id, or client
        # and fingerprint) is skipped.
        statement: Insert = sqlite.insert(Permit).on_conflict_do_nothing()
    else:
        statement = insert_ignoring_duplicates(session, Permit, ["reference_id"])
    return set(session.scalars(statement.returning(Permit.reference_id), rows))


def _alias_duplicates(session: Session, rows: list[dict[str, Any]], inserted: set[str]) -> int:
    """For rows not inserted: a permit stored under another reference id gets this one as
    an alias, and operations parked on the alias move to the permit. Returns aliases made.

    A row skipped because its own reference id is stored (a re-run) needs nothing.
    """
    skipped = [row for row in rows if row["reference_id"] not in inserted]
    keys = {(row["client_id"], row["fingerprint"]) for row in skipped}
    stored = dict(
        ((client_id, fingerprint), reference_id)
        for client_id, fingerprint, reference_id in session.execute(
            select(Permit.client_id, Permit.fingerprint, Permit.reference_id).where(
                tuple_(Permit.client_id, Permit.fingerprint).in_(sorted(keys))
            )
        )
    )
    aliases = []
    for row in skipped:
        first = stored.get((row["client_id"], row["fingerprint"]))
        if first is not None and first != row["reference_id"]:
            aliases.append(
                {
                    "reference_id": row["reference_id"],
                    "permit_reference_id": first,
                    "client_id": row["client_id"],
                }
            )
    if not aliases:
        return 0
    statement = insert_ignoring_duplicates(session, PermitAlias, ["reference_id"])
    session.execute(statement, aliases)
    for alias in aliases:
        session.execute(
            update(PermitOperation)
            .where(
                PermitOperation.reference_id == alias["reference_id"],
                PermitOperation.state == "parked",
            )
            .values(reference_id=alias["permit_reference_id"])
        )
    log.info("permits_aliased", count=len(aliases))
    return len(aliases)


@cache
def _recordset_insert(dialect: Dialect, names: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """PostgreSQL: one INSERT of the whole batch from one JSON document, the same text every
    time, compiled once to the driver's SQL (no cache-key walk of the statement per batch),
    with the values of the columns' Python-side defaults it takes as parameters.

    The batch goes as a single parameter, made by orjson in C, and PostgreSQL turns it
    into typed rows (`jsonb_to_recordset`). A multi-row VALUES statement differs with
    each batch size and was re-parsed in Python for every batch (44% of a busy worker);
    column arrays (`unnest`) kept the text fixed, but psycopg dumps arrays in Python, a
    tenth of a busy worker. Skips stored reference ids and stored fingerprints alike.
    """
    # The Core table, not the ORM class: an ORM insert would take the rows as objects.
    table = Permit.metadata.tables[Permit.__tablename__]
    rows = (
        func.jsonb_to_recordset(cast(bindparam("rows"), JSONB))
        .table_valued(*(column(name, table.c[name].type) for name in names))
        .render_derived(with_types=True)
    )
    insert = (
        postgresql.insert(table)
        .from_select([*names, "stored_at"], select(*rows.c, func.now()))
        # No conflict target: a repeated reference id or a repeated (client, fingerprint)
        # is skipped alike; _alias_duplicates tells them apart.
        .on_conflict_do_nothing()
        .returning(table.c.reference_id)
    )
    compiled = insert.compile(dialect=dialect)
    # The columns it fills from their defaults (last_seq) are parameters too; SQLAlchemy
    # would supply their values at execution. Only a plain value can be fixed here: a
    # callable default must stay out of this insert (stored_at is now()), not run once.
    defaults = {}
    for name in compiled.params.keys() - {"rows"}:
        default = table.c[name].default
        if default is None or not default.is_scalar:
            raise TypeError(f"permits.{name}: the batch insert takes scalar defaults only")
        defaults[name] = default.arg
    return str(compiled), defaults


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
