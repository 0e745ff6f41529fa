"""A worker runs the permit batches waiting in the queue as one set (WORKER_JOBS_PER_TXN),
on real Redis and PostgreSQL: each batch keeps its own result, failure and dead letters."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from redis import Redis
from rq.job import Job, JobStatus
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.constants import PERSIST_PERMITS_JOB
from shared.models import DeadLetter, Permit
from tests.factories import make_permit_job, permits_queue
from worker.context import init_context
from worker.jobs import persist_permit_jobs
from worker.lean_worker import LeanWorker


@pytest.fixture
def worker_context(pg_settings: Settings, pg_token: str) -> Iterator[None]:
    context = init_context(pg_settings)
    yield
    context.engine.dispose()


def work(redis: Redis, jobs_per_txn: int = 16) -> list[int]:
    """Run a burst worker on the queue; the sizes of the sets its runner was given."""
    sets: list[int] = []

    def runner(jobs: Sequence[Job]) -> list[object]:
        sets.append(len(jobs))
        return list(persist_permit_jobs(jobs))

    queue = permits_queue(redis)
    LeanWorker(
        [queue],
        connection=redis,
        serializer=queue.serializer,
        jobs_per_txn=jobs_per_txn,
        set_runners={PERSIST_PERMITS_JOB: runner},
    ).work(burst=True)
    return sets


def enqueue(redis: Redis, permits: object) -> Job:
    return permits_queue(redis).enqueue_call(PERSIST_PERMITS_JOB, kwargs={"permits": permits})


def outcome(job: Job) -> object:
    job.refresh()
    return job.return_value() if job.get_status() == JobStatus.FINISHED else job.get_status()


def test_a_set_stores_each_batch_once_and_answers_for_each(
    pg_sessions: sessionmaker[Session], real_redis: Redis, worker_context: None
) -> None:
    first = [make_permit_job(1) for _ in range(3)]
    bad = make_permit_job(1, amount="not a number")
    again = {**first[0]}  # a resend the receiver could not know: the same reference id
    jobs = [
        enqueue(real_redis, first),
        enqueue(real_redis, [make_permit_job(1), bad, make_permit_job(1)]),
        enqueue(real_redis, [again, make_permit_job(1)]),
    ]
    assert work(real_redis) == [3]  # one set: one transaction, then halves for the bad row
    assert [outcome(job) for job in jobs] == [
        {"stored": 3, "duplicates": 0, "dead_lettered": 0},
        {"stored": 2, "duplicates": 0, "dead_lettered": 1},
        {"stored": 1, "duplicates": 1, "dead_lettered": 0},
    ]
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Permit)) == 6
        letter = session.scalars(select(DeadLetter)).one()
    # The dead letter names the batch that carried the row, not the set's first.
    assert (letter.reference_id, letter.job_id) == (bad["reference_id"], jobs[1].id)


def test_a_batch_that_breaks_its_set_fails_alone(
    pg_sessions: sessionmaker[Session], real_redis: Redis, worker_context: None
) -> None:
    """A batch whose arguments the function cannot take fails the set; the set's batches
    then run one by one, so only that batch fails."""
    good = [enqueue(real_redis, [make_permit_job(1)]) for _ in range(2)]
    broken = permits_queue(real_redis).enqueue_call(PERSIST_PERMITS_JOB, kwargs={"rows": []})
    last = enqueue(real_redis, [make_permit_job(1)])
    assert work(real_redis) == [4]
    assert [outcome(job) for job in [*good, last]] == [
        {"stored": 1, "duplicates": 0, "dead_lettered": 0}
    ] * 3
    assert outcome(broken) == JobStatus.FAILED  # enqueued without retries: failed for good
    result = broken.latest_result()
    assert result is not None and "missing a required argument: 'permits'" in str(result.exc_string)
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Permit)) == 3


def test_with_one_job_per_transaction_each_batch_runs_alone(
    pg_sessions: sessionmaker[Session], real_redis: Redis, worker_context: None
) -> None:
    jobs = [enqueue(real_redis, [make_permit_job(1)]) for _ in range(3)]
    assert work(real_redis, jobs_per_txn=1) == []  # RQ's own path, job by job
    assert [outcome(job) for job in jobs] == [
        {"stored": 1, "duplicates": 0, "dead_lettered": 0}
    ] * 3
