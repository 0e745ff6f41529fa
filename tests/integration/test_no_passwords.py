"""No error message or log line prints a URL's password: real processes, real output.

A private redis-server that requires a password, and the PostgreSQL of TEST_DATABASE_URL
reached with a password in its URL (a trust-authenticated server ignores it, but every
line that prints the URL would show it). `db upgrade`, `tokens create`, `serve` and
`worker` (RQ's own lines included, at DEBUG) run and store a permit; then the commands
fail on a wrong port, a wrong password and a malformed URL. The password appears nowhere.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from harness.payloads import make_payload
from harness.services import RedisServer
from ingest.routes import PUSH_PATH
from shared.ports import free_port, wait_for_port
from tests.support.processes import BIN, running

REDIS_SECRET = "redis-" + uuid.uuid4().hex
PG_SECRET = "pg-" + uuid.uuid4().hex


@pytest.fixture
def urls(database_url: str) -> Iterator[dict[str, str]]:
    redis = RedisServer(password=REDIS_SECRET)
    redis.start()
    try:
        database = make_url(database_url).set(password=PG_SECRET)
        yield {
            "REDIS_URL": redis.url,
            "DATABASE_URL": database.render_as_string(hide_password=False),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "DEBUG",
        }
    finally:
        redis.close()


def command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "permit-push"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def push(port: int, token: str) -> dict[str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = json.dumps(make_payload(apiToken=token, permitNo=uuid.uuid4().hex[:12]))
        connection.request("POST", PUSH_PATH, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        result: dict[str, str] = json.loads(response.read())
        return result
    finally:
        connection.close()


def stored(database_url: str, reference_id: str) -> bool:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM permits WHERE reference_id = :id"), {"id": reference_id}
            ).first()
        return found is not None
    finally:
        engine.dispose()


def assert_no_password(where: str, text: str) -> None:
    for secret in (REDIS_SECRET, PG_SECRET):
        assert secret not in text, f"{where} prints a password:\n{text[-3000:]}"


def test_no_output_shows_a_password(urls: dict[str, str], tmp_path: Path) -> None:
    outputs: dict[str, str] = {}
    upgrade = command("db", "upgrade", env=urls)
    assert upgrade.returncode == 0, upgrade.stderr
    outputs["db upgrade"] = upgrade.stdout + upgrade.stderr
    made = command("tokens", "create", "--name", f"pw-{uuid.uuid4().hex[:8]}", env=urls)
    assert made.returncode == 0, made.stderr
    outputs["tokens create"] = made.stdout + made.stderr
    token = made.stdout.split()[-1]
    port = free_port()
    with (
        running("serve", "--port", str(port), env=urls, log=tmp_path / "serve.log"),
        running("worker", env=urls, log=tmp_path / "worker.log"),
    ):
        wait_for_port(port)
        reference_id = push(port, token)["reference_id"]
        deadline = time.monotonic() + 30
        while not stored(urls["DATABASE_URL"], reference_id):
            assert time.monotonic() < deadline, "the permit was not stored"
            time.sleep(0.2)
    outputs["serve"] = (tmp_path / "serve.log").read_text(encoding="utf-8")
    outputs["worker"] = (tmp_path / "worker.log").read_text(encoding="utf-8")
    # RQ's own lines are in the worker's log (its start, the queue it listens on, the job).
    assert '"logger": "rq.worker"' in outputs["worker"]

    redis = make_url(urls["REDIS_URL"].replace("redis://", "postgresql://", 1))
    wrong_port = urls["REDIS_URL"].replace(f":{redis.port}/", f":{free_port()}/")
    wrong_password = urls["REDIS_URL"].replace(REDIS_SECRET, REDIS_SECRET[::-1])
    database = make_url(urls["DATABASE_URL"])
    failing = {
        "status, Redis away": ({"REDIS_URL": wrong_port}, ["status"]),
        "status, wrong Redis password": ({"REDIS_URL": wrong_password}, ["status"]),
        "a URL that is not redis://": (
            {"REDIS_URL": urls["REDIS_URL"].replace("redis://", "http://")},
            ["status"],
        ),
        "db upgrade, database away": (
            {"DATABASE_URL": database.set(port=free_port()).render_as_string(hide_password=False)},
            ["db", "upgrade"],
        ),
        "tokens list, database away": (
            {"DATABASE_URL": database.set(port=free_port()).render_as_string(hide_password=False)},
            ["tokens", "list"],
        ),
        "a database URL that does not parse": (
            {"DATABASE_URL": f"postgresql+psycopg://u:{PG_SECRET}@[bad/x"},
            ["db", "upgrade"],
        ),
    }
    for where, (env, args) in failing.items():
        result = command(*args, env={**urls, **env})
        assert result.returncode != 0, where
        outputs[where] = result.stdout + result.stderr
        assert outputs[where].strip(), where
    # A receiver whose Redis refuses its password: its log lines.
    log = tmp_path / "serve-wrong.log"
    port = free_port()
    with running("serve", "--port", str(port), env={**urls, "REDIS_URL": wrong_password}, log=log):
        time.sleep(3)
    outputs["serve, wrong Redis password"] = log.read_text(encoding="utf-8")
    for where, output in outputs.items():
        assert_no_password(where, output)
    print("\n" + "\n".join(f"{where}: {out.strip()[-160:]!r}" for where, out in outputs.items()))
