"""Batch push (1..1000, judged per index) and the per-client rate limit."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from ingest.routes import BATCH_PATH, OPENAPI_PATH, PUSH_PATH
from shared.clients import publish_tokens, set_rate_limit
from shared.config import Settings
from shared.models import Permit
from tests.factories import make_payload, permits_queue, queued_permits
from worker.context import init_context
from worker.jobs import persist_permits

BAD = {
    10: ({"LicencePlate": None}, 9006, "LicencePlate"),
    500: ({"Amount": "14.5"}, 9033, "Amount"),
    999: ({"endTime": "2018-07-02T08:00:00"}, 9005, "endTime"),
}


async def test_batch_of_1000_with_3_bad_stores_997_and_reports_the_3_by_index(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    settings: Settings,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    batch = [make_payload(apiToken=token, permitNo=f"P{i}") for i in range(1000)]
    for index, (overrides, _, _) in BAD.items():
        batch[index] = make_payload(apiToken=token, permitNo=f"P{index}", **overrides)
    response = await client.post(BATCH_PATH, json=batch)
    reply = await response.json()
    assert response.status == 200
    assert (reply["status"], reply["accepted"], reply["rejected"]) == ("partial", 997, 3)
    results = reply["results"]
    assert [r["index"] for r in results] == list(range(1000))
    errors = {r["index"]: r for r in results if r["status"] == "error"}
    assert {i: (r["ErrorCode"], set(r["errors"])) for i, r in errors.items()} == {
        i: (code, {attribute}) for i, (_, code, attribute) in BAD.items()
    }
    references = {r["reference_id"] for r in results if r["status"] == "success"}
    assert len(references) == 997
    (job,) = permits_queue(redis).get_jobs()  # the whole batch: one RQ job
    assert len(job.kwargs["permits"]) == 997
    init_context(settings)
    assert persist_permits(**job.kwargs)["stored"] == 997
    with sessions() as session:
        assert set(session.scalars(select(Permit.reference_id))) == references
        assert session.scalar(select(func.count()).select_from(Permit)) == 997


async def test_batch_items_are_judged_like_single_pushes(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    single = await (await client.post(PUSH_PATH, json=make_payload(apiToken=token))).json()
    batch = [make_payload(apiToken=token), "not an object", make_payload(apiToken="unknown-1")]
    reply = await (await client.post(BATCH_PATH, json=batch)).json()
    first, second, third = reply["results"]
    assert first["reference_id"] == single["reference_id"]  # a resend, as for single pushes
    assert (second["ErrorCode"], third["ErrorCode"]) == (9003, 9002)
    assert len(queued_permits(redis)) == 2


@pytest.mark.parametrize(
    "body", [[], {"apiToken": "x"}, [{}] * 1001], ids=["empty", "object", "too-many"]
)
async def test_batch_must_be_an_array_of_1_to_1000(
    client: TestClient, redis: fakeredis.FakeRedis, token: str, body: Any
) -> None:
    response = await client.post(BATCH_PATH, json=body)
    assert (response.status, (await response.json())["ErrorCode"]) == (400, 9003)
    assert permits_queue(redis).count == 0


async def test_rate_limit_is_per_client_with_retry_after(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    add_client: Callable[..., str],
) -> None:
    slow, other = add_client("slow"), add_client("other")
    with sessions.begin() as session:
        set_rate_limit(session, "slow", 0.1, 2)  # two at once, then one every 10 s
        session.flush()
        publish_tokens(session, redis)
    statuses = []
    for number in range(3):
        response = await client.post(
            PUSH_PATH, json=make_payload(apiToken=slow, permitNo=str(number))
        )
        statuses.append(response.status)
    assert statuses == [200, 200, 429]
    assert 1 <= int(response.headers["Retry-After"]) <= 10
    assert (await response.json())["ErrorCode"] == 9900
    assert len(queued_permits(redis)) == 2  # the refused one changed nothing
    assert (await client.post(PUSH_PATH, json=make_payload(apiToken=other))).status == 200
    batch = [make_payload(apiToken=slow, permitNo="B")]
    assert (await client.post(BATCH_PATH, json=batch)).status == 429


async def test_default_rate_applies_and_zero_means_no_limit(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    tight = dataclasses.replace(settings, rate_limit_per_s=0.01, rate_limit_burst=1)
    client: TestClient = await aiohttp_client(create_app(tight, redis=redis))
    first = await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo="1"))
    second = await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo="2"))
    assert (first.status, second.status) == (200, 429)
    redis.delete(*redis.keys("ingest:rate:*"))
    unlimited = dataclasses.replace(settings, rate_limit_per_s=0)
    client = await aiohttp_client(create_app(unlimited, redis=redis))
    for number in range(5):
        response = await client.post(
            PUSH_PATH, json=make_payload(apiToken=token, permitNo=str(number))
        )
        assert response.status == 200
    assert redis.keys("ingest:rate:*") == []  # no limit: no bucket, no Redis call


async def test_openapi_is_served(client: TestClient) -> None:
    response = await client.get(OPENAPI_PATH)
    spec = await response.json()
    assert (response.status, spec["openapi"]) == (200, "3.1.0")
    assert {
        "/api/OC-TOMA/v1/permits/push",
        "/api/OC-TOMA/v1/permits/push/batch",
        "/api/OC-TOMA/v1/permits/update",
        "/api/OC-TOMA/v1/permits/delete",
        "/api/OC-TOMA/v1/permits/active",
        "/api/OC-TOMA/v1/permits/{reference_id}",
        OPENAPI_PATH,
    } == set(spec["paths"])
