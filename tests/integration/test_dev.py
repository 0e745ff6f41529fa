"""`permit-push dev` (what `make run` starts) answers the curl it prints."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from shared.ports import free_port, wait_for_port
from tests.support.processes import BIN


@pytest.mark.parametrize("redis", ["redis-server", "embedded"])
def test_dev_prints_a_working_token_and_stores_the_permit(tmp_path: Path, redis: str) -> None:
    database = tmp_path / "dev.sqlite3"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["DATABASE_URL"] = f"sqlite:///{database}"
    if redis == "redis-server":
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed here")
    else:
        env["PATH"] = str(BIN)  # no redis-server: dev falls back to fakeredis's TCP server
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "permit-push"), "dev", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, timeout_s=60)
            output = log.read_text()
            assert "NOT durable" in output
            curl = re.search(r"curl .*?-d '(\{.*?\})'", output, re.S)
            assert curl is not None, output
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/OC-TOMA/v1/permits/push",
                data=curl.group(1).encode(),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                reply = json.load(response)
            assert reply["status"] == "success"
            deadline = time.monotonic() + 15
            rows: list[tuple[str]] = []
            while not rows and time.monotonic() < deadline:
                time.sleep(0.2)
                with sqlite3.connect(database) as db:
                    rows = db.execute(
                        "SELECT plate FROM permits WHERE reference_id = ?", (reply["reference_id"],)
                    ).fetchall()
            assert rows == [("PL8RDR",)]
        finally:
            process.terminate()
            process.wait(timeout=30)
