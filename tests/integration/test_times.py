"""Permit times, on the real Redis (issue 13, "Time"): bounded durations, sane dates, and
local times that name no single instant refused under a DEFAULT_TIMEZONE with DST.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from aiohttp.test_utils import TestClient
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from ingest.routes import BATCH_PATH, PUSH_PATH, UPDATE_PATH
from shared.clients import create_client, publish_tokens
from shared.config import Settings
from tests.factories import make_payload, queued_permits


async def receiver(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    sessions: sessionmaker[Session],
    redis: Redis,
) -> tuple[TestClient, str]:
    with sessions.begin() as session:
        token = create_client(session, "meters")
        session.flush()
        publish_tokens(session, redis)
    client: TestClient = await aiohttp_client(create_app(settings, redis=redis))
    return client, token


async def refused(client: TestClient, body: dict[str, str]) -> tuple[int, int, dict[str, Any]]:
    reply = await client.post(PUSH_PATH, json=body)
    error = await reply.json()
    return reply.status, error.get("ErrorCode"), error.get("errors", {})


async def test_a_permit_lasts_at_most_max_permit_days_and_its_dates_are_sane(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
) -> None:
    client, token = await receiver(aiohttp_client, pg_settings, pg_sessions, real_redis)

    def permit(start: str, end: str, **names: str) -> dict[str, str]:  # names: as sent
        body = make_payload(apiToken=token, permitNo=str(uuid4()))
        del body["startTime"], body["endTime"]
        return {
            **body,
            names.get("start_as", "startTime"): start,
            names.get("end_as", "endTime"): end,
        }

    year = permit("2026-01-01T00:00:00", "2027-01-02T00:00:00")  # 366 days: the default
    assert (await client.post(PUSH_PATH, json=year)).status == 200
    status, code, errors = await refused(
        client, permit("2026-01-01T00:00:00", "2027-01-02T00:00:01")
    )
    assert (status, code) == (400, 9005)
    assert errors["endTime"] == ["Must be at most 366 days after the start time."]
    # Under the name it was sent as.
    _, code, errors = await refused(
        client, permit("2026-01-01T00:00:00", "2030-01-01T00:00:00", end_as="EndDateUtc")
    )
    assert (code, list(errors)) == (9005, ["EndDateUtc"])

    for start, end, expected, name in (
        ("1999-12-31T23:00:00", "2000-01-01T01:00:00", 9007, "startTime"),
        ("0002-01-01T00:00:00", "0002-01-01T01:00:00", 9005, "startTime"),  # both: 9005 first
        ("2099-12-31T23:00:00", "2100-01-01T01:00:00", 9005, "endTime"),
    ):
        status, code, errors = await refused(client, permit(start, end))
        assert (status, code) == (400, expected), (start, end, errors)
        assert errors[name] == ["Must be a time from 2000-01-01T00:00:00 to 2099-12-31T23:59:59."]
    batch = await client.post(
        BATCH_PATH, json=[permit("2026-01-01T00:00:00", "2028-01-01T00:00:00")]
    )
    assert (await batch.json())["results"][0]["ErrorCode"] == 9005

    # The bound is a setting.
    short = dataclasses.replace(pg_settings, max_permit_days=1)
    other: TestClient = await aiohttp_client(create_app(short, redis=real_redis))
    reply = await other.post(PUSH_PATH, json=permit("2026-01-01T00:00:00", "2026-01-02T00:00:01"))
    assert (reply.status, (await reply.json())["errors"]["endTime"]) == (
        400,
        ["Must be at most 1 days after the start time."],
    )
    assert len(queued_permits(real_redis)) == 1


async def test_a_local_time_in_a_dst_gap_or_overlap_is_refused_with_its_reason(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
) -> None:
    toronto = dataclasses.replace(pg_settings, default_timezone="America/Toronto")
    client, token = await receiver(aiohttp_client, toronto, pg_sessions, real_redis)

    def permit(start: str, end: str) -> dict[str, str]:
        return {
            **make_payload(apiToken=token, permitNo=str(uuid4())),
            "startTime": start,
            "endTime": end,
        }

    # 2026-03-08 02:00 -> 03:00 (spring forward): 02:30 never happens in Toronto.
    status, code, errors = await refused(
        client, permit("2026-03-08T02:30:00", "2026-03-08T04:00:00")
    )
    assert (status, code) == (400, 9007)
    assert errors["startTime"] == [
        "Does not exist in America/Toronto: the clocks skip it (daylight saving time)."
    ]
    # 2026-11-01 02:00 -> 01:00 (fall back): 01:30 happens twice.
    status, code, errors = await refused(
        client, permit("2026-11-01T00:30:00", "2026-11-01T01:30:00")
    )
    assert (status, code) == (400, 9005)
    assert errors["endTime"] == [
        "Is ambiguous in America/Toronto: the clocks pass it twice (daylight saving time)."
    ]
    # An update's new end time likewise.
    update = {"apiToken": token, "referenceID": str(uuid4()), "endTime": "2026-03-08T02:15:00"}
    reply = await client.post(UPDATE_PATH, json=update)
    assert (reply.status, (await reply.json())["ErrorCode"]) == (400, 9005)
    # Around them, times are taken, converted with the offset of that moment.
    ok = await client.post(PUSH_PATH, json=permit("2026-03-08T01:30:00", "2026-03-08T03:30:00"))
    assert ok.status == 200, await ok.text()
    [queued] = queued_permits(real_redis)
    assert (queued["starts_at"], queued["ends_at"]) == (
        "2026-03-08T06:30:00+00:00",
        "2026-03-08T07:30:00+00:00",
    )
