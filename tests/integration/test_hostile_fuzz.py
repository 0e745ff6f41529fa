"""No body, header or query gets a 5xx: a bounded hypothesis fuzz on the real services.

`python -m bench.fuzz` sends the same kind of requests 10^5 times (not part of make test).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from harness.fuzz import Sender, hostile_request
from shared.clients import create_client, publish_tokens
from shared.config import Settings


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
