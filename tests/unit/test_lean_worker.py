"""LeanWorker: fewer Redis round trips per job than RQ's SimpleWorker, and the same outcomes."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Sequence
from datetime import timedelta

import fakeredis
import pytest
import redis.connection
import rq.queue
from rq import Callback, Queue, Retry, SimpleWorker, Worker
from rq.job import Job, JobStatus
from rq.results import Result

from shared.queue import JOB_SERIALIZER, LeanJob
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


def fake_queue(name: str) -> Queue:
    """A queue of its own on a fresh fakeredis server, with the service's serializer."""
    connection = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    return Queue(name, connection=connection, serializer=JOB_SERIALIZER)


def run_jobs(worker_class: type[SimpleWorker], round_trips: list[int]) -> tuple[int, Queue]:
    """Round trips a burst worker of ``worker_class`` spends on JOBS successful jobs."""
    queue = fake_queue("lean")
    connection = queue.connection
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
    queue = fake_queue("lean")
    connection = queue.connection
    queue.enqueue(len, [1])
    worker = LeanWorker([queue], connection=connection, serializer=JOB_SERIALIZER)
    worker.work(burst=True, max_jobs=1)
    # The worker key: refreshed with RQ's full TTL after the job, in the idle state.
    assert connection.hget(worker.key, "state") == b"idle"
    assert connection.hget(worker.key, "last_heartbeat") is not None
    assert connection.ttl(worker.key) > worker.worker_ttl


def test_a_lean_worker_fails_and_retries_jobs_as_rq_does() -> None:
    queue = fake_queue("lean")
    connection = queue.connection
    failing = queue.enqueue("builtins.int", "not a number", retry=Retry(max=1))
    LeanWorker([queue], connection=connection, serializer=JOB_SERIALIZER).work(burst=True)
    failing.refresh()
    assert failing.get_status() == JobStatus.FAILED
    assert failing.retries_left == 0  # run twice: once, then its one retry
    assert failing.id in queue.failed_job_registry


def test_a_suspended_lean_worker_takes_no_job() -> None:
    from rq.suspension import suspend

    queue = fake_queue("lean")
    connection = queue.connection
    queue.enqueue(len, [1])
    suspend(connection)
    worked = LeanWorker([queue], connection=connection, serializer=JOB_SERIALIZER).work(burst=True)
    assert not worked and queue.count == 1
    assert Worker.all(connection=connection) == []  # it left on its own


def test_only_a_job_with_a_callback_gets_rqs_heartbeat_as_it_ends() -> None:
    """RQ's heartbeat after the job covers its callback; without one it is skipped, so
    the job's last heartbeat stays the one from before it ran."""
    queue = fake_queue("lean")
    connection = queue.connection
    plain = queue.enqueue(time.sleep, 0.2)
    called = queue.enqueue(time.sleep, 0.2, on_success=Callback(print))
    LeanWorker([queue], connection=connection, serializer=JOB_SERIALIZER).work(burst=True)
    for job in (plain, called):
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
    assert plain.last_heartbeat and plain.ended_at and called.last_heartbeat and called.ended_at
    assert plain.ended_at - plain.last_heartbeat >= timedelta(seconds=0.2)  # set as it started
    assert called.last_heartbeat >= called.ended_at  # RQ's, after the job


# Many jobs, one run (jobs_per_txn): here a set runner that records the sets it was given.


class SetRecorder:
    """A set runner for `len` jobs: each job's len, or a job's planned failure."""

    def __init__(self, fail: tuple[int, ...] = (), raise_for_set: bool = False) -> None:
        self.sets: list[list[int]] = []
        self.fail = fail  # argument lengths whose job fails
        self.raise_for_set = raise_for_set
        self.running_seen: list[int] = []
        self.worker: LeanWorker | None = None

    def __call__(self, jobs: Sequence[Job]) -> list[object]:
        self.sets.append([len(job.args[0]) for job in jobs])
        if self.worker is not None:
            self.running_seen.append(len(self.worker.running))
        if self.raise_for_set:
            raise RuntimeError("the set failed")
        return [
            ValueError(f"job {job.id} fails") if len(job.args[0]) in self.fail else len(job.args[0])
            for job in jobs
        ]


def set_worker(queue: Queue, runner: SetRecorder, jobs_per_txn: int = 4) -> LeanWorker:
    worker = LeanWorker(
        [queue],
        connection=queue.connection,
        serializer=JOB_SERIALIZER,
        jobs_per_txn=jobs_per_txn,
        set_runners={"builtins.len": runner},
    )
    runner.worker = worker
    return worker


def finished_results(queue: Queue, jobs: Sequence[Job]) -> list[object]:
    for job in jobs:
        job.refresh()
    return [job.return_value() if job.get_status() == JobStatus.FINISHED else None for job in jobs]


