"""The per-client rate limit: a token bucket per client, 429 + Retry-After."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import fakeredis
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from ingest.routes import BATCH_PATH, PUSH_PATH
from shared.clients import publish_tokens, set_rate_limit
from shared.config import Settings
from tests.factories import make_payload, queued_permits


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
