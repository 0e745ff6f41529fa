"""Monitoring with real processes: /metrics against Redis and `rq info`, status, JSON logs.

One test, one receiver and one worker, to keep process start-ups few: pushes and a
poisoned job are queued with no worker running (queue depth and lag checked against
Redis), then a worker drains the queue (every state, the workers and the permit figures
checked against Redis, `rq info` and `permit-push status`), and finally every log line
of both processes is read back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy.orm import Session, sessionmaker

import cli
import cli.status
from ingest.routes import PUSH_PATH
from shared.clients import create_client, publish_tokens
from shared.config import Settings
from shared.ports import free_port, wait_for_port
from tests.factories import make_payload
from tests.support.metrics import PROMTOOL, exposition_problems, samples, value
from tests.support.processes import rq_info, running

POISON = "SECRET-PLATE-IN-A-POISONED-JOB"


def http(port: int, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.1)


def rq_info_figures(redis_url: str) -> tuple[list[int], int]:
    """(queued, executing, finished, failed) of the permits queue and the worker count."""
    output = rq_info(redis_url)
    queue = re.search(
        r"^permits\s.*?(\d+), (\d+) executing, (\d+) finished, (\d+) failed", output, re.M
    )
    workers = re.search(r"^(\d+) workers", output, re.M)
    assert queue and workers, output
    return [int(n) for n in queue.groups()], int(workers.group(1))


def log_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a process's output, each of which must be one JSON object."""
    lines = path.read_text().splitlines()
    assert lines, f"{path.name} is empty"
    return [json.loads(line) for line in lines]


def test_monitoring_with_a_real_receiver_and_worker(
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pg_sessions.begin() as session:
        token = create_client(session, "ops-meters")
        session.flush()
        publish_tokens(session, real_redis)
    env = {
        "REDIS_URL": pg_settings.redis_url,
        "DATABASE_URL": pg_settings.database_url,
        "LOG_FORMAT": "json",
        "STATS_PUBLISH_S": "0.5",
    }
    port = free_port()
    queue = Queue("permits", connection=real_redis, serializer=JSONSerializer)
    # Two receiver processes: /metrics must sum what both counted, whichever answers.
    serve = ("serve", "--port", str(port), "--processes", "2")
    with running(*serve, env=env, log=tmp_path / "serve.log"):
        wait_for_port(port, timeout_s=60)
        assert http(port, "/readyz")[0] == 200
        references = []
        for number in range(4):  # one at a time: one batch, one job each
            status, reply = http(
                port, PUSH_PATH, make_payload(apiToken=token, permitNo=f"P{number}")
            )
            assert status == 200, reply
            references.append(json.loads(reply)["reference_id"])
        assert http(port, PUSH_PATH, make_payload(apiToken=token, LicencePlate=None))[0] == 400
        assert http(port, PUSH_PATH, make_payload(apiToken="pp-not-a-token"))[0] == 401
        queue.enqueue("worker.jobs.persist_permits", permits=POISON)  # fails: no list

        # No worker yet: depth and lag as Redis holds them.
        head = Job.fetch(queue.get_job_ids()[0], connection=real_redis, serializer=JSONSerializer)
        assert head.enqueued_at is not None
        before = time.time()
        found = samples(http(port, "/metrics")[1])
        after = time.time()
        assert value(found, "rq_jobs", queue="permits", status="queued") == queue.count == 5
        lag = value(found, "permit_push_queue_lag_seconds", queue="permits")
        assert lag is not None
        assert before - head.enqueued_at.timestamp() <= lag <= after - head.enqueued_at.timestamp()
        assert rq_info_figures(pg_settings.redis_url) == ([5, 0, 0, 0], 0)

        with running("worker", env=env, log=tmp_path / "worker.log"):

            def drained() -> bool:
                found = samples(http(port, "/metrics")[1])
                return (
                    value(found, "rq_jobs", queue="permits", status="finished") == 4
                    and value(found, "rq_jobs", queue="permits", status="failed") == 1
                    and value(found, "permit_push_permits_disconnected") == 4
                    and any(name == "rq_workers" for name, _ in found)
                )

            wait_until(drained, 30, "the worker stores the pushes and publishes its figures")
            text = http(port, "/metrics")[1]
            found = samples(text)
            jobs = {
                status: value(found, "rq_jobs", queue="permits", status=status)
                for status in ("queued", "started", "finished", "failed")
            }
            (figures, workers) = rq_info_figures(pg_settings.redis_url)
            assert list(jobs.values()) == figures == [0, 0, 4, 1]
            assert sum(n for name, n in found.items() if name[0] == "rq_workers") == workers == 1
            assert value(found, "permit_push_queue_lag_seconds", queue="permits") == 0
            assert value(found, "permit_push_permits_stored_total") == 4
            assert value(found, "permit_push_dead_letters") == 0
            push = {"route": "push", "method": "POST"}
            by_status = {
                status: value(found, "permit_push_http_requests_total", **push, status=status)
                for status in ("200", "400", "401")
            }
            assert by_status == {"200": 4, "400": 1, "401": 1}  # both processes' counts
            assert exposition_problems(text) == []
            if shutil.which(PROMTOOL) or os.environ.get("CI") == "true":  # as needs_promtool
                checked = subprocess.run(
                    [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True
                )
                assert checked.returncode == 0, checked.stdout + checked.stderr

            # permit-push status, in-process, with --watch redrawing twice.
            sleeps = iter([None])

            def sleep(_seconds: float) -> None:
                if next(sleeps, KeyboardInterrupt) is KeyboardInterrupt:
                    raise KeyboardInterrupt

            with monkeypatch.context() as patch:  # time.sleep is the time module's own
                patch.setattr(cli.status.time, "sleep", sleep)
                patch.setattr(cli.status, "is_terminal", lambda: True)
                result = CliRunner().invoke(cli.main, ["status", "--watch"], env=env)
            assert result.exit_code == 0, result.output
            assert result.output.count("\x1b[H\x1b[J") == 2
            assert "0 queued, 0 started, 0 deferred, 0 scheduled, 1 failed, 4 finished" in (
                result.output
            )
            assert "permits stored in the last minute: 4" in result.output
            assert "disconnected permits: 4 (top 1 zone names)" in result.output

    serve_log, worker_log = log_lines(tmp_path / "serve.log"), log_lines(tmp_path / "worker.log")
    everything = (tmp_path / "serve.log").read_text() + (tmp_path / "worker.log").read_text()
    assert token not in everything
    assert POISON not in everything
    assert "PL8RDR" not in everything  # the plate of every push: no body is ever logged
    # Accepted pushes are logged per batch with their reference ids and the job's id;
    # a refused push has a line of its own, with its request id and code.
    enqueued = [line for line in serve_log if line["event"] == "permits_enqueued"]
    assert sorted(ref for line in enqueued for ref in line["reference_ids"]) == sorted(references)
    pushes = [line for line in serve_log if line["event"] == "request_handled"]
    assert all(line["request_id"] for line in pushes)
    assert sorted((line["status"], line["error_code"]) for line in pushes) == [
        (400, 9006),
        (401, 9002),
    ]
    rq_lines = [line for line in worker_log if line["logger"].startswith("rq.")]
    assert any("exception raised while executing" in line["event"] for line in rq_lines)
    stored = [line for line in worker_log if line["event"] == "permits_stored"]
    assert sum(line["stored"] for line in stored) == 4 and all(line["job_id"] for line in stored)
    # The receiver's batch line and the worker's name the same job.
    assert {line["job_id"] for line in enqueued} == {line["job_id"] for line in stored}