def test_a_worker_runs_the_jobs_waiting_as_sets_each_with_its_own_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Leaving would shorten the key to RQ's 60 s: look at it as the last set left it.
    monkeypatch.setattr(LeanWorker, "register_death", lambda self: None)
    queue = fake_queue("sets")
    connection = queue.connection
    jobs = [queue.enqueue(len, [0] * n) for n in range(1, 11)]
    runner = SetRecorder()
    worker = set_worker(queue, runner)
    worker.work(burst=True)
    # 10 waiting, 4 at most a set: 4 + 4 + 2, in the queue's order.
    assert runner.sets == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert runner.running_seen == [4, 4, 2]  # the job heartbeat renews all of a set
    assert finished_results(queue, jobs) == list(range(1, 11))
    assert queue.finished_job_registry.count == 10
    assert queue.started_job_registry.count == 0 and queue.intermediate_queue.get_job_ids() == []
    # The worker's own fields, written once a set: RQ's counts of every job, no current job.
    fields = connection.hgetall(worker.key)
    assert fields[b"successful_job_count"] == b"10" and float(fields[b"total_working_time"]) > 0
    assert fields[b"state"] == b"idle" and b"current_job" not in fields


def test_a_set_costs_fewer_round_trips_than_its_jobs_alone(round_trips: list[int]) -> None:
    def trips(jobs_per_txn: int) -> int:
        queue = fake_queue("sets")
        for i in range(JOBS):
            queue.enqueue(len, [i] * 3)
        worker = set_worker(queue, SetRecorder(), jobs_per_txn)
        before = round_trips[0]
        worker.work(burst=True)
        return round_trips[0] - before

    alone, in_sets = trips(1), trips(JOBS)
    # Measured with RQ 2.12: 8.2 trips a job alone, 4.2 in a set of 20 (3.2 on a real
    # Redis: RQ reads fakeredis's version with an INFO at every dequeue). Each job's
    # dequeue and fetch stay; its preparation and success share the set's two trips.
    assert in_sets <= alone - 3.5 * JOBS, (alone, in_sets)


def test_a_job_of_another_kind_met_while_taking_a_set_runs_after_it() -> None:
    queue = fake_queue("sets")
    first = [queue.enqueue(len, [0] * n) for n in (1, 2)]
    other = queue.enqueue(sum, [5, 6])
    plain_callback = queue.enqueue(len, [0] * 3, on_success=Callback(print))
    last = [queue.enqueue(len, [0] * n) for n in (4, 5)]
    runner = SetRecorder()
    set_worker(queue, runner).work(burst=True)
    # The sum and the job with a callback run alone, by RQ's own path.
    assert runner.sets == [[1, 2], [4, 5]]
    assert finished_results(queue, [*first, other, plain_callback, *last]) == [1, 2, 11, 3, 4, 5]


@pytest.mark.parametrize("retry", [None, Retry(max=1)])
def test_a_job_that_fails_in_a_set_fails_alone_with_its_own_retry(retry: Retry | None) -> None:
    queue = fake_queue("sets")
    jobs = [queue.enqueue(len, [0] * n, retry=retry) for n in (1, 2, 3)]
    runner = SetRecorder(fail=(2,))
    set_worker(queue, runner).work(burst=True)
    # With a retry the failed job was queued again, and run again alone (nothing else
    # waiting): a set of one, which failed it again.
    assert runner.sets == ([[1, 2, 3]] if retry is None else [[1, 2, 3], [2]])
    assert finished_results(queue, jobs) == [1, None, 3]
    failed = jobs[1]
    assert failed.get_status() == JobStatus.FAILED
    assert failed.retries_left == (None if retry is None else 0)
    assert queue.failed_job_registry.get_job_ids() == [failed.id]
    result = failed.latest_result()
    assert result is not None and result.type == Result.Type.FAILED
    assert f"job {failed.id} fails" in (result.exc_string or "")
    assert queue.started_job_registry.count == 0


@pytest.fixture
def redis_7(monkeypatch: pytest.MonkeyPatch) -> None:
    """RQ takes fakeredis for Redis 5 and asks its version (INFO) at every dequeue; as on
    a real Redis 7 here: asked once, and jobs dequeued with LMOVE into RQ's intermediate
    list."""
    monkeypatch.setattr(rq.queue, "get_version", lambda connection: (7, 0, 0))


