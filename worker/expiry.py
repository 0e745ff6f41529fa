"""Failed batches are dead-lettered before RQ's failed registry expires them.

RQ keeps a failed job for JOB_FAILURE_TTL_S (30 days; its registry score is the moment it
expires), then its maintenance deletes it, and the permits it carries with it. A batch
failed FAILED_DEAD_LETTER_S ago (7 days) is moved first: each permit (or update, delete)
becomes a row of dead_letters with the job's id and last error, committed before the job
leaves the registry. An error log line (``failed_batch_dead_lettered``) is written and
the dead-letter count rises, which the PermitPushDeadLettersRising alert watches.
`permit-push failed requeue` puts the rows back on the queue.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.constants import JOB_FAILURE_TTL_S
from shared.models import DeadLetter

log = structlog.get_logger(__name__)

# What a batch carries, by its keyword argument (persist_permits, apply_operations).
_CARRIED = ("permits", "operations")


def dead_letter_old_failures(
    queue: Queue, sessions: sessionmaker[Session], older_than_s: float
) -> int:
    """Move each batch failed at least ``older_than_s`` ago into dead_letters; count them."""
    registry = FailedJobRegistry(queue=queue)
    # A job failed at F expires at F + JOB_FAILURE_TTL_S, its score.
    latest = time.time() + JOB_FAILURE_TTL_S - older_than_s
    found = queue.connection.zrangebyscore(registry.key, "-inf", latest)
    job_ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in found]
    moved = 0
    for job_id in job_ids:
        job = queue.fetch_job(job_id)
        carried = _carried(job) if job is not None else []
        if job is None or not carried:
            continue  # gone already, or carries no permits (a zone reconcile): RQ expires it
        with sessions.begin() as session:
            # A run cut short after its commit moves nothing twice.
            done = select(DeadLetter.id).where(DeadLetter.job_id == job_id).limit(1)
            if session.scalar(done) is None:
                reason = _reason(job)
                session.add_all(
                    DeadLetter(
                        reference_id=str(item.get("reference_id", "")),
                        job_id=job_id,
                        payload=item,
                        reason=reason,
                    )
                    for item in carried
                )
        registry.remove(job, delete_job=True)
        moved += 1
        log.error(
            "failed_batch_dead_lettered",
            job_id=job_id,
            items=len(carried),
            action="permit-push failed list / requeue",
        )
    return moved


def _carried(job: Job) -> list[dict[str, Any]]:
    kwargs = job.kwargs or {}
    for name in _CARRIED:
        items = kwargs.get(name)
        if isinstance(items, list):
            return [item for item in items if isinstance(item, dict)]
    return []


def _reason(job: Job) -> str:
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    error = lines[-1].strip() if lines else "no error recorded"
    failed = f" at {job.ended_at:%Y-%m-%d %H:%M}" if job.ended_at else ""
    return (f"failed batch{failed}, moved from RQ's failed registry before it expired: {error}")[
        :2000
    ]
