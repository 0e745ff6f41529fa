"""Hostile and broken clients, on the real Redis and PostgreSQL (docs/reliability.md)."""

from __future__ import annotations

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
from tests.factories import make_payload

DEEP = 1000


def deep_array(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


async def make_client(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    sessions: sessionmaker[Session],
    redis: Redis,
    name: str = "meters",
) -> tuple[TestClient, str]:
    with sessions.begin() as session:
        token = create_client(session, name)
        session.flush()
        publish_tokens(session, redis)
    client: TestClient = await aiohttp_client(create_app(settings, redis=redis))
    return client, token


async def test_two_aliases_holding_deep_arrays_get_400_not_500(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
) -> None:
    client, token = await make_client(aiohttp_client, pg_settings, pg_sessions, real_redis)
    body = {**make_payload(apiToken=token, Amount=None), "referenceID": str(uuid4())}
    text = orjson_object(body, Amount=deep_array(), amount=deep_array())
    headers = {"Content-Type": "application/json"}
    for path in (PUSH_PATH, UPDATE_PATH):
        reply = await client.post(path, data=text, headers=headers)
        assert reply.status == 400, (path, await reply.text())
        assert (await reply.json())["ErrorCode"] == 9033
    reply = await client.post(BATCH_PATH, data=f"[{text}]", headers=headers)
    assert reply.status == 200
    assert (await reply.json())["results"][0]["ErrorCode"] == 9033


def orjson_object(body: dict[str, Any], **raw: str) -> str:
    """``body`` as JSON text with ``raw`` members written as given (not encoded)."""
    import json

    members = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in body.items()]
    members += [f"{json.dumps(k)}: {v}" for k, v in raw.items()]
    return "{" + ", ".join(members) + "}"
