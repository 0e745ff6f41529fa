"""The worker: the whole RQ path in-process (fakeredis + SQLite), idempotency, dead letters."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock

import fakeredis
import pytest
from aiohttp.test_utils import TestClient
from rq.serializers import JSONSerializer
from rq.utils import now
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ingest.routes import PUSH_PATH
from shared.config import Settings
from shared.models import DeadLetter, Permit, Zone
from shared.queue import JOB_RETRY
from tests.factories import make_payload, permits_queue, queued_permits, run_worker
from worker.context import init_context
from worker.jobs import persist_permits
from worker.recovery import HeartbeatWorker


@pytest.fixture(autouse=True)
def worker_context(settings: Settings) -> Iterator[None]:
    context = init_context(settings)
    yield
    context.engine.dispose()


def count(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


async def test_pushed_permit_is_stored_with_every_field(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    with sessions.begin() as session:
        session.add(Zone(name="Lot 4", name_normalized="lot 4"))
    reply = await (await client.post(PUSH_PATH, json=make_payload(apiToken=token))).json()
    run_worker(redis)
    with sessions() as session:
        permit = session.scalars(select(Permit)).one()
        lot4 = session.scalars(select(Zone)).one()
    assert permit.reference_id == reply["reference_id"]
    assert (permit.plate, permit.plate_normalized) == ("PL8RDR", "PL8RDR")
    assert (permit.zone_name, permit.zone_id) == ("Lot 4", lot4.id)
    assert permit.permit_no == "L4-1138"
    assert permit.amount == Decimal("14.50") and permit.currency == "CAD"
    assert (permit.start_raw, permit.end_raw) == ("2018-07-02T09:00:00", "2018-07-02T09:30:00")
    assert permit.starts_at.replace(tzinfo=UTC) == datetime(2018, 7, 2, 9, tzinfo=UTC)
    assert permit.ends_at.replace(tzinfo=UTC) == datetime(2018, 7, 2, 9, 30, tzinfo=UTC)
    assert permit.permit_type == "Standard"
    assert permit.received_at <= permit.stored_at
    assert permits_queue(redis).count == 0


async def test_unknown_zone_is_stored_disconnected(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    await client.post(PUSH_PATH, json=make_payload(apiToken=token, zone="Lot 99"))
    run_worker(redis)
    with sessions() as session:
        permit = session.scalars(select(Permit)).one()
    assert (permit.zone_name, permit.zone_normalized, permit.zone_id) == ("Lot 99", "lot 99", None)


async def test_running_the_same_job_twice_stores_once(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    permits = queued_permits(redis)
    assert persist_permits(permits) == {"stored": 1, "duplicates": 0, "dead_lettered": 0}
    assert persist_permits(permits) == {"stored": 0, "duplicates": 1, "dead_lettered": 0}
    assert count(sessions, Permit) == 1


async def test_resend_enqueued_again_is_stored_once(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    for _ in range(3):
        await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    assert len(queued_permits(redis)) == 3  # a resend is queued again under the first id
    run_worker(redis)
    assert count(sessions, Permit) == 1


async def test_a_bad_row_is_dead_lettered_and_the_rest_stored(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    for number in ("A", "B", "C"):
        await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo=number))
    permits = queued_permits(redis)
    permits[1]["amount"] = "not a number"
    result = persist_permits(permits)
    assert result == {"stored": 2, "duplicates": 0, "dead_lettered": 1}
    with sessions() as session:
        letter = session.scalars(select(DeadLetter)).one()
        stored = set(session.scalars(select(Permit.permit_no)))
    assert letter.reference_id == permits[1]["reference_id"]
    assert "InvalidOperation" in letter.reason
    assert letter.payload["permit_no"] == "B"
    assert stored == {"A", "C"}


async def test_rq_records_the_batch_result(
    client: TestClient, redis: fakeredis.FakeRedis, add_client: Callable[..., str]
) -> None:
    token = add_client()
    await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    (job,) = permits_queue(redis).get_jobs()
    run_worker(redis)
    job.refresh()
    assert job.get_status() == "finished"
    assert job.return_value() == {"stored": 1, "duplicates": 0, "dead_lettered": 0}


def test_job_orphaned_in_the_intermediate_queue_is_rescued(redis: fakeredis.FakeRedis) -> None:
    queue = permits_queue(redis)
    job = queue.enqueue_call("worker.jobs.persist_permits", kwargs={"permits": []}, retry=JOB_RETRY)
    # A worker's BLMOVE took it, then the worker (or Redis) died before registering it.
    redis.lmove(queue.key, queue.intermediate_queue.key, "RIGHT", "LEFT")
    assert queue.count == 0
    worker = HeartbeatWorker(
        [queue], connection=redis, serializer=JSONSerializer, abandoned_job_s=5
    )
    worker.clean_registries()  # first sighting: it may be on its way
    assert queue.count == 0
    first_seen = queue.intermediate_queue.get_first_seen_key(job.id)
    redis.set(first_seen, (now() - timedelta(seconds=6)).timestamp())
    worker.clean_registries()
    assert queue.get_job_ids() == [job.id]  # back on the queue at once (retry interval 0)
    assert queue.intermediate_queue.get_job_ids() == []


def test_a_long_job_keeps_its_started_entry_alive(redis: fakeredis.FakeRedis) -> None:
    """The worker's one heartbeat thread renews the running job's entry: a job that runs
    longer than abandoned_job_s is not taken for abandoned (and failed, or run twice)
    by the registry clean-up that runs meanwhile."""
    queue = permits_queue(redis)
    job = queue.enqueue_call("time.sleep", args=(3.0,))
    worker = HeartbeatWorker(
        [queue], connection=redis, serializer=JSONSerializer, abandoned_job_s=2
    )
    scores: list[float] = []  # the job's entry: when it would count as abandoned
    done = threading.Event()

    def watch() -> None:
        registry = queue.started_job_registry
        while not done.wait(0.1):
            scores.extend(score for _, score in redis.zrange(registry.key, 0, -1, withscores=True))
            registry.cleanup()  # what any worker's maintenance does: abandoned jobs fail

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        worker.work(burst=True)
    finally:
        done.set()
        watcher.join()
    assert scores, "the job was never seen running"
    # RQ registers it for 2 s as it starts; the thread (every 2/3 s) kept pushing that on.
    assert max(scores) - min(scores) >= 1.5
    assert job.get_status() == "finished"
    assert queue.failed_job_registry.count == 0
    assert not worker._job_heartbeat.is_alive()  # stopped with the worker


def test_a_worker_asked_to_stop_runs_no_maintenance(redis: fakeredis.FakeRedis) -> None:
    """Maintenance would restart a scheduler just stopped, and the worker would hang
    stopping it again (worker/recovery.py); once a stop is requested it does not run."""
    worker = HeartbeatWorker(
        [permits_queue(redis)], connection=redis, serializer=JSONSerializer, abandoned_job_s=5
    )
    worker.last_cleaned_at = now() - timedelta(hours=1)  # due
    with mock.patch.object(HeartbeatWorker, "clean_registries") as cleaned:
        worker._stop_requested = True  # as RQ's SIGTERM handler sets it mid-job
        worker.run_maintenance_tasks()
        cleaned.assert_not_called()
        worker._stop_requested = False
        worker.run_maintenance_tasks()
        cleaned.assert_called_once()
