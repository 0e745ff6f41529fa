"""What the workers publish to Redis for /metrics: stored count, disconnected, dead letters."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ingest.routes import PUSH_PATH
from shared.config import Settings
from shared.constants import DB_STATS_KEY
from shared.counts import count_database
from shared.models import DeadLetter, Permit, Zone, utcnow
from shared.queue_stats import read_queue_stats
from tests.factories import make_payload, queued_permits, run_worker
from worker.context import init_context
from worker.jobs import persist_permits
from worker.stats import publish_database_counts


@pytest.fixture(autouse=True)
def worker_context(settings: Settings) -> Iterator[None]:
    context = init_context(settings)
    yield
    context.engine.dispose()


async def test_stored_permits_are_counted_once_each(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    for number in ("A", "B", "A"):  # the second A is a resend: queued again, stored once
        await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo=number))
    permits = queued_permits(redis)
    run_worker(redis)
    assert read_queue_stats(redis, ["permits"]).permits.stored_total == 2
    persist_permits(permits)  # outside RQ (no job, no connection): stores nothing new anyway
    assert read_queue_stats(redis, ["permits"]).permits.stored_total == 2


async def test_database_counts_follow_the_database(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    with sessions.begin() as session:
        session.add(Zone(name="Lot 4", name_normalized="lot 4"))
    for number, zone in enumerate(("Lot 4", "Lot 99", "lot  99", "Lot 12")):
        payload = make_payload(apiToken=token, zone=zone, permitNo=f"P{number}")
        await client.post(PUSH_PATH, json=payload)
    run_worker(redis)
    with sessions.begin() as session:
        session.add(DeadLetter(reference_id="r1", payload={}, reason="x"))
        session.add(DeadLetter(reference_id="r2", payload={}, reason="x", requeued_at=utcnow()))
    with sessions() as session:
        counts = count_database(session)
    assert (counts.disconnected, counts.dead_letters) == (3, 1)
    with sessions.begin() as session:  # a deleted permit no longer counts
        session.execute(
            update(Permit).where(Permit.zone_normalized == "lot 12").values(deleted_at=utcnow())
        )
        assert count_database(session).disconnected == 2


def test_one_worker_counts_per_interval_and_the_figures_expire(
    redis: fakeredis.FakeRedis, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        assert publish_database_counts(session, redis, interval_s=60)
        assert not publish_database_counts(session, redis, interval_s=60)  # another worker
        assert publish_database_counts(session, redis, interval_s=60, force=True)
    permits = read_queue_stats(redis, ["permits"]).permits
    assert (permits.disconnected, permits.dead_letters) == (0, 0)
    # Nobody publishes for a few intervals: the figures vanish rather than go stale.
    assert 60_000 < redis.pttl(DB_STATS_KEY) <= 4 * 60_000
