"""Redis came back empty: the workers notice, rebuild the token set and register again.

The end-to-end proof (2 receivers, 2 workers, FLUSHALL under load) is
tests/fault/test_faults.py; these pin the parts on fakeredis, RQ's internals included.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import fakeredis
import pytest
from rq import Queue, Worker

from harness.services import wait_until
from shared.constants import DATA_LOSS_KEY, TOKENS_LOADED_KEY
from shared.data_loss import data_lost, report_data_loss, wait_for_report
from shared.queue import JOB_SERIALIZER
from worker.lean_worker import LeanWorker
from worker.runner import LossWatch, Periodic


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def registered_worker(redis: fakeredis.FakeRedis) -> tuple[LeanWorker, Queue]:
    queue = Queue("permits", connection=redis, serializer=JOB_SERIALIZER)
    worker = LeanWorker([queue], connection=redis, serializer=JOB_SERIALIZER)
    worker.register_birth()
    return worker, queue


def test_reports_stay_one_entry_and_wake_a_waiting_worker(redis: fakeredis.FakeRedis) -> None:
    assert not wait_for_report(redis, timeout_s=0.01)
    for _ in range(3):
        report_data_loss(redis)
    assert redis.llen(DATA_LOSS_KEY) == 1
    assert 0 < redis.ttl(DATA_LOSS_KEY) <= 60  # a report nobody takes does not linger
    assert wait_for_report(redis, timeout_s=0.01)
    assert not redis.exists(DATA_LOSS_KEY)  # taken by one worker


def test_a_flushed_worker_registers_again_as_rq_knows_it(redis: fakeredis.FakeRedis) -> None:
    worker, queue = registered_worker(redis)
    assert worker.registered()
    assert not worker.register_again_if_lost()  # nothing lost
    redis.flushall()
    assert not worker.registered()
    assert Worker.count(queue=queue) == 0
    assert worker.register_again_if_lost()
    assert Worker.count(queue=queue) == 1
    found = Worker.find_by_key(worker.key, connection=redis, serializer=JOB_SERIALIZER)
    assert found is not None
    assert found.name == worker.name
    assert [q.name for q in found.queues] == ["permits"]
    assert found.get_state() == worker.get_state()
    assert redis.ttl(worker.key) > 0


def test_a_worker_rq_let_go_is_not_registered_again(redis: fakeredis.FakeRedis) -> None:
    worker, queue = registered_worker(redis)
    worker.register_death()  # RQ's teardown: a stop, or the end of a burst
    redis.delete(worker.key)
    assert not worker.register_again_if_lost()
    assert Worker.count(queue=queue) == 0
    assert not redis.exists(worker.key)


def token_publisher(redis: fakeredis.FakeRedis) -> tuple[Periodic, threading.Event]:
    """A stand-in for the workers' token publish, and an event set each time it runs."""
    published = threading.Event()

    def publish() -> None:
        redis.set(TOKENS_LOADED_KEY, 1)
        published.set()

    return Periodic("tokens_publish", 3600, publish), published


# Longer than any wait below: what happens within it was not the periodic look.
SLOW_CHECK_S = 30.0


@pytest.fixture
def watch(redis: fakeredis.FakeRedis) -> Iterator[tuple[LossWatch, threading.Event]]:
    """A LossWatch that looks for the marker only every SLOW_CHECK_S, so a quick rebuild
    comes from a receiver's report; its one publisher stands in for the token publish."""
    publisher, published = token_publisher(redis)
    publisher.run_once()
    published.clear()
    loss_watch = LossWatch(redis, [publisher], check_s=SLOW_CHECK_S)
    loss_watch.worker, _ = registered_worker(redis)
    loss_watch.start()
    yield loss_watch, published
    loss_watch.stop()
    redis.lpush(DATA_LOSS_KEY, "1")  # wakes its wait, so it sees the stop
    loss_watch.join(5)
    assert not loss_watch.is_alive()


def test_a_receivers_report_has_the_loss_rebuilt_at_once(
    redis: fakeredis.FakeRedis, watch: tuple[LossWatch, threading.Event]
) -> None:
    loss_watch, published = watch
    redis.flushall()
    assert not published.wait(0.5)  # no report yet, and the next look is SLOW_CHECK_S away
    report_data_loss(redis)
    assert published.wait(10), "the token set was not rebuilt"
    assert not data_lost(redis)
    assert not redis.exists(DATA_LOSS_KEY)  # taken
    worker = loss_watch.worker
    assert worker is not None
    wait_until(worker.registered, 5, "the worker registered again")


def test_a_late_report_after_the_rebuild_publishes_nothing(
    redis: fakeredis.FakeRedis, watch: tuple[LossWatch, threading.Event]
) -> None:
    _, published = watch
    report_data_loss(redis)  # the set is there: another worker rebuilt it first
    wait_until(lambda: not redis.exists(DATA_LOSS_KEY), 5, "the report taken")
    assert not published.wait(0.5)


def test_a_worker_finds_a_loss_nobody_reported(redis: fakeredis.FakeRedis) -> None:
    publisher, published = token_publisher(redis)
    loss_watch = LossWatch(redis, [publisher], check_s=0.05)
    loss_watch.start()
    try:
        assert published.wait(10), "the missing set was not noticed"
        assert not data_lost(redis)
    finally:
        loss_watch.stop()
        loss_watch.join(5)
