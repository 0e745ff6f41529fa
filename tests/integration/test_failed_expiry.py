"""Failed batches never expire from RQ's failed registry with their permits (issue 13).

RQ keeps a failed job JOB_FAILURE_TTL_S (30 days), then its maintenance drops it, and its
permits with it. A worker's maintenance moves a batch failed FAILED_DEAD_LETTER_S ago
(7 days) into dead_letters first, with an error log for the alert.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis import Redis
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.constants import JOB_FAILURE_TTL_S
from shared.models import DeadLetter
from tests.factories import make_permit_job, permits_queue
from worker.context import init_context
from worker.recovery import HeartbeatWorker


@pytest.fixture
def worker_context(pg_settings: Settings) -> Iterator[Settings]:
    settings = pg_settings
    context = init_context(settings)
    yield settings
    context.engine.dispose()


def failed_for(redis: Redis, registry: FailedJobRegistry, job_id: str, seconds: float) -> None:
    """Make ``job_id`` look failed ``seconds`` ago (its registry score is its expiry)."""
    redis.zadd(registry.key, {job_id: time.time() + JOB_FAILURE_TTL_S - seconds})


def maintenance(redis: Redis) -> None:
    worker = HeartbeatWorker(
        [permits_queue(redis)], connection=redis, serializer=JSONSerializer, abandoned_job_s=30
    )
    worker.clean_registries()


def test_a_failed_batch_is_dead_lettered_before_rq_expires_it(
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    worker_context: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queue = permits_queue(real_redis)
    old = [make_permit_job(1, permit_no=f"old-{i}") for i in range(3)]
    recent = [make_permit_job(1, permit_no="recent")]
    jobs = [
        queue.enqueue_call("worker.jobs.no_such_job", kwargs={"permits": permits})
        for permits in (old, recent)
    ]
    registry = FailedJobRegistry(queue=queue)
    # Run the queue dry until both batches have failed (seen once in a full CI run: the
    # burst worker quit after the first, the second landing in the registry a moment later).
    deadline = time.monotonic() + 10
    while set(registry.get_job_ids()) != {job.id for job in jobs}:
        assert time.monotonic() < deadline, (registry.get_job_ids(), queue.get_job_ids())
        HeartbeatWorker(
            [queue], connection=real_redis, serializer=JSONSerializer, abandoned_job_s=30
        ).work(burst=True)
        time.sleep(0.05)
    failed_for(real_redis, registry, jobs[0].id, 8 * 24 * 3600)  # past the 7 days
    failed_for(real_redis, registry, jobs[1].id, 24 * 3600)

    maintenance(real_redis)
    maintenance(real_redis)  # a second run moves nothing twice
    with pg_sessions() as session:
        letters = session.scalars(select(DeadLetter).order_by(DeadLetter.id)).all()
    assert [(d.reference_id, d.job_id) for d in letters] == [
        (p["reference_id"], jobs[0].id) for p in old
    ]
    assert "failed batch" in letters[0].reason
    assert registry.get_job_ids() == [jobs[1].id]  # the recent one stays for `failed list`
    assert "failed_batch_dead_lettered" in capsys.readouterr().out

    # When RQ's own expiry comes, the permits are already safe.
    failed_for(real_redis, registry, jobs[0].id, JOB_FAILURE_TTL_S + 60)
    maintenance(real_redis)
    with pg_sessions() as session:
        assert len(session.scalars(select(DeadLetter)).all()) == 3
