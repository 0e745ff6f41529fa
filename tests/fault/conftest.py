"""Fixtures for fault tests: a private PostgreSQL cluster per run, a private Redis per test.

These tests need redis-server and PostgreSQL 15's binaries, not the shared services: they
kill and restart what they start. Without the binaries they skip, saying why; in CI
(CI=true) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text

from harness.services import PostgresCluster, Proc, RedisServer, missing_tools
from shared.clients import create_client, publish_tokens
from shared.config import Settings
from shared.db import make_engine, make_sessionmaker, upgrade_database
from shared.models import Base
from shared.ports import free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/fault/" in str(item.path):
            item.add_marker(pytest.mark.fault)


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresCluster]:
    reason = missing_tools()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: fault tests must run)", pytrace=False)
        pytest.skip(reason)
    cluster = PostgresCluster()
    try:
        cluster.init()
        engine = make_engine(Settings(database_url=cluster.url))
        upgrade_database(engine)
        engine.dispose()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_server(pg: PostgresCluster) -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@dataclass
class Stack:
    """The services of one test and the `permit-push` processes it runs against them."""

    pg: PostgresCluster
    redis: RedisServer
    token: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": self.pg.url,
            "LOG_LEVEL": "DEBUG",  # the token must not show even in debug logs
            "TOKEN_PUBLISH_S": "1",
            # Short so that a killed worker's batch is re-run within seconds here; the
            # defaults (30 s, 10 s) bound it to under a minute (docs/reliability.md).
            "ABANDONED_JOB_S": "4",
            "MAINTENANCE_INTERVAL_S": "1",
            **extra,
        }

    def serve(self, name: str = "serve", **extra: str) -> Proc:
        proc = Proc(name, ["serve", "--port", str(self.port)], self.env(**extra), self.log_dir)
        self.procs.append(proc)
        return proc

    def worker(self, name: str = "worker", **extra: str) -> Proc:
        proc = Proc(name, ["worker"], self.env(**extra), self.log_dir)
        self.procs.append(proc)
        return proc

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return "".join(
            path.read_text(errors="replace") for path in sorted(self.log_dir.glob("*.log"))
        )


@pytest.fixture
def stack(pg: PostgresCluster, redis_server: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    engine = make_engine(Settings(database_url=pg.url))
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    with make_sessionmaker(engine).begin() as session:
        token = create_client(session, "fault-meters")
        session.flush()
        publish_tokens(session, redis_server.client())
    engine.dispose()
    result = Stack(pg, redis_server, token, tmp_path)
    try:
        yield result
    finally:
        for proc in result.procs:
            proc.stop(timeout_s=10)
