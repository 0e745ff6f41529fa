"""Update order numbers after Redis lost or rewound its counter, and clashes, on the real
Redis and PostgreSQL (issue 13, "Update order").

The receiver's ``set nx`` from the clock covers a counter that is gone, from a clock
that is right. It does not cover a counter Redis brought back from an older snapshot
(the key exists, so ``nx`` does nothing), nor a database holding numbers above the clock
(a receiver whose clock ran ahead). And an operation whose (reference id, seq) was
already taken was skipped as a re-run job: a 200, then nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from redis import Redis
from rq.job import Job
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cli import main
from ingest.app import create_app
from ingest.routes import PUSH_PATH, UPDATE_PATH
from shared.config import Settings
from shared.constants import OPERATION_SEQ_KEY
from shared.models import DeadLetter, PermitOperation
from shared.operations import OperationJob
from tests.factories import make_payload, permits_queue, run_worker
from worker.context import init_context
from worker.operations import apply_batch, raise_operation_counter


@pytest.fixture
def worker_context(pg_settings: Settings) -> Iterator[None]:
    context = init_context(pg_settings)
    yield
    context.engine.dispose()


def queued_seqs(redis: Redis) -> list[int]:
    jobs = [
        Job.fetch(i, connection=redis, serializer=permits_queue(redis).serializer)
        for i in permits_queue(redis).job_ids
    ]
    return [op["seq"] for job in jobs for op in job.kwargs.get("operations", [])]


async def test_order_numbers_never_go_backwards_after_redis_rewound_or_lost_its_counter(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    pg_token: str,
) -> None:
    token = pg_token
    client: TestClient = await aiohttp_client(create_app(pg_settings, redis=real_redis))
    push = await (await client.post(PUSH_PATH, json=make_payload(apiToken=token))).json()
    update = {"apiToken": token, "referenceID": push["reference_id"]}

    async def number(amount: str) -> int:
        reply = await client.post(UPDATE_PATH, json={**update, "Amount": amount})
        assert reply.status == 200, await reply.text()
        return queued_seqs(real_redis)[-1]

    first = await number("1.00")
    # Redis restarts from a snapshot taken before: the key is there, with an old value.
    real_redis.set(OPERATION_SEQ_KEY, 5)
    second = await number("2.00")
    assert second > first, (first, second)

    # A receiver whose clock ran a year ahead numbered operations the database recorded;
    # then Redis lost its data. The workers raise the counter above the database's.
    ahead = time.time_ns() // 1000 + 365 * 24 * 3600 * 10**6
    with pg_sessions.begin() as session:
        session.add(
            PermitOperation(
                reference_id=push["reference_id"],
                client_id=1,
                seq=ahead,
                kind="update",
                changes={"amount": "3.00"},
                state="parked",
                received_at=datetime.now(UTC),
            )
        )
    real_redis.delete(OPERATION_SEQ_KEY)
    with pg_sessions() as session:
        raise_operation_counter(session, real_redis)
    third = await number("4.00")
    assert third > ahead, (ahead, third)


def test_an_operation_whose_order_number_is_taken_is_dead_lettered_not_dropped(
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    worker_context: None,
) -> None:
    reference_id = str(uuid4())

    def operation(amount: str) -> OperationJob:
        return OperationJob(
            reference_id=reference_id,
            client_id=1,
            seq=7,
            kind="update",
            changes={"amount": amount},
            received_at=datetime.now(UTC).isoformat(),
            create_expected=True,
        )

    original = operation("1.00")
    with pg_sessions() as session:
        apply_batch(session, [original])
        apply_batch(session, [original])  # a re-run job: nothing new, nothing dead
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(DeadLetter)) == 0
    with pg_sessions() as session:
        apply_batch(session, [operation("2.00")])  # another operation, same number
    with pg_sessions() as session:
        letters = session.scalars(select(DeadLetter)).all()
        assert [(d.reference_id, d.payload["changes"]) for d in letters] == [
            (reference_id, {"amount": "2.00"})
        ]
        assert "seq 7" in letters[0].reason
    # `failed requeue` applies it under a new number (as received now).
    env = {"REDIS_URL": pg_settings.redis_url, "DATABASE_URL": pg_settings.database_url}
    requeued = CliRunner().invoke(main, ["failed", "requeue", str(letters[0].id)], env=env)
    assert requeued.exit_code == 0, requeued.output
    run_worker(real_redis)
    with pg_sessions() as session:
        seqs = session.scalars(
            select(PermitOperation.seq).where(PermitOperation.reference_id == reference_id)
        ).all()
        changes = session.scalars(
            select(PermitOperation.changes).where(PermitOperation.seq > 7)
        ).all()
    assert len(seqs) == 2 and changes == [{"amount": "2.00"}]
