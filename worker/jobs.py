"""RQ entry points: bind log context, open a session, call the logic."""

from __future__ import annotations

import structlog
from rq import get_current_job

from shared.schemas import PermitJob
from worker.context import get_context
from worker.persist import store_permits
from worker.stats import record_stored

log = structlog.get_logger(__name__)


def persist_permits(permits: list[PermitJob]) -> dict[str, int]:
    """Store a micro-batch of permits; safe to run again (idempotent on reference id)."""
    job = get_current_job()
    job_id = job.id if job is not None else None
    context = get_context()
    with structlog.contextvars.bound_contextvars(job_id=job_id, job="persist_permits"):
        with context.sessions() as session:
            result = store_permits(session, permits, context.zones.zone_id, job_id)
        if job is not None:
            record_stored(job.connection, result.stored)  # committed: count it for /metrics
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
