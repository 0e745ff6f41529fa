"""Imports go one way: ingest -> shared <- worker; a receiver without a database has no ORM."""

import json
import os
import subprocess
import sys
from typing import Any

import fakeredis

from shared.config import Settings
from tests.factories import make_payload

# A receiver as `permit-push serve` builds it (ingest.server: configure_logging, then
# create_app(Settings.from_env())), on a fakeredis holding the parent's keys, run through
# its startup and cleanup (aiohttp's TestServer runs the app's cleanup context) with a push,
# a lookup and a scrape in between; then what the process has loaded.
RECEIVER = """
import asyncio, json, sys
import fakeredis
from aiohttp.test_utils import TestClient, TestServer
from ingest.app import create_app
from ingest.routes import ACTIVE_PATH, PUSH_PATH
from shared.config import Settings
from shared.logging import configure_logging

keys, token, payload = json.load(sys.stdin)
redis = fakeredis.FakeRedis()
for key, value in keys.items():
    redis.restore(bytes.fromhex(key), 0, bytes.fromhex(value))

async def main():
    settings = Settings.from_env()
    configure_logging(settings)
    statuses = {}
    async with TestClient(TestServer(create_app(settings, redis=redis))) as http:
        statuses["healthz"] = (await http.get("/healthz")).status
        statuses["push"] = (await http.post(PUSH_PATH, json=payload)).status
        bearer = {"Authorization": "Bearer " + token}
        lookup = await http.get(ACTIVE_PATH, params={"plate": "PL8RDR"}, headers=bearer)
        statuses["lookup"] = lookup.status
        statuses["metrics"] = (await http.get("/metrics")).status
    return statuses

statuses = asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("worker", "sqlalchemy"))
print("RECEIVER", json.dumps({"statuses": statuses, "loaded": loaded}))
"""


def run_receiver(
    settings: Settings, redis: fakeredis.FakeRedis, token: str, read_database_url: str
) -> dict[str, Any]:
    keys = {key.hex(): redis.dump(key).hex() for key in redis.scan_iter()}
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": settings.database_url,
        "READ_DATABASE_URL": read_database_url,
        "LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-c", RECEIVER],
        input=json.dumps([keys, token, make_payload(apiToken=token)]),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RECEIVER ")]
    result: dict[str, Any] = json.loads(line.removeprefix("RECEIVER "))
    return result


def test_receiver_with_its_read_endpoints_loads_sqlalchemy_but_not_the_worker(
    settings: Settings, redis: fakeredis.FakeRedis, token: str
) -> None:
    result = run_receiver(settings, redis, token, read_database_url="")
    assert result["statuses"] == {"healthz": 200, "push": 200, "lookup": 200, "metrics": 200}
    loaded = result["loaded"]
    assert not [m for m in loaded if m.split(".")[0] == "worker"]
    # By default the receiver answers lookups from the database (ingest/reads.py).
    assert "sqlalchemy.orm" in loaded


def test_receiver_without_a_database_loads_neither_sqlalchemy_nor_the_worker(
    settings: Settings, redis: fakeredis.FakeRedis, token: str
) -> None:
    result = run_receiver(settings, redis, token, read_database_url="none")
    # Pushes still work; the read endpoints answer 503 (shared/config.py).
    assert result["statuses"] == {"healthz": 200, "push": 200, "lookup": 503, "metrics": 200}
    assert result["loaded"] == []


def test_shared_imports_neither_side() -> None:
    code = (
        "import pkgutil, importlib, sys, shared\n"
        "for m in pkgutil.walk_packages(shared.__path__, 'shared.'):\n"
        "    if '.migrations' not in m.name: importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ingest', 'worker', 'cli'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_command_line_loads_no_worker_code_until_a_worker_runs() -> None:
    """`permit-push serve` is a CLI process: importing the CLI must not bring the worker in."""
    code = (
        "import sys, cli\n"
        "leaked = sorted(m for m in sys.modules if m == 'worker' or m.startswith('worker.'))\n"
        "assert not leaked, leaked\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
