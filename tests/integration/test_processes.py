"""`serve --processes N` and `worker --processes M`: one port, several workers, clean stop."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.models import Permit
from shared.ports import free_port, wait_for_port
from tests.factories import make_payload
from tests.support.processes import cli, rq_info, running


def push(port: int, body: dict[str, str]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/OC-TOMA/v1/permits/push",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return int(response.status)


def test_several_receivers_and_workers_store_every_permit(
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    tmp_path: Path,
) -> None:
    env = {"REDIS_URL": pg_settings.redis_url, "DATABASE_URL": pg_settings.database_url}
    token = cli("tokens", "create", "--name", "fleet", env=env).stdout.splitlines()[-1]
    port = free_port()
    with (
        running(
            "serve", "--port", str(port), "--processes", "2", env=env, log=tmp_path / "serve.log"
        ) as receivers,
        running("worker", "--processes", "2", env=env, log=tmp_path / "worker.log") as workers,
    ):
        wait_for_port(port, timeout_s=60)
        statuses = [push(port, make_payload(apiToken=token, permitNo=f"N{i}")) for i in range(40)]
        assert statuses == [200] * 40
        deadline = time.monotonic() + 30
        while True:
            with pg_sessions() as session:
                stored = session.scalar(select(func.count()).select_from(Permit))
            info = rq_info(pg_settings.redis_url)
            if (stored == 40 and "2 workers" in info) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert stored == 40
        assert "2 workers" in info, info
    # Leaving `running` sent SIGTERM to each supervisor: they stopped with their children.
    assert receivers.returncode == 0 and workers.returncode == 0
