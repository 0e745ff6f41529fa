"""RQ entry points: bind log context, open a session, call the logic."""

from __future__ import annotations

import time

import structlog
from rq import get_current_job
from sqlalchemy.exc import DBAPIError, OperationalError

from shared.schemas import PermitJob
from worker.context import WorkerContext, get_context
from worker.persist import StoreResult, store_permits

log = structlog.get_logger(__name__)

# Waits between attempts while the database is away: short first (a restart or fail-over
# takes seconds), then capped so a returning database is noticed within seconds.
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 2.0


def persist_permits(permits: list[PermitJob]) -> dict[str, int]:
    """Store a micro-batch of permits; safe to run again (idempotent on reference id)."""
    job = get_current_job()
    job_id = job.id if job is not None else None
    context = get_context()
    with structlog.contextvars.bound_contextvars(job_id=job_id, job="persist_permits"):
        result = _store_retrying(context, permits, job_id)
        log.info(
            "permits_stored",
            size=len(permits),
            stored=result.stored,
            duplicates=result.duplicates,
            dead_lettered=result.dead_lettered,
        )
    return {
        "stored": result.stored,
        "duplicates": result.duplicates,
        "dead_lettered": result.dead_lettered,
    }


def is_transient(exc: BaseException) -> bool:
    """A database fault that may pass (unreachable, restarting, connection cut, locked)."""
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def _store_retrying(
    context: WorkerContext, permits: list[PermitJob], job_id: str | None
) -> StoreResult:
    """Store, retrying transient database faults for up to DB_RETRY_S.

    Waiting here rather than failing at once keeps a short outage (a restart, a
    fail-over) from costing the batch one of RQ's retries and its backoff. Past
    DB_RETRY_S the error escapes and JOB_RETRY's backoff takes over. Re-running the
    store is safe: rows already in are skipped on their reference id.
    """
    deadline = time.monotonic() + context.settings.db_retry_s
    delay_s = FIRST_DELAY_S
    attempt = 1
    while True:
        try:
            with context.sessions() as session:
                return store_permits(session, permits, context.zones.zone_id, job_id)
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
