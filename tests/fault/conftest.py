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
    durable_ack: str = "off"
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
            "DURABLE_ACK": self.durable_ack,
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
def durable_ack() -> str:
    """DURABLE_ACK of the stack's processes: a test parametrizes it to run once per mode.
    With `replica` the stack's Redis gets a replica of its own (loopback, AOF)."""
    return "off"


@pytest.fixture
def stack(
    pg: PostgresCluster, redis_server: RedisServer, tmp_path: Path, durable_ack: str
) -> Iterator[Stack]:
    replica = None
    if durable_ack == "replica":
        replica = RedisServer(replicaof=redis_server.port)
        replica.start()
    engine = make_engine(Settings(database_url=pg.url))
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    with make_sessionmaker(engine).begin() as session:
        token = create_client(session, "fault-meters")
        session.flush()
        publish_tokens(session, redis_server.client())
    engine.dispose()
    result = Stack(pg, redis_server, token, tmp_path, durable_ack)
    try:
        yield result
    finally:
        for proc in result.procs:
            proc.stop(timeout_s=10)
        if replica is not None:
            replica.close()


def fault_table_line(
    fault: str, stack: Stack, refused_at: list[float], since: float, lost: int, doubled: int
) -> None:
    """One row of docs/reliability.md's fault table, printed (pytest -s) for the record:
    the pushes refused (503) from ``since`` on and the seconds between the first and the
    last, the 200s whose permit was never stored, the permits stored twice."""
    refused = sorted(t for t in refused_at if t >= since)
    span = refused[-1] - refused[0] if refused else 0.0
    print(
        f"\nfault table | {fault} | DURABLE_ACK={stack.durable_ack} | 503: {len(refused)}"
        f" over {span:.1f} s | 200s lost: {lost} | doubled: {doubled}"
    )
