"""Real Redis and PostgreSQL, from TEST_REDIS_URL and TEST_DATABASE_URL.

On a laptop without them these tests skip, saying why; in CI (CI=true) a missing
service fails the run instead, so a green CI always means they ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from redis import Redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from shared.clients import create_client, publish_tokens
from shared.config import Settings
from shared.db import make_engine, make_sessionmaker, upgrade_database
from shared.models import Base


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


def _unavailable(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: integration services must be there)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        _unavailable("TEST_REDIS_URL is not set")
    try:
        Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        _unavailable(f"Redis at TEST_REDIS_URL is unreachable: {exc}")
    return url  # type: ignore[return-value]


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        _unavailable("TEST_DATABASE_URL is not set")
    engine = make_engine(Settings(database_url=url))  # type: ignore[arg-type]
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        _unavailable(f"PostgreSQL at TEST_DATABASE_URL is unreachable: {exc}")
    # A fresh schema per run, built by the migrations (never by create_all).
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    upgrade_database(engine)
    engine.dispose()
    return url  # type: ignore[return-value]


@pytest.fixture
def pg_settings(redis_url: str, database_url: str) -> Settings:
    return Settings(
        redis_url=redis_url, database_url=database_url, log_format="console", batch_window_ms=1.0
    )


@pytest.fixture
def pg_engine(pg_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(pg_settings)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_sessions(pg_engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions on an emptied database: tests here commit, and other processes read it."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with pg_engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield make_sessionmaker(pg_engine)


@pytest.fixture
def real_redis(redis_url: str) -> Iterator[Redis]:
    """The test Redis database, flushed before and after each test (rq's RQTestCase)."""
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    yield redis
    redis.flushdb()
    redis.close()


@pytest.fixture
def pg_token(pg_sessions: sessionmaker[Session], real_redis: Redis) -> str:
    """An API client "meters" in PostgreSQL, its token published to the real Redis."""
    with pg_sessions.begin() as session:
        token = create_client(session, "meters")
        session.flush()
        publish_tokens(session, real_redis)
    return token
