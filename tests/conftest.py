"""Fixtures for unit tests: settings, a migrated SQLite database, fakeredis, the app."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import fakeredis
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from shared.clients import create_client, publish_tokens
from shared.config import Settings
from shared.db import make_engine, make_sessionmaker, upgrade_database


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per run; each test gets its own copy."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
    upgrade_database(engine)
    engine.dispose()
    return path


@pytest.fixture
def settings(tmp_path: Path, migrated_sqlite: Path) -> Settings:
    database = tmp_path / "permits.sqlite3"
    shutil.copy(migrated_sqlite, database)
    return Settings(
        redis_url="redis://fake:6379/0",
        database_url=f"sqlite:///{database}",
        log_format="console",
        batch_window_ms=1.0,
    )


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def add_client(sessions: sessionmaker[Session], redis: fakeredis.FakeRedis) -> Callable[..., str]:
    """Create an API client, publish the tokens to (fake) Redis, return its token."""

    def add(name: str = "meters", permit_type: str = "Standard") -> str:
        with sessions.begin() as session:
            token = create_client(session, name, permit_type)
            session.flush()
            publish_tokens(session, redis)
        return token

    return add


@pytest.fixture
def token(add_client: Callable[..., str]) -> str:
    return add_client()


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., object], settings: Settings, redis: fakeredis.FakeRedis
) -> TestClient:
    return await aiohttp_client(create_app(settings, redis=redis))  # type: ignore[no-any-return]
