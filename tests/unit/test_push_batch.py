"""Batch push: 1..1000 permits, each judged on its own, results per index."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ingest.routes import BATCH_PATH, PUSH_PATH
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


async def test_a_batch_whose_entries_carry_no_token_is_9001_not_9002(
    client: TestClient, redis: fakeredis.FakeRedis
) -> None:
    """A missing token is "missing" (9001), as for a single push, not "not permitted"."""
    body = [make_payload(apiToken=None), make_payload(apiToken=None, permitNo="2")]
    response = await client.post(BATCH_PATH, json=body)
    reply = await response.json()
    assert (response.status, reply["ErrorCode"]) == (400, 9001), reply
    assert reply["errors"] == {"apiToken": ["Is required."]}
    assert permits_queue(redis).count == 0
