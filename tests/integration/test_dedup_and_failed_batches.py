"""Concurrent identical pushes (one id, one row) and `permit-push failed`, on real services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from redis import Redis
from rq import SimpleWorker
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cli import main
from ingest.app import create_app
from ingest.routes import PUSH_PATH
from shared.config import Settings
from shared.constants import REFERENCE_KEY_PREFIX
from shared.models import DeadLetter, Permit
from shared.queue import JOB_RETRY
from shared.redis import make_receiver_redis
from tests.factories import make_payload, permits_queue, queued_permits
from worker.context import init_context
from worker.jobs import persist_permits


@pytest.fixture
def token(pg_token: str) -> str:
    return pg_token


@pytest.fixture
def worker_context(pg_settings: Settings) -> Iterator[None]:
    context = init_context(pg_settings)
    yield
    context.engine.dispose()


def rows(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


async def test_ten_concurrent_identical_pushes_one_id_one_row(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    token: str,
    worker_context: None,
) -> None:
    app = create_app(pg_settings, redis=make_receiver_redis(pg_settings))
    client: TestClient = await aiohttp_client(app)
    body = make_payload(apiToken=token)
    # Two waves: the same micro-batch, and separate batches racing on the claim.
    replies = await asyncio.gather(*(client.post(PUSH_PATH, json=body) for _ in range(5)))
    for _ in range(5):
        replies.append(await client.post(PUSH_PATH, json=body))
    assert [r.status for r in replies] == [200] * 10
    assert len({(await r.json())["reference_id"] for r in replies}) == 1
    SimpleWorker(
        [permits_queue(real_redis)], connection=real_redis, serializer=JSONSerializer
    ).work(burst=True)
    assert rows(pg_sessions, Permit) == 1


def test_failed_list_show_requeue(
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    token: str,
    worker_context: None,
) -> None:
    env = {"REDIS_URL": pg_settings.redis_url, "DATABASE_URL": pg_settings.database_url}
    cli = CliRunner()
    # A dead letter: one row the database refuses.
    queue = permits_queue(real_redis)
    bad = {**_job_permit("bad-amount"), "amount": "not a number"}
    assert persist_permits([bad])["dead_lettered"] == 1
    # A failed batch: retries used up.
    job = queue.enqueue_call("worker.jobs.no_such_job", kwargs={"permits": [_job_permit("x")]})
    SimpleWorker([queue], connection=real_redis, serializer=JSONSerializer).work(burst=True)
    assert job.id in FailedJobRegistry(queue=queue)

    listed = cli.invoke(main, ["failed", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "failed batches: 1" in listed.output and job.id in listed.output
    assert "dead letters: 1" in listed.output and "InvalidOperation" in listed.output
    with pg_sessions() as session:
        letter_id = session.scalar(select(DeadLetter.id))
    shown = cli.invoke(main, ["failed", "show", str(letter_id)], env=env)
    assert shown.exit_code == 0 and "not a number" in shown.output
    shown = cli.invoke(main, ["failed", "show", job.id], env=env)
    assert shown.exit_code == 0 and "1 permits" in shown.output

    requeued = cli.invoke(main, ["failed", "requeue", "--all"], env=env)
    assert requeued.exit_code == 0, requeued.output
    assert FailedJobRegistry(queue=queue).count == 0
    assert len(queued_permits(real_redis)) == 2
    listed = cli.invoke(main, ["failed", "list"], env=env)
    assert "failed batches: 0" in listed.output and "dead letters: 0" in listed.output
    missing = cli.invoke(main, ["failed", "show", "999999"], env=env)
    assert missing.exit_code == 1 and "no dead letter" in missing.output


def test_a_requeued_dead_letter_is_enqueued_like_any_create(
    pg_settings: Settings, real_redis: Redis, token: str, worker_context: None
) -> None:
    """Its owner goes back to Redis (an update is accepted while it waits) and it keeps
    the batches' retry policy (a killed worker's run is re-run)."""
    bad = {**_job_permit("bad-amount"), "amount": "not a number"}
    assert persist_permits([bad])["dead_lettered"] == 1
    real_redis.flushdb()  # the owner key written with the first enqueue is long gone
    env = {"REDIS_URL": pg_settings.redis_url, "DATABASE_URL": pg_settings.database_url}
    requeued = CliRunner().invoke(main, ["failed", "requeue", "--all"], env=env)
    assert requeued.exit_code == 0, requeued.output
    assert real_redis.get(REFERENCE_KEY_PREFIX + bad["reference_id"]) == b"1"
    (job,) = permits_queue(real_redis).get_jobs()
    assert job.retries_left == JOB_RETRY.max


def _job_permit(reference: str) -> dict[str, Any]:
    return {
        "reference_id": str(uuid4()),
        "client_id": 1,
        "permit_type": "Standard",
        "plate": "PL8RDR",
        "plate_normalized": "PL8RDR",
        "zone": "Lot 4",
        "zone_normalized": "lot 4",
        "permit_no": reference,
        "amount": "14.50",
        "currency": "CAD",
        "start_raw": "2018-07-02T09:00:00",
        "end_raw": "2018-07-02T09:30:00",
        "starts_at": "2018-07-02T09:00:00+00:00",
        "ends_at": "2018-07-02T09:30:00+00:00",
        "received_at": "2018-07-02T09:00:01+00:00",
    }
