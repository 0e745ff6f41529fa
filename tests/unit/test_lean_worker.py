"""LeanWorker: fewer Redis round trips per job than RQ's SimpleWorker, and the same outcomes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import fakeredis
import pytest
import redis.connection
from rq import Callback, Queue, Retry, SimpleWorker, Worker
from rq.job import Job, JobStatus

from shared.queue import JOB_SERIALIZER
from worker.lean_worker import LeanWorker

JOBS = 20


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts every packet of commands sent to Redis (one per round trip, pipelines too)."""
    count = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counting(self: redis.connection.AbstractConnection, *args: object, **kw: object) -> None:
        count[0] += 1
        send(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    yield count


def run_jobs(worker_class: type[SimpleWorker], round_trips: list[int]) -> tuple[int, Queue]:
    """Round trips a burst worker of ``worker_class`` spends on JOBS successful jobs."""
    connection = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    queue = Queue("lean", connection=connection, serializer=JOB_SERIALIZER)
    for i in range(JOBS):
        queue.enqueue(len, [i] * 3)
    worker = worker_class([queue], connection=connection, serializer=JOB_SERIALIZER)
    before = round_trips[0]
    worker.work(burst=True)
    return round_trips[0] - before, queue


def test_a_lean_worker_saves_round_trips_on_every_job(round_trips: list[int]) -> None:
    simple, _ = run_jobs(SimpleWorker, round_trips)
    lean, queue = run_jobs(LeanWorker, round_trips)
    # Measured with RQ 2.12: 20.4 trips per job, 8.2 lean. Per job the lean worker
    # skips three heartbeat trips, one idle state, one suspension check, the job's
    # heartbeat as it ends and the dependents' WATCH and SMEMBERS, and sends the other
    # heartbeat with the idle state inside the success's transaction: 12 fewer.
    assert lean <= simple - 12 * JOBS, (simple, lean)
    finished = queue.finished_job_registry.get_job_ids()
    jobs = Job.fetch_many(finished, connection=queue.connection, serializer=JOB_SERIALIZER)
    assert [job.return_value() if job else None for job in jobs] == [3] * JOBS


def test_a_lean_worker_is_seen_alive_and_idle_between_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Leaving would shorten the key to RQ's 60 s: look at it as the job left it.
    monkeypatch.setattr(LeanWorker, "register_death", lambda self: None)
    connection = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    queue = Queue("lean", connection=connection, serializer=JOB_SERIALIZER)
    queue.enqueue(len, [1])
    worker = LeanWorker([queue], connection=connection, serializer=JOB_SERIALIZER)
    worker.work(burst=True, max_jobs=1)
    # The worker key: refreshed with RQ's full TTL after the job, in the idle state.
    assert connection.hget(worker.key, "state") == b"idle"
    assert connection.hget(worker.key, "last_heartbeat") is not None
    assert connection.ttl(worker.key) > worker.worker_ttl


def test_a_lean_worker_fails_and_retries_jobs_as_rq_does() -> None:
    connection = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    queue = Queue("lean", connection=connection, serializer=JOB_SERIALIZER)
    failing = queue.enqueue("builtins.int", "not a number", retry=Retry(max=1))
    LeanWorker([queue], connection=connection, serializer=JOB_SERIALIZER).work(burst=True)
    failing.refresh()
    assert failing.get_status() == JobStatus.FAILED
    assert failing.retries_left == 0  # run twice: once, then its one retry
    assert failing.id in queue.failed_job_registry


def test_a_suspended_lean_worker_takes_no_job() -> None:
    from rq.suspension import suspend

    connection = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    queue = Queue("lean", connection=connection, serializer=JOB_SERIALIZER)
    queue.enqueue(len, [1])
    suspend(connection)
    worked = LeanWorker([queue], connection=connection, serializer=JOB_SERIALIZER).work(burst=True)
    assert not worked and queue.count == 1
    assert Worker.all(connection=connection) == []  # it left on its own


def test_only_a_job_with_a_callback_gets_rqs_heartbeat_as_it_ends() -> None:
    """RQ's heartbeat after the job covers its callback; without one it is skipped, so
    the job's last heartbeat stays the one from before it ran."""
    connection = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    queue = Queue("lean", connection=connection, serializer=JOB_SERIALIZER)
    plain = queue.enqueue(time.sleep, 0.2)
    called = queue.enqueue(time.sleep, 0.2, on_success=Callback(print))
    LeanWorker([queue], connection=connection, serializer=JOB_SERIALIZER).work(burst=True)
    for job in (plain, called):
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
    assert plain.last_heartbeat and plain.ended_at and called.last_heartbeat and called.ended_at
    assert plain.ended_at - plain.last_heartbeat >= timedelta(seconds=0.2)  # set as it started
    assert called.last_heartbeat >= called.ended_at  # RQ's, after the job
