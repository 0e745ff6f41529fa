"""The bench's floor receiver does the design's real work, so its rate is a fair ceiling
(bench/servers/floor.py): permit-push's validation, and jobs that its worker stores."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator

import fakeredis
import pytest
from aiohttp.test_utils import TestClient
from rq import Queue, SimpleWorker
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bench.servers.common import PUSH_PATH
from bench.servers.floor import CLIENT, FLOOR_QUEUE, make_app
from shared.config import Settings
from shared.models import Permit
from shared.queue import JOB_SERIALIZER
from tests.factories import make_payload
from worker.context import init_context

# Ends 400 days after it starts: longer than MAX_PERMIT_DAYS (366) allows (load_permit checks).
TOO_LONG = make_payload(startTime="2018-07-02T09:00:00", endTime="2019-08-06T09:00:00")


@pytest.fixture
def worker_context(settings: Settings) -> Iterator[None]:
    context = init_context(settings)
    yield
    context.engine.dispose()


async def test_the_floors_replies_name_permits_a_worker_stores(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    worker_context: None,
    add_client: Callable[..., str],
) -> None:
    add_client()  # the floor's jobs name client 1, the first one made
    # A window wide enough that the 5 concurrent pushes share batches on a slow runner too.
    wide = dataclasses.replace(settings, batch_window_ms=200.0)
    client: TestClient = await aiohttp_client(make_app(wide, redis))  # type: ignore[assignment]
    payloads = [make_payload(LicencePlate=f"FLOOR{i}", permitNo=f"F-{i}") for i in range(5)]
    responses = await asyncio.gather(*(client.post(PUSH_PATH, json=p) for p in payloads))
    assert [r.status for r in responses] == [200] * 5
    replies = {(await r.json())["reference_id"] for r in responses}
    queue = Queue(FLOOR_QUEUE, connection=redis, serializer=JOB_SERIALIZER)
    assert 1 <= queue.count < 5  # micro-batched: fewer jobs than requests
    assert {p["reference_id"] for job in queue.get_jobs() for p in job.kwargs["permits"]} == replies

    SimpleWorker([queue], connection=redis, serializer=JOB_SERIALIZER).work(burst=True)

    with sessions() as session:
        stored = session.scalars(select(Permit)).all()
    assert {p.reference_id for p in stored} == replies
    assert {p.plate for p in stored} == {f"FLOOR{i}" for i in range(5)}
    assert {p.client_id for p in stored} == {CLIENT.id}


@pytest.mark.parametrize("enqueue", [True, False], ids=["floor", "validate-only"])
async def test_the_floor_refuses_what_permit_push_refuses(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    enqueue: bool,
) -> None:
    app = make_app(settings, redis, enqueue=enqueue)
    client: TestClient = await aiohttp_client(app)  # type: ignore[assignment]
    assert (await client.post(PUSH_PATH, json=TOO_LONG)).status == 400
    assert (await client.post(PUSH_PATH, json=make_payload(LicencePlate=None))).status == 400
    assert redis.keys("*") == []  # nothing queued for a refused permit


async def test_validate_only_answers_without_redis(
    aiohttp_client: Callable[..., object], settings: Settings, redis: fakeredis.FakeRedis
) -> None:
    app = make_app(settings, redis, enqueue=False)
    client: TestClient = await aiohttp_client(app)  # type: ignore[assignment]
    response = await client.post(PUSH_PATH, json=make_payload())
    assert response.status == 200
    assert (await response.json())["status"] == "success"
    assert redis.keys("*") == []
