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
    redis.flushall()
    assert not worker.registered()
    assert Worker.count(queue=queue) == 0
    worker.register_again()
    assert worker.registered()
    assert Worker.count(queue=queue) == 1
    found = Worker.find_by_key(worker.key, connection=redis, serializer=JOB_SERIALIZER)
    assert found is not None
    assert found.name == worker.name
    assert [q.name for q in found.queues] == ["permits"]
    assert redis.ttl(worker.key) > 0


@pytest.fixture
def watch(redis: fakeredis.FakeRedis) -> Iterator[tuple[LossWatch, threading.Event]]:
    """A LossWatch whose one publisher stands in for the token publish."""
    published = threading.Event()

    def publish() -> None:
        redis.set(TOKENS_LOADED_KEY, 1)
        published.set()

    publisher = Periodic("tokens_publish", 3600, publish)
    publisher.run_once()
    published.clear()
    loss_watch = LossWatch(redis, [publisher])
    loss_watch.worker, _ = registered_worker(redis)
    loss_watch.start()
    yield loss_watch, published
    loss_watch.stop()
    loss_watch.join(5)


def test_a_loss_is_rebuilt_and_the_worker_registered_with_no_one_acting(
    redis: fakeredis.FakeRedis, watch: tuple[LossWatch, threading.Event]
) -> None:
    loss_watch, published = watch
    assert not published.wait(1.0)  # nothing lost: nothing republished
    redis.flushall()
    assert published.wait(10), "the token set was not rebuilt"
    assert not data_lost(redis)
    worker = loss_watch.worker
    assert worker is not None
    # Registering follows the publish in the same pass.
    wait_until(worker.registered, 5, "the worker registered again")


def test_a_receivers_report_is_taken_and_rebuilt(
    redis: fakeredis.FakeRedis, watch: tuple[LossWatch, threading.Event]
) -> None:
    _, published = watch
    redis.flushall()
    report_data_loss(redis)
    assert published.wait(10), "the token set was not rebuilt"
    assert not redis.exists(DATA_LOSS_KEY)
