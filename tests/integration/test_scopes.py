"""Token scopes and the bounded enforcement lookup, on the real Redis and PostgreSQL.

Issue 13, promise 4: a push token (the default scope) sees only its own client's permits,
in the lookup and in status; an enforcement token looks up any plate but cannot push,
update or delete; the lookup returns at most LOOKUP_MAX_PERMITS and says when it cut the
list; ``at`` lies in the years a permit's times may (2000-2099).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli import main
from ingest.app import create_app
from ingest.routes import ACTIVE_PATH, BATCH_PATH, DELETE_PATH, PUSH_PATH, UPDATE_PATH
from shared.clients import create_client, publish_tokens
from shared.config import Settings
from shared.models import ApiClient
from tests.factories import make_payload, queued_permits, run_worker
from worker.context import init_context

AT = "2018-07-02T09:10:00"


@pytest.fixture
def worker_context(pg_settings: Settings) -> Iterator[None]:
    context = init_context(pg_settings)
    yield
    context.engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def stack(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    sessions: sessionmaker[Session],
    redis: Redis,
) -> tuple[TestClient, dict[str, str]]:
    """A receiver and three clients: vendors a and b (push), and a handheld (enforcement)."""
    with sessions.begin() as session:
        tokens = {
            "a": create_client(session, "vendor-a"),
            "b": create_client(session, "vendor-b"),
            "handheld": create_client(session, "handheld", scope="enforcement"),
        }
        session.flush()
        publish_tokens(session, redis)
    client: TestClient = await aiohttp_client(create_app(settings, redis=redis))
    return client, tokens


async def test_an_enforcement_token_looks_up_any_plate_but_cannot_push(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    worker_context: None,
) -> None:
    client, tokens = await stack(aiohttp_client, pg_settings, pg_sessions, real_redis)
    refs = {}
    for name in ("a", "b"):
        reply = await client.post(PUSH_PATH, json=make_payload(apiToken=tokens[name]))
        assert reply.status == 200
        refs[name] = (await reply.json())["reference_id"]
    run_worker(real_redis)

    # The handheld may not push, batch, update or delete: 403, 9002, nothing queued.
    handheld = tokens["handheld"]
    operation = {"apiToken": handheld, "referenceID": refs["a"]}
    for path, body in (
        (PUSH_PATH, make_payload(apiToken=handheld, permitNo="h")),
        (BATCH_PATH, [make_payload(apiToken=handheld, permitNo="h")]),
        (UPDATE_PATH, {**operation, "Amount": "1.00"}),
        (DELETE_PATH, operation),
    ):
        reply = await client.post(path, json=body)
        assert reply.status == 403, (path, await reply.text())
        error = await reply.json()
        assert error["ErrorCode"] == 9002
        assert "enforcement" in error["errors"]["apiToken"][0]
    assert queued_permits(real_redis) == []

    # It sees every client's permits of the plate; each vendor sees only its own.
    async def lookup(token: str) -> set[str]:
        reply = await client.get(
            ACTIVE_PATH, params={"plate": "PL8RDR", "at": AT}, headers=bearer(token)
        )
        assert reply.status == 200, await reply.text()
        body = await reply.json()
        assert body["truncated"] is False
        return {p["reference_id"] for p in body["permits"]}

    assert await lookup(handheld) == {refs["a"], refs["b"]}
    assert await lookup(tokens["a"]) == {refs["a"]}
    assert await lookup(tokens["b"]) == {refs["b"]}

    # Status: a vendor's own permit only; another's is as if it did not exist.
    own = await client.get(f"/api/OC-TOMA/v1/permits/{refs['a']}", headers=bearer(tokens["a"]))
    assert (own.status, (await own.json())["permit"]["reference_id"]) == (200, refs["a"])
    other = await client.get(f"/api/OC-TOMA/v1/permits/{refs['a']}", headers=bearer(tokens["b"]))
    assert (other.status, (await other.json())["ErrorCode"]) == (404, 9009)


async def test_the_lookup_is_bounded_and_says_when_it_cut_the_list(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    worker_context: None,
) -> None:
    settings = dataclasses.replace(pg_settings, lookup_max_permits=3)
    client, tokens = await stack(aiohttp_client, settings, pg_sessions, real_redis)
    batch = [make_payload(apiToken=tokens["a"], permitNo=str(uuid4())) for _ in range(5)]
    assert (await client.post(BATCH_PATH, json=batch)).status == 200
    run_worker(real_redis)
    reply = await client.get(
        ACTIVE_PATH, params={"plate": "PL8RDR", "at": AT}, headers=bearer(tokens["handheld"])
    )
    body = await reply.json()
    assert (len(body["permits"]), body["truncated"], body["active"]) == (3, True, True)

    for at in ("1999-12-31T23:59:59", "2100-01-01T00:00:00", "0002-01-01T00:00:00+00:00"):
        refused = await client.get(
            ACTIVE_PATH, params={"plate": "PL8RDR", "at": at}, headers=bearer(tokens["handheld"])
        )
        assert refused.status == 400, (at, await refused.text())
        error = await refused.json()
        assert error["ErrorCode"] == 9033
        assert "2000-01-01T00:00:00 to 2099-12-31T23:59:59" in error["errors"]["at"][0]


def test_tokens_create_takes_a_scope_and_tokens_list_shows_it(
    pg_settings: Settings, pg_sessions: sessionmaker[Session], real_redis: Redis
) -> None:
    env = {"REDIS_URL": pg_settings.redis_url, "DATABASE_URL": pg_settings.database_url}
    cli = CliRunner()
    made = cli.invoke(
        main, ["tokens", "create", "--name", "cam", "--scope", "enforcement"], env=env
    )
    assert made.exit_code == 0, made.output
    assert cli.invoke(main, ["tokens", "create", "--name", "meter"], env=env).exit_code == 0
    wrong = cli.invoke(main, ["tokens", "create", "--name", "x", "--scope", "admin"], env=env)
    assert wrong.exit_code != 0
    with pg_sessions() as session:
        scopes = dict(session.execute(select(ApiClient.name, ApiClient.scope)).all())
    assert scopes == {"cam": "enforcement", "meter": "push"}
    listed = cli.invoke(main, ["tokens", "list"], env=env)
    assert "scope" in listed.output.splitlines()[0]
    rows = {line.split()[0]: line.split() for line in listed.output.splitlines()[1:]}
    assert "enforcement" in rows["cam"] and "push" in rows["meter"]
    # The scope travels in the published token set.
    published = real_redis.hvals("ingest:tokens")
    assert sorted('"scope": "enforcement"' in raw.decode() for raw in published) == [False, True]
