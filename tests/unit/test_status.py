"""`permit-push status`: what it reads and how it shows it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import fakeredis
from aiohttp.test_utils import TestClient
from rq import SimpleWorker
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from cli.status import render, stored_since, take_snapshot
from ingest.routes import PUSH_PATH
from shared.config import Settings
from shared.models import Permit
from tests.factories import make_payload, permits_queue, run_worker
from worker.context import init_context


async def push(client: TestClient, token: str, **overrides: str) -> None:
    response = await client.post(PUSH_PATH, json=make_payload(apiToken=token, **overrides))
    assert response.status == 200


async def test_status_shows_queue_workers_failures_stores_and_zones(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    settings: Settings,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    for number, zone in enumerate(["Lot 99", "Lot 99", "Lot 7"]):
        await push(client, token, permitNo=f"P{number}", zone=zone)
    init_context(settings)
    run_worker(redis)
    permits_queue(redis).enqueue("worker.jobs.persist_permits", permits="SECRET-PLATE")
    run_worker(redis)  # that job fails: a string is no list of permits
    await push(client, token, permitNo="waiting")
    worker = SimpleWorker([permits_queue(redis)], connection=redis, name="w1")
    worker.register_birth()
    worker.set_state("idle")

    with sessions() as session:
        text = render(take_snapshot(redis, session, "permits"))

    assert (
        "queue permits: 1 queued, 0 started, 0 deferred, 0 scheduled, 1 failed, 3 finished" in text
    )
    assert "workers on permits: 1 (1 idle)" in text and "w1  idle  permits" in text
    assert "failed jobs: 1; dead letters: 0" in text
    assert "TypeError: string indices must be integers" in text
    assert "SECRET-PLATE" not in text
    assert "permits stored in the last minute: 3" in text
    assert "disconnected permits: 3 (top 2 zone names)" in text
    assert text.index("       2  lot 99") < text.index("       1  lot 7")


async def test_stored_in_the_last_minute_reads_only_recent_rows(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    settings: Settings,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    for number in range(5):
        await push(client, token, permitNo=f"P{number}")
    init_context(settings)
    run_worker(redis)
    now = datetime.now(UTC)
    with sessions.begin() as session:  # the first three were stored long ago
        session.execute(
            update(Permit).where(Permit.id <= 3).values(stored_at=now - timedelta(hours=2))
        )
    with sessions() as session:
        assert stored_since(session, now - timedelta(minutes=1)) == 2
        assert stored_since(session, now - timedelta(hours=3)) == 5
        assert stored_since(session, now + timedelta(seconds=1)) == 0