def test_a_lone_job_with_a_set_runner_costs_fewer_round_trips(
    round_trips: list[int], redis_7: None
) -> None:
    """A job with nothing of its kind waiting behind it runs as a set of one."""

    def trips(jobs_per_txn: int) -> tuple[int, list[list[int]]]:
        queue = fake_queue("sets")
        runner = SetRecorder()
        spent = 0
        for i in range(JOBS):  # one job at a time: each alone in the queue
            queue.enqueue(len, [i] * 3)
            worker = set_worker(queue, runner, jobs_per_txn)
            before = round_trips[0]
            worker.work(burst=True)
            spent += round_trips[0] - before
        return spent, runner.sets

    (alone, no_sets), (as_sets, sets) = trips(1), trips(16)
    assert no_sets == [] and sets == [[3]] * JOBS
    # Its preparation is one MULTI/EXEC, not RQ's two, and RQ's PERSIST of the job key
    # goes in it: 2 round trips fewer a job, less the non-blocking dequeue that finds
    # nothing behind it. Measured with RQ 2.12: 503 -> 483 for the 20 (each a burst).
    assert as_sets <= alone - 0.9 * JOBS, (alone, as_sets)


def test_a_job_of_another_kind_met_while_taking_a_set_goes_back_to_the_head(
    redis_7: None,
) -> None:
    queue = fake_queue("sets")
    first = queue.enqueue(len, [0])
    other = queue.enqueue(sum, [5, 6])
    last = queue.enqueue(len, [0, 0])
    worker = set_worker(queue, SetRecorder())
    assert worker.dequeue_job_and_maintain_ttl(None) is not None  # takes `first`
    assert worker._take_waiting(first, queue, worker._set_runners["builtins.len"]) == [first]
    # `other` is back where it was, ahead of `last`, and not held in the intermediate list.
    assert queue.get_job_ids() == [other.id, last.id]
    assert queue.intermediate_queue.get_job_ids() == [first.id]


def test_a_set_that_fails_as_a_whole_fails_each_job_with_its_own_retry() -> None:
    queue = fake_queue("sets")
    jobs = [queue.enqueue(len, [0] * n, retry=Retry(max=1)) for n in (1, 2, 3)]
    runner = SetRecorder(raise_for_set=True)
    set_worker(queue, runner).work(burst=True)
    # Each failed, and its one retry: the three were queued again, and taken as a set again.
    assert runner.sets == [[1, 2, 3], [1, 2, 3]]
    for job in jobs:
        job.refresh()
        assert job.get_status() == JobStatus.FAILED and job.retries_left == 0
    assert sorted(queue.failed_job_registry.get_job_ids()) == sorted(job.id for job in jobs)
    assert queue.started_job_registry.count == 0


def test_a_lean_job_writes_its_arguments_back_as_read(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = fake_queue("lean")
    connection = queue.connection
    job = queue.enqueue(len, [7] * 500)
    enqueued = connection.hget(job.key, "data")
    assert isinstance(enqueued, bytes)
    compressed: list[int] = []  # sizes of what is compressed while the worker runs
    compress = zlib.compress

    def counting(data: bytes, /, *args: int) -> bytes:
        compressed.append(len(data))
        return compress(data, *args)

    monkeypatch.setattr(zlib, "compress", counting)
    worker = LeanWorker(
        [queue], connection=connection, serializer=JOB_SERIALIZER, job_class=LeanJob
    )
    worker.work(burst=True)
    assert connection.hget(job.key, "data") == enqueued  # byte for byte
    assert max(compressed, default=0) < len(zlib.decompress(enqueued)) / 10  # not again
    job.refresh()
    assert (job.get_status(), job.return_value()) == (JobStatus.FINISHED, 500)
    assert list(job.args) == [[7] * 500]


def test_a_lean_job_whose_arguments_changed_writes_the_new_ones() -> None:
    queue = fake_queue("lean")
    connection = queue.connection
    job = LeanJob.fetch(
        queue.enqueue(len, [1]).id, connection=connection, serializer=JOB_SERIALIZER
    )
    assert job.func_name == "builtins.len"  # read: RQ rebuilds the data from its parts
    job.args = ([1, 2, 3],)
    job.save()
    again = LeanJob.fetch(job.id, connection=connection, serializer=JOB_SERIALIZER)
    assert list(again.args) == [[1, 2, 3]]


def test_a_lean_job_built_here_and_changed_after_its_first_save_writes_the_new_arguments() -> None:
    queue = fake_queue("lean")
    job = LeanJob.create(len, args=([1],), connection=queue.connection, serializer=JOB_SERIALIZER)
    job.save()
    first = queue.connection.hget(job.key, "data")
    job.args = ([1, 2, 3],)
    job.save()
    again = LeanJob.fetch(job.id, connection=queue.connection, serializer=JOB_SERIALIZER)
    assert list(again.args) == [[1, 2, 3]]
    assert queue.connection.hget(job.key, "data") != first
