"""The bench's floor receiver writes jobs that permit-push's worker stores: it does the
design's real work, so its rate is a fair ceiling (bench/servers/floor.py)."""

from __future__ import annotations

import asyncio
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


@pytest.fixture
def worker_context(settings: Settings) -> Iterator[None]:
    context = init_context(settings)
    yield
    context.engine.dispose()


async def test_the_floors_replies_name_permits_a_worker_stores(
    aiohttp_client: Callable[..., object],
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    worker_context: None,
    add_client: Callable[..., str],
) -> None:
    add_client()  # the floor's jobs name client 1, the first one made
    client: TestClient = await aiohttp_client(make_app(redis))  # type: ignore[assignment]
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


async def test_validate_only_answers_without_redis(
    aiohttp_client: Callable[..., object], redis: fakeredis.FakeRedis
) -> None:
    client: TestClient = await aiohttp_client(make_app(redis, enqueue=False))  # type: ignore[assignment]
    response = await client.post(PUSH_PATH, json=make_payload())
    assert response.status == 200
    assert (await response.json())["status"] == "success"
    assert redis.keys("*") == []
