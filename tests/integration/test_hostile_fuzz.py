"""No body, header or query gets a 5xx: a bounded hypothesis fuzz on the real services.

`python -m bench.fuzz` sends the same kind of requests 10^5 times (not part of make test).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker
from yarl import URL

from ingest.app import create_app
from shared.clients import create_client, publish_tokens
from shared.config import Settings
from tests.fuzz import HostileRequest, hostile_request


class Sender:
    """A receiver in its own event loop, so hypothesis can drive it from a plain test."""

    def __init__(self, settings: Settings, redis: Redis, token: str) -> None:
        self.token = token
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(self._start(settings, redis))

    @staticmethod
    async def _start(settings: Settings, redis: Redis) -> TestClient:
        client = TestClient(TestServer(create_app(settings, redis=redis)))
        await client.start_server()
        return client

    def status(self, request: HostileRequest) -> int:
        return self.loop.run_until_complete(self._send(request))

    async def _send(self, request: HostileRequest) -> int:
        url = URL(str(self.client.make_url(request.path)) + f"?{request.query}", encoded=True)
        async with self.client.session.request(
            request.method, url, headers=request.headers, data=request.body
        ) as reply:
            await reply.read()
            return reply.status

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture
def sender(
    pg_settings: Settings, pg_sessions: sessionmaker[Session], real_redis: Redis
) -> Iterator[Sender]:
    with pg_sessions.begin() as session:
        token = create_client(session, "fuzz-meters")
        session.flush()
        publish_tokens(session, real_redis)
    sender = Sender(pg_settings, real_redis, token)
    yield sender
    sender.close()


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_request_gets_a_5xx(sender: Sender, data: st.DataObject) -> None:
    request = data.draw(hostile_request(sender.token))
    assert sender.status(request) < 500, request
