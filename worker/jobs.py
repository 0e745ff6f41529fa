"""RQ entry points: bind log context, open a session, call the logic."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import structlog
from redis import Redis
from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException
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
    if job is None:  # called directly, not by a worker
        return store_batches([(None, permits)], None)[0]
    return store_batches([(job.id, permits)], job.connection)[0]


def persist_permit_jobs(jobs: Sequence[Job]) -> list[dict[str, int] | Exception]:
    """Run a set of persist_permits jobs as one: their permits in one transaction.

    What each job would have returned, in order, or the exception it fails with. A fault
    of the database that lasts (past DB_RETRY_S) fails every job, each with its own retry.
    Any other failure of the set may be one job's doing (its arguments, say): then each
    job runs alone, so only the one at fault fails.
    """
    redis = jobs[0].connection
    try:
        return list(store_batches([(job.id, _permits_of(job)) for job in jobs], redis))
    except JobTimeoutException:
        raise  # the set's time is up: the worker fails each job of it
    except Exception as exc:
        if is_transient(exc) or len(jobs) == 1:
            return [exc] * len(jobs)
        log.warning("job_set_failed_running_each_alone", jobs=len(jobs), error=type(exc).__name__)
    outcomes: list[dict[str, int] | Exception] = []
    for job in jobs:
        try:
            outcomes.extend(store_batches([(job.id, _permits_of(job))], redis))
        except JobTimeoutException:
            raise
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


_PERSIST_PERMITS_CALL = inspect.signature(persist_permits)  # read once, not per job


def _permits_of(job: Job) -> list[PermitJob]:
    """The permits a persist_permits job carries, as RQ would pass them to the function."""
    arguments = _PERSIST_PERMITS_CALL.bind(*job.args, **job.kwargs).arguments
    permits: list[PermitJob] = arguments["permits"]
    return permits


def store_batches(
    batches: Sequence[tuple[str | None, list[PermitJob]]], redis: Redis | None
) -> list[dict[str, int]]:
    """Store the permits of ``batches`` (each a job id and its permits) in one transaction,
    and return each batch's figures. With ``redis``, count what was stored for /metrics."""
    context = get_context()
    permits = [permit for _, batch in batches for permit in batch]
    job_ids = [job_id for job_id, batch in batches for _ in batch]
    reference_ids = [p["reference_id"] for p in permits]

    def store(session: Session) -> tuple[StoreResult, DrainResult]:
        stored = store_permits(session, permits, context.zones, job_ids)
        references = reference_ids
        if stored.aliased:  # their parked operations moved to the permit they name
            with session.begin():
                references = [*reference_ids, *resolve_aliases(session, reference_ids).values()]
        # Updates and deletes that arrived while these creates were queued.
        return stored, drain_created(session, references)

    ids = [job_id for job_id, _ in batches]
    which = {"job_id": ids[0]} if len(ids) == 1 else {"job_ids": ids}
    with structlog.contextvars.bound_contextvars(**which, job="persist_permits"):
        result, drained = _retrying(context, store)
        if redis is not None:
            # Committed: count it for /metrics, and drop the owner keys that covered these
            # permits while queued (the database knows their owners now).
            record_stored(redis, result.stored, reference_ids)
        log.info(
            "permits_stored",
            jobs=len(batches),
            size=len(permits),
            **result.figures(),
            aliased=result.aliased,
            operations_applied=drained.applied,
        )
    figures = []
    start = 0
    for _, batch in batches:
        figures.append(result.figures(start, start + len(batch)))
        start += len(batch)
    return figures


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
