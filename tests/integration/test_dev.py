"""`permit-push dev` (what `make run` starts) answers the curl it prints."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
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


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _wait_for_text(log: Path, pattern: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        output = log.read_text()
        if re.search(pattern, output, re.M):
            return output
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} within {timeout_s} s:\n{log.read_text()}")


@pytest.mark.parametrize("redis", ["redis-server", "embedded"])
def test_dev_export_line_reaches_it_console_is_quiet_and_ctrl_c_stops_cleanly(
    tmp_path: Path, redis: str
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["DATABASE_URL"] = "sqlite:///dev.sqlite3"  # relative, as the default is
    env["MAINTENANCE_INTERVAL_S"] = "2"  # RQ cleans its registries every 2 s
    if redis == "embedded":
        env["PATH"] = str(BIN)
    elif shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed here")
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        # A session of its own: Ctrl-C in a terminal signals the whole foreground group.
        process = subprocess.Popen(
            [str(BIN / "permit-push"), "dev", "--port", str(free_port())],
            env=env,
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output = _wait_for_text(log, r"Listening on", timeout_s=60)
            listening = time.monotonic()
            export = re.search(r"^  export (.+)$", output, re.M)
            assert export is not None, output
            exported = dict(word.split("=", 1) for word in shlex.split(export.group(1)))
            assert set(exported) == {"REDIS_URL", "DATABASE_URL"}
            assert exported["DATABASE_URL"] == f"sqlite:///{project / 'dev.sqlite3'}"
            status = subprocess.run(
                [str(BIN / "permit-push"), "status"],
                env={**env, **exported},
                cwd=elsewhere,  # the second terminal may be anywhere
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert "workers on permits: 1" in status.stdout, status.stdout + status.stderr
            children = _children(process.pid)
            assert children, "dev started no child process"
            time.sleep(max(0.0, listening + 5 - time.monotonic()))  # over two intervals
            before_stop = len(log.read_text())
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    output = log.read_text()
    for chatter in ("cleaning registries", "setup plugin", "Will assume"):
        assert chatter not in output, output
    stopping = output[before_stop:]
    for error in ("Connection refused", "could not connect", "ConnectionError", "lost_redis"):
        assert error not in stopping, stopping
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], output
