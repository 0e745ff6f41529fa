"""RQ entry points: bind log context, open a session, call the logic."""

from __future__ import annotations

import structlog
from rq import get_current_job

from shared.lifecycle import OperationJob
from shared.schemas import PermitJob
from worker.context import get_context
from worker.operations import apply_batch, drain
from worker.persist import store_permits

log = structlog.get_logger(__name__)


def persist_permits(permits: list[PermitJob]) -> dict[str, int]:
    """Store a micro-batch of permits; safe to run again (idempotent on reference id)."""
    job = get_current_job()
    job_id = job.id if job is not None else None
    context = get_context()
    with structlog.contextvars.bound_contextvars(job_id=job_id, job="persist_permits"):
        with context.sessions() as session:
            result = store_permits(session, permits, context.zones.zone_id, job_id)
            # Updates and deletes that arrived while these creates were queued.
            drained = drain(session, (p["reference_id"] for p in permits))
        log.info(
            "permits_stored",
            size=len(permits),
            stored=result.stored,
            duplicates=result.duplicates,
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
        with context.sessions() as session:
            result = apply_batch(session, operations)
        log.info("operations_applied", size=len(operations), **result.as_dict())
    return result.as_dict()
