"""RQ entry points: bind log context, open a session, call the logic."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import structlog
from rq import get_current_job
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from shared.operations import OperationJob
from shared.schemas import PermitJob
from worker.context import WorkerContext, get_context
from worker.operations import DrainResult, apply_batch, drain_created, resolve_aliases
from worker.persist import StoreResult, store_permits
from worker.reconcile import reconcile
from worker.stats import record_stored

log = structlog.get_logger(__name__)

# Waits between attempts while the database is away: short first (a restart or fail-over
# takes seconds), then capped so a returning database is noticed within seconds.
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 2.0

Result = TypeVar("Result")


def persist_permits(permits: list[PermitJob]) -> dict[str, int]:
    """Store a micro-batch of permits; safe to run again (idempotent on reference id)."""
    job = get_current_job()
    job_id = job.id if job is not None else None
    context = get_context()
    reference_ids = [p["reference_id"] for p in permits]

    def store(session: Session) -> tuple[StoreResult, DrainResult]:
        stored = store_permits(session, permits, context.zones, job_id)
        references = reference_ids
        if stored.aliased:  # their parked operations moved to the permit they name
            with session.begin():
                references = [*reference_ids, *resolve_aliases(session, reference_ids).values()]
        # Updates and deletes that arrived while these creates were queued.
        return stored, drain_created(session, references)

    with structlog.contextvars.bound_contextvars(job_id=job_id, job="persist_permits"):
        result, drained = _retrying(context, store)
        if job is not None:
            # Committed: count it for /metrics, and drop the owner keys that covered these
            # permits while queued (the database knows their owners now).
            record_stored(job.connection, result.stored, reference_ids)
        log.info(
            "permits_stored",
            size=len(permits),
            stored=result.stored,
            duplicates=result.duplicates,
            aliased=result.aliased,
            dead_lettered=result.dead_lettered,
            operations_applied=drained.applied,
        )
    return {
        "stored": result.stored,
        "duplicates": result.duplicates,
        "dead_lettered": result.dead_lettered,
    }


def apply_operations(operations: list[OperationJob]) -> dict[str, int]:
    """Apply a micro-batch of updates and deletes in the order received (see worker.operations)."""
    job = get_current_job()
    context = get_context()
    with structlog.contextvars.bound_contextvars(
        job_id=job.id if job is not None else None, job="apply_operations"
    ):
        result = _retrying(context, lambda session: apply_batch(session, operations))
        log.info("operations_applied", size=len(operations), **result.as_dict())
    return result.as_dict()


def is_transient(exc: BaseException) -> bool:
    """A database fault that may pass (unreachable, restarting, connection cut, locked)."""
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def _retrying(context: WorkerContext, work: Callable[[Session], Result]) -> Result:
    """Run ``work`` in a session, retrying transient database faults for up to DB_RETRY_S.

    Waiting here rather than failing at once keeps a short outage (a restart, a
    fail-over) from costing the batch one of RQ's retries and its backoff. Past
    DB_RETRY_S the error escapes and JOB_RETRY's backoff takes over. Running the work
    again is safe: stores skip reference ids already in, operations are idempotent.
    """
    deadline = time.monotonic() + context.settings.db_retry_s
    delay_s = FIRST_DELAY_S
    attempt = 1
    while True:
        try:
            # One connection for all of the work's transactions: one pool check-out (and
            # pre-ping round trip) per job rather than one per transaction.
            with (
                context.engine.connect() as connection,
                context.sessions(bind=connection) as session,
            ):
                return work(session)
        except DBAPIError as exc:
            if not is_transient(exc) or time.monotonic() + delay_s > deadline:
                raise
            log.warning(
                "database_unavailable_retrying",
                attempt=attempt,
                retry_in_s=delay_s,
                error=type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__,
            )
        time.sleep(delay_s)
        delay_s = min(delay_s * 2, MAX_DELAY_S)
        attempt += 1


def reconcile_zones(names: list[str] | None = None) -> dict[str, int]:
    """Link the disconnected permits named ``names`` (None: all) that now match a zone.

    Enqueued after a zone or alias is added; idempotent, so RQ may run it again.
    """
    job = get_current_job()
    with structlog.contextvars.bound_contextvars(
        job_id=job.id if job is not None else None, job="reconcile_zones"
    ):
        result = reconcile(get_context().sessions, names)
        log.info("zones_reconciled", names=result.names, linked=result.linked)
    return {"names": result.names, "linked": result.linked, "batches": result.batches}
