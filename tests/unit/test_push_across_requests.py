"""Pushes across requests: batching, resends, tokens, outages (one request: test_push_contract)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import Callable

import fakeredis
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from ingest.permit_enqueuer import new_reference_ids
from ingest.routes import PUSH_PATH
from shared.clients import change_and_publish, revoke_client
from shared.config import Settings
from shared.constants import DATA_LOSS_KEY, TOKENS_KEY, TOKENS_LOADED_KEY
from shared.redis import make_receiver_redis
from tests.factories import make_payload, permits_queue, queued_permits


async def receiver(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    **changes: object,
) -> TestClient:
    """A test client of a receiver with ``changes`` to the settings, on ``redis``."""
    app = create_app(dataclasses.replace(settings, **changes), redis=redis)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def test_pushes_arriving_together_share_one_job(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    client = await receiver(aiohttp_client, settings, redis, batch_window_ms=50)
    responses = await asyncio.gather(
        *(
            client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo=f"P{i}"))
            for i in range(20)
        )
    )
    references = {(await r.json())["reference_id"] for r in responses}
    assert [r.status for r in responses] == [200] * 20
    assert len(references) == 20
    assert permits_queue(redis).count == 1  # one RQ job carries the whole micro-batch
    assert {p["reference_id"] for p in queued_permits(redis)} == references


async def test_batch_size_limit_splits_batches(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    app = create_app(
        dataclasses.replace(settings, batch_window_ms=200, batch_max_permits=5), redis=redis
    )
    client: TestClient = await aiohttp_client(app)  # type: ignore[assignment]
    responses = await asyncio.gather(
        *(
            client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo=f"P{i}"))
            for i in range(10)
        )
    )
    assert [r.status for r in responses] == [200] * 10
    assert [len(job.kwargs["permits"]) for job in permits_queue(redis).get_jobs()] == [5, 5]


async def test_resend_gets_the_first_reference_id(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    first = await (await client.post(PUSH_PATH, json=make_payload(apiToken=token))).json()
    # Same permit, plate written differently: still the same permit.
    again = await (
        await client.post(PUSH_PATH, json=make_payload(apiToken=token, LicencePlate="pl8 rdr"))
    ).json()
    assert again["reference_id"] == first["reference_id"]
    other = await (
        await client.post(PUSH_PATH, json=make_payload(apiToken=token, zone="Lot 5"))
    ).json()
    assert other["reference_id"] != first["reference_id"]


async def test_concurrent_identical_pushes_get_one_reference(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    responses = await asyncio.gather(
        *(client.post(PUSH_PATH, json=make_payload(apiToken=token)) for _ in range(10))
    )
    assert len({(await r.json())["reference_id"] for r in responses}) == 1


async def test_idempotency_key_decides_and_refuses_another_body(
    client: TestClient, token: str
) -> None:
    headers = {"Idempotency-Key": "meter-7-sale-991"}
    first = await client.post(PUSH_PATH, json=make_payload(apiToken=token), headers=headers)
    again = await client.post(PUSH_PATH, json=make_payload(apiToken=token), headers=headers)
    assert (await first.json())["reference_id"] == (await again.json())["reference_id"]
    changed = await client.post(
        PUSH_PATH, json=make_payload(apiToken=token, Amount="99.00"), headers=headers
    )
    assert changed.status == 422
    assert (await changed.json())["status"] == "error"


async def test_tokens_are_per_client(
    client: TestClient, add_client: Callable[..., str], token: str
) -> None:
    other = add_client("pay-stations", "Temporary")
    a = await (await client.post(PUSH_PATH, json=make_payload(apiToken=token))).json()
    b = await (await client.post(PUSH_PATH, json=make_payload(apiToken=other))).json()
    assert a["reference_id"] != b["reference_id"]


async def test_client_permit_type_travels_with_the_permit(
    client: TestClient, redis: fakeredis.FakeRedis, add_client: Callable[..., str]
) -> None:
    validator = add_client("validators", "Validator")
    assert (await client.post(PUSH_PATH, json=make_payload(apiToken=validator))).status == 200
    (permit,) = queued_permits(redis)
    assert permit["permit_type"] == "Validator"


async def test_revoked_token_is_refused_after_the_cache_expires(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    client = await receiver(aiohttp_client, settings, redis, token_cache_s=0.05)
    assert (await client.post(PUSH_PATH, json=make_payload(apiToken=token))).status == 200
    redis.delete(TOKENS_KEY)  # what publish_tokens does once no client is active
    await asyncio.sleep(0.1)
    response = await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo="2"))
    assert response.status == 401


async def test_no_token_set_and_no_database_is_503_not_401(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    client = await receiver(aiohttp_client, settings, redis, read_database_url="none")
    redis.flushall()  # Redis restarted without its data, workers have not re-published yet
    response = await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    assert response.status == 503
    assert response.headers["Retry-After"] == "2"
    assert not redis.exists(TOKENS_LOADED_KEY)
    assert redis.llen(DATA_LOSS_KEY) == 1  # the workers are told at once


async def test_a_lost_token_set_keeps_the_last_one_read_and_a_revocation_still_counts(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    client = await receiver(
        aiohttp_client, settings, redis, read_database_url="none", token_cache_s=0.05
    )
    assert (await client.post(PUSH_PATH, json=make_payload(apiToken=token))).status == 200
    redis.flushall()  # data loss, not a revocation
    await asyncio.sleep(0.1)
    response = await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo="2"))
    assert response.status == 200, await response.text()
    assert redis.llen(DATA_LOSS_KEY) == 1
    # A revoke (the CLI's own path) publishes the set again, without the revoked client.
    change_and_publish(sessions, redis, lambda session: revoke_client(session, "meters"))
    await asyncio.sleep(0.1)
    response = await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo="3"))
    assert response.status == 401


async def test_while_the_set_is_lost_the_database_stands_in_so_a_revocation_counts(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    client = await receiver(aiohttp_client, settings, redis, token_cache_s=0.05)
    assert (await client.post(PUSH_PATH, json=make_payload(apiToken=token))).status == 200
    # Revoked and published, and Redis loses it at once, before this receiver read it.
    change_and_publish(sessions, redis, lambda session: revoke_client(session, "meters"))
    redis.flushall()
    await asyncio.sleep(0.1)
    response = await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo="2"))
    assert response.status == 401  # the database's set, not the last one read
    assert redis.llen(DATA_LOSS_KEY) == 1


async def test_no_token_set_and_a_database_that_fails_is_503(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    # Port 1 on loopback: the database refuses at once.
    broken = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    client = await receiver(aiohttp_client, settings, redis, read_database_url=broken)
    redis.flushall()
    response = await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    assert response.status == 503
    assert response.headers["Retry-After"] == "2"
    assert redis.llen(DATA_LOSS_KEY) == 1


@pytest.mark.parametrize(
    "redis_url",
    # Port 1 on loopback: connections are refused at once; the timeout bounds the rest.
    # The Sentinel form: no Sentinel answers, so there is no primary (a failover's gap).
    ["redis://127.0.0.1:1/0", "redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster/0"],
)
async def test_redis_unreachable_is_503_within_two_seconds(
    aiohttp_client: Callable[..., object], settings: Settings, redis_url: str
) -> None:
    dead = dataclasses.replace(settings, redis_url=redis_url, redis_timeout_s=0.5)
    client: TestClient = await aiohttp_client(create_app(dead, redis=make_receiver_redis(dead)))
    started = asyncio.get_running_loop().time()
    response = await client.post(PUSH_PATH, json=make_payload())
    elapsed = asyncio.get_running_loop().time() - started
    assert response.status == 503
    assert (await response.json())["ErrorCode"] == 9901
    assert int(response.headers["Retry-After"]) > 0
    assert elapsed < 2


async def test_request_id_is_echoed(client: TestClient, token: str) -> None:
    response = await client.post(
        PUSH_PATH, json=make_payload(apiToken=token), headers={"X-Request-ID": "abc-123"}
    )
    assert response.headers["X-Request-ID"] == "abc-123"


async def test_a_time_at_the_edge_of_the_calendar_fails_only_its_own_request(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    # In a zone west of UTC, 9999-12-31T22:00 would overflow when made UTC in the enqueue.
    toronto = dataclasses.replace(settings, default_timezone="America/Toronto", batch_window_ms=50)
    client: TestClient = await aiohttp_client(create_app(toronto, redis=redis))  # type: ignore[assignment]
    good, bad = await asyncio.gather(
        client.post(PUSH_PATH, json=make_payload(apiToken=token)),
        client.post(
            PUSH_PATH,
            json=make_payload(apiToken=token, endTime="9999-12-31T22:00:00", permitNo="edge"),
        ),
    )
    assert good.status == 200
    assert (bad.status, (await bad.json())["ErrorCode"]) == (400, 9005)
    (permit,) = queued_permits(redis)
    assert permit["starts_at"] == "2018-07-02T13:00:00+00:00"  # 09:00 in Toronto (EDT)


def test_reference_ids_of_a_batch_are_distinct_version_4_uuids() -> None:
    ids = new_reference_ids(1000)
    assert len({str(i) for i in ids}) == 1000
    assert {(i.version, i.variant) for i in ids} == {(4, uuid.RFC_4122)}


async def test_request_ids_are_32_hex_digits_and_distinct(client: TestClient, token: str) -> None:
    seen = set()
    for _ in range(3):
        response = await client.post(PUSH_PATH, json=make_payload(apiToken=token))
        assert re.fullmatch("[0-9a-f]{32}", response.headers["X-Request-ID"])
        seen.add(response.headers["X-Request-ID"])
    assert len(seen) == 3
