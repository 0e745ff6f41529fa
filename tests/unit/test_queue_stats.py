"""Queue figures read from RQ's keys agree with RQ's own API (what `rq info` and
rq-dashboard call), cost a fixed number of round trips, and never change the queue."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import fakeredis
import pytest
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer

from shared.constants import DB_STATS_KEY, PERMITS_STORED_KEY
from shared.queue_stats import JOB_STATUSES, QueueStats, read_queue_stats

# What the job below saw of the queue while a worker was running it.
_seen_while_running: list[QueueStats] = []


def observe_queue() -> None:
    """An RQ job: read the figures from inside a running job (so one job is started)."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    _seen_while_running.append(read_queue_stats(job.connection, ["permits"]))


def fail() -> None:
    raise RuntimeError("this job fails on purpose")


def rq_api_counts(queue: Queue) -> dict[str, int]:
    """The figures as RQ's own API gives them (each registry's count cleans it up first)."""
    kwargs: dict[str, Any] = {"queue": queue}
    return {
        "queued": queue.count,
        "started": StartedJobRegistry(**kwargs).count,
        "deferred": DeferredJobRegistry(**kwargs).count,
        "scheduled": ScheduledJobRegistry(**kwargs).count,
        "failed": FailedJobRegistry(**kwargs).count,
        "finished": FinishedJobRegistry(**kwargs).count,
    }


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def queue(redis: fakeredis.FakeRedis) -> Queue:
    return Queue("permits", connection=redis, serializer=JSONSerializer)


def test_every_state_matches_rq_and_a_running_job_is_started(
    redis: fakeredis.FakeRedis, queue: Queue
) -> None:
    _seen_while_running.clear()
    queue.enqueue(f"{__name__}.observe_queue")
    queue.enqueue(f"{__name__}.fail")
    queue.enqueue(f"{__name__}.observe_queue")
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    waiting = [queue.enqueue("json.dumps", 1) for _ in range(3)]
    queue.enqueue("json.dumps", 2, depends_on=waiting[0])  # deferred
    queue.enqueue_in(timedelta(minutes=5), "json.dumps", 3)  # scheduled

    stats = read_queue_stats(redis, ["permits"])

    during = _seen_while_running[0].queue("permits").jobs
    assert during["started"] == 1 and during["queued"] == 2
    (worker,) = _seen_while_running[0].workers
    assert (worker.queues, worker.state) == ("permits", "busy")
    expected = {"queued": 3, "started": 0, "deferred": 1, "scheduled": 1}
    assert stats.queue("permits").jobs == {**expected, "failed": 1, "finished": 2}
    assert stats.queue("permits").jobs == rq_api_counts(queue)
    assert list(stats.queue("permits").jobs) == list(JOB_STATUSES)


def test_lag_is_the_age_of_the_oldest_queued_job(redis: fakeredis.FakeRedis, queue: Queue) -> None:
    assert read_queue_stats(redis, ["permits"]).queue("permits").lag_s == 0.0  # empty
    first = queue.enqueue("json.dumps", 1)
    second = queue.enqueue("json.dumps", 2)
    assert first.enqueued_at is not None and second.enqueued_at is not None
    enqueued = first.enqueued_at.timestamp()
    figures = read_queue_stats(redis, ["permits"], now=enqueued + 42).queue("permits")
    assert figures.lag_s == pytest.approx(42, abs=1e-3)
    # A deleted job's id left at the head: RQ skips it, and so does the lag.
    redis.delete(Job.key_for(first.id))
    later = second.enqueued_at.timestamp() + 7
    assert read_queue_stats(redis, ["permits"], now=later).queue("permits").lag_s == pytest.approx(
        7, abs=1e-3
    )


def test_a_job_pushed_to_the_front_does_not_hide_the_lag(
    redis: fakeredis.FakeRedis, queue: Queue
) -> None:
    old = queue.enqueue("json.dumps", 1)
    assert old.enqueued_at is not None
    queue.enqueue("json.dumps", 2, at_front=True)  # as zone reconcile jobs are
    now = old.enqueued_at.timestamp() + 60
    assert read_queue_stats(redis, ["permits"], now=now).queue("permits").lag_s >= 60


def test_expired_registry_entries_are_left_out_but_not_removed(
    redis: fakeredis.FakeRedis, queue: Queue
) -> None:
    failed = FailedJobRegistry(queue=queue)
    redis.zadd(failed.key, {"expired-job": 1_000, "kept-job": 4_000_000_000})
    stats = read_queue_stats(redis, ["permits"])
    assert stats.queue("permits").jobs["failed"] == 1
    assert redis.zcard(failed.key) == 2  # a scrape changes nothing
    assert failed.count == 1  # RQ's own count, after its cleanup, agrees


def test_workers_are_listed_as_rq_exporter_labels_them(redis: fakeredis.FakeRedis) -> None:
    both = SimpleWorker(["permits", "reconcile"], connection=redis, name="w-both")
    both.register_birth()
    both.set_state("idle")
    gone = SimpleWorker(["permits"], connection=redis, name="w-gone")
    gone.register_birth()
    redis.delete(gone.key)  # its heartbeat expired; the set still names it

    (worker,) = read_queue_stats(redis, ["permits"]).workers
    assert (worker.name, worker.queues, worker.state) == ("w-both", "permits,reconcile", "idle")
    both.register_death()
    assert read_queue_stats(redis, ["permits"]).workers == []


def test_other_queues_in_the_same_redis_are_reported_too(
    redis: fakeredis.FakeRedis, queue: Queue
) -> None:
    Queue("reports", connection=redis).enqueue("json.dumps", 1)
    stats = read_queue_stats(redis, ["permits"])
    assert [q.name for q in stats.queues] == ["permits", "reports"]
    assert stats.queue("reports").jobs["queued"] == 1
    assert stats.queue("permits").jobs["queued"] == 0  # known before anything was enqueued


def test_permit_figures_are_read_when_published(redis: fakeredis.FakeRedis) -> None:
    assert read_queue_stats(redis, ["permits"]).permits.stored_total is None
    redis.incrby(PERMITS_STORED_KEY, 12)
    redis.hset(DB_STATS_KEY, mapping={"disconnected": 3, "dead_letters": 1})
    permits = read_queue_stats(redis, ["permits"]).permits
    assert (permits.stored_total, permits.disconnected, permits.dead_letters) == (12, 3, 1)


def test_a_read_costs_three_round_trips_however_long_the_queue(
    redis: fakeredis.FakeRedis, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(50):
        queue.enqueue("json.dumps", i)
    for name in ("w1", "w2", "w3"):
        SimpleWorker(["permits"], connection=redis, name=name).register_birth()
    pipelines = []
    make_pipeline = redis.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipelines.append(kwargs)
        return make_pipeline(*args, **kwargs)

    def no_single_commands(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a command outside a pipeline: {args[:1]}")

    monkeypatch.setattr(redis, "pipeline", counting_pipeline)
    monkeypatch.setattr(redis, "execute_command", no_single_commands)
    stats = read_queue_stats(redis, ["permits"])
    assert stats.queue("permits").jobs["queued"] == 50 and len(stats.workers) == 3
    assert len(pipelines) == 3
    assert all(p.get("transaction") is False for p in pipelines)
