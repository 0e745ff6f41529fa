"""A permit is stored once, ever: after Redis forgot it, past the window, with or without an
Idempotency-Key, and when the receiver could not know the first id (aliases)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import fakeredis
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from ingest.memory import RedisMemory
from ingest.permit_enqueuer import PermitEnqueuer
from ingest.read_store_sql import SqlReadStore
from ingest.routes import API_PREFIX, DELETE_PATH, PUSH_PATH, UPDATE_PATH
from shared.config import Settings
from shared.constants import REFERENCE_KEY_PREFIX, SEEN_KEY_PREFIX
from shared.errors import QueueFullError, ReadsUnavailableError
from shared.models import Permit, PermitAlias
from tests.factories import make_payload, permits_queue, run_worker
from worker.context import init_context

KEY = {"Idempotency-Key": "meter-7-sale-991"}


@pytest.fixture(autouse=True)
def worker_context(settings: Settings) -> Iterator[None]:
    context = init_context(settings)
    yield
    context.engine.dispose()


def run_all(redis: fakeredis.FakeRedis) -> None:
    """Run every queued job in order, through RQ (a burst SimpleWorker)."""
    run_worker(redis)


async def push(
    client: TestClient, token: str, headers: dict[str, str] | None = None, **overrides: Any
) -> tuple[int, Any]:
    payload = make_payload(apiToken=token, **overrides)
    response = await client.post(PUSH_PATH, json=payload, headers=headers)
    return response.status, await response.json()


@contextlib.contextmanager
def counting_reads() -> Iterator[list[object]]:
    """Every first-id read the receiver makes meanwhile (its keys)."""
    calls: list[object] = []
    original = SqlReadStore._first_ids_sync

    def counted(self: SqlReadStore, keys: list[tuple[int, str]]) -> Any:
        calls.append(keys)
        return original(self, keys)

    with mock.patch.object(SqlReadStore, "_first_ids_sync", counted):
        yield calls


def rows(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(Permit.reference_id)))


def forget(redis: fakeredis.FakeRedis) -> None:
    """Redis loses its data (a restart without persistence), tokens republished after."""
    tokens = {key: redis.dump(key) for key in redis.keys("ingest:tokens*")}
    redis.flushdb()
    for key, value in tokens.items():
        redis.restore(key, 0, value)


async def test_resend_after_redis_forgot_gets_the_first_id_from_the_database(
    client: TestClient, redis: fakeredis.FakeRedis, token: str, sessions: sessionmaker[Session]
) -> None:
    status, first = await push(client, token)
    assert status == 200
    run_all(redis)
    forget(redis)
    status, again = await push(client, token)
    assert (status, again["reference_id"]) == (200, first["reference_id"])
    assert permits_queue(redis).count == 0  # stored already: nothing enqueued again
    run_all(redis)
    assert rows(sessions) == [first["reference_id"]]
    # Redis learnt the id back: the next resend is answered with the database away.
    away = ReadsUnavailableError("away")
    with mock.patch.object(SqlReadStore, "_first_ids_sync", side_effect=away):
        status, third = await push(client, token)
    assert (status, third["reference_id"]) == (200, first["reference_id"])


async def test_resend_past_the_window_is_answered_by_one_read_per_batch(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
    sessions: sessionmaker[Session],
) -> None:
    app = create_app(dataclasses.replace(settings, batch_window_ms=50), redis=redis)
    client = await aiohttp_client(app)
    refs = [(await push(client, token, permitNo=f"P{i}"))[1]["reference_id"] for i in range(5)]
    run_all(redis)
    forget(redis)  # as if the window had passed
    with counting_reads() as calls:
        replies = await asyncio.gather(
            *(push(client, token, permitNo=f"P{i}") for i in range(5)),
            push(client, token, permitNo="NEW"),
        )
    assert [reply["reference_id"] for _, reply in replies[:5]] == refs
    assert [len(keys) for keys in calls] == [6]  # ONE read for the batch of six
    run_all(redis)
    assert len(rows(sessions)) == 6


async def test_with_and_without_an_idempotency_key_is_one_permit(
    client: TestClient, redis: fakeredis.FakeRedis, token: str, sessions: sessionmaker[Session]
) -> None:
    _, keyed = await push(client, token, headers=KEY)
    _, plain = await push(client, token)
    assert plain["reference_id"] == keyed["reference_id"]
    _, other_permit = await push(client, token, permitNo="L4-2000")
    _, plain_first = await push(
        client, token, headers={"Idempotency-Key": "k2"}, permitNo="L4-2000"
    )
    assert plain_first["reference_id"] == other_permit["reference_id"]
    status, changed = await push(client, token, headers=KEY, Amount="99.00")
    assert status == 422, changed
    run_all(redis)
    assert sorted(rows(sessions)) == sorted({keyed["reference_id"], other_permit["reference_id"]})
    # After Redis forgot: the key-then-no-key permit is still one row, with its first id.
    forget(redis)
    _, late = await push(client, token)
    assert late["reference_id"] == keyed["reference_id"]
    _, late_keyed = await push(client, token, headers=KEY)
    assert late_keyed["reference_id"] == keyed["reference_id"]
    run_all(redis)
    assert len(rows(sessions)) == 2


async def test_resend_while_the_database_is_away_becomes_an_alias_of_the_first(
    client: TestClient, redis: fakeredis.FakeRedis, token: str, sessions: sessionmaker[Session]
) -> None:
    _, first = await push(client, token)
    run_all(redis)
    forget(redis)
    away = ReadsUnavailableError("away")
    with mock.patch.object(SqlReadStore, "_first_ids_sync", side_effect=away):
        status, second = await push(client, token)
    assert status == 200
    first_id, second_id = first["reference_id"], second["reference_id"]
    assert second_id != first_id  # the receiver could not know the first
    # An update through the second id, sent before its create is stored, waits for it.
    status, _ = await _post(client, UPDATE_PATH, token, second_id, Amount="20.00")
    assert status == 200
    run_all(redis)
    assert rows(sessions) == [first_id]
    with sessions() as session:
        alias = session.get(PermitAlias, second_id)
        assert alias is not None and alias.permit_reference_id == first_id
        assert session.scalars(select(Permit.amount)).one() == 20
    assert redis.get(REFERENCE_KEY_PREFIX + second_id) is None  # stored: owner key gone
    for reference_id in (first_id, second_id):
        body = await _status(client, token, reference_id)
        assert body["permit_status"] == "disconnected"  # stored; "Lot 4" is no zone here
        assert body["permit"]["reference_id"] == first_id
        assert [o["state"] for o in body["operations"]] == ["applied"]
    # Update and delete through the alias, now that Redis knows neither id.
    status, _ = await _post(client, UPDATE_PATH, token, second_id, Amount="30.00")
    assert status == 200
    status, _ = await _post(client, DELETE_PATH, token, second_id)
    assert status == 200
    run_all(redis)
    body = await _status(client, token, first_id)
    assert body["permit_status"] == "deleted"
    assert body["permit"]["Amount"] == "30.00"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Permit)) == 1


async def test_a_redis_without_the_claim_script_loads_it_and_answers(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    _, first = await push(client, token)
    redis.script_flush()  # as after a Redis restart
    status, again = await push(client, token)
    assert (status, again["reference_id"]) == (200, first["reference_id"])


async def test_the_first_id_read_runs_while_redis_claims_the_ids(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    """A lone push waits for the slower of its two lookups, not for both in turn."""
    read, claim = SqlReadStore._first_ids_sync, PermitEnqueuer._run_claim

    def slow_read(self: SqlReadStore, keys: list[tuple[int, str]]) -> Any:
        time.sleep(0.3)
        return read(self, keys)

    def slow_claim(self: PermitEnqueuer, *args: Any) -> Any:
        time.sleep(0.3)
        return claim(self, *args)

    with (
        mock.patch.object(SqlReadStore, "_first_ids_sync", slow_read),
        mock.patch.object(PermitEnqueuer, "_run_claim", slow_claim),
    ):
        started = time.monotonic()
        status, _ = await push(client, token)
        took_s = time.monotonic() - started
    assert status == 200
    assert 0.3 <= took_s < 0.55, took_s  # one after the other: 0.6 s at least


async def test_a_batch_refused_by_redis_leaves_no_first_id_read_queued(
    client: TestClient, redis: fakeredis.FakeRedis, token: str, settings: Settings
) -> None:
    """The read starts before the claim; when the claim fails, a read still waiting for a
    read thread is dropped, not left for the status and lookup reads to queue behind."""
    hold, calls = threading.Event(), []

    def held(self: SqlReadStore, keys: list[tuple[int, str]]) -> Any:
        calls.append(keys)
        hold.wait(5)
        return []

    def refused(self: PermitEnqueuer, *args: Any) -> Any:
        raise QueueFullError("full")

    pushes = settings.read_threads + 6
    with (
        mock.patch.object(SqlReadStore, "_first_ids_sync", held),
        mock.patch.object(PermitEnqueuer, "_run_claim", refused),
    ):
        statuses = [(await push(client, token, permitNo=f"F{i}"))[0] for i in range(pushes)]
        hold.set()
        await asyncio.sleep(0.2)  # any read still queued would run now
    assert statuses == [503] * pushes
    assert len(calls) <= settings.read_threads  # only those a thread had already taken


async def test_a_hung_database_does_not_hold_up_pushes(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    quick = dataclasses.replace(settings, dedup_read_timeout_s=0.2)
    client = await aiohttp_client(create_app(quick, redis=redis))

    def hung(self: SqlReadStore, keys: list[tuple[int, str]]) -> Any:
        time.sleep(2)  # longer than the timeout; the read thread is simply held
        raise ReadsUnavailableError("hung")

    started = time.monotonic()
    with mock.patch.object(SqlReadStore, "_first_ids_sync", hung):
        status, body = await push(client, token)
    assert status == 200, body
    assert time.monotonic() - started < 1.5


async def test_redis_holds_small_hash_buckets_for_the_window_only(
    client: TestClient, redis: fakeredis.FakeRedis, token: str, settings: Settings
) -> None:
    await push(client, token, headers=KEY)
    run_all(redis)
    window = settings.dedup_window_s
    buckets = list(redis.scan_iter(f"{SEEN_KEY_PREFIX}*"))
    assert buckets and all(redis.type(key) == b"hash" for key in buckets)
    for key in buckets:
        assert 0 < redis.ttl(key) <= 2 * window
        for field, value in redis.hgetall(key).items():
            assert len(field) == 16 and len(value) in (16, 32)
    assert redis.keys(REFERENCE_KEY_PREFIX + "*") == []  # stored: no owner key left
    assert redis.keys("ingest:dedup:*") == redis.keys("ingest:idem:*") == []


async def test_redis_near_its_memory_limit_refuses_with_503_and_writes_nothing(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    def full(self: RedisMemory) -> None:
        self.used, self.limit = 950, 1000

    with mock.patch.object(RedisMemory, "read", full):
        app = client.server.app
        assert app is not None
        await _wait_for_reading()
        before = set(redis.keys("*"))
        response = await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    assert response.status == 503, await response.text()
    assert (await response.json())["ErrorCode"] == 9901
    assert int(response.headers["Retry-After"]) >= 1
    written = {key for key in set(redis.keys("*")) - before if not key.startswith(b"ingest:rate:")}
    assert written == set()  # no claim, no job, no owner key: nothing half-written


async def _wait_for_reading() -> None:
    await asyncio.sleep(1.2)  # REDIS_MEMORY_CHECK_S is 1 s


async def _post(
    client: TestClient, path: str, token: str, reference_id: str, **changes: str
) -> tuple[int, Any]:
    body = {"apiToken": token, "referenceID": reference_id, **changes}
    response = await client.post(path, json=body)
    return response.status, await response.json()


async def _status(client: TestClient, token: str, reference_id: str) -> Any:
    response = await client.get(
        f"{API_PREFIX}/{reference_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 200, await response.text()
    return await response.json()
