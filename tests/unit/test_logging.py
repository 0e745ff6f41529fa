"""Log lines: one JSON object a line, RQ's too; permit data stays out of error texts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable

import fakeredis
import pytest
import structlog
import structlog.testing
from aiohttp.test_utils import TestClient
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

import ingest.middlewares
import ingest.permit_enqueuer
from ingest.app import create_app
from ingest.routes import PUSH_PATH
from shared.config import Settings
from shared.db import make_engine
from shared.models import Permit
from tests.factories import make_payload, permits_queue


def test_stdlib_and_rq_records_come_out_as_one_json_object_a_line() -> None:
    code = textwrap.dedent(
        """
        import logging, structlog
        from shared.config import Settings
        from shared.logging import configure_logging
        configure_logging(Settings(log_format="json"))
        # RQ colours its messages when stdout is a terminal.
        green = "\\x1b[32mpermits\\x1b[39;49;00m"
        logging.getLogger("rq.worker").info("Worker %s: %s", "w1", green)
        try:
            raise ValueError("first line\\nsecond line")
        except ValueError:
            structlog.get_logger("ingest").exception("request_failed")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    rq_line, error_line = map(json.loads, lines)
    assert rq_line == {
        "event": "Worker w1: permits",
        "level": "info",
        "logger": "rq.worker",
        "timestamp": rq_line["timestamp"],
    }
    assert error_line["event"] == "request_failed"
    assert "ValueError: first line" in error_line["exception"]


def test_database_errors_do_not_carry_the_permits(settings: Settings) -> None:
    engine = make_engine(settings)
    row = {"reference_id": "r-1", "client_id": 999, "plate": "SECRET-PLATE"}
    with pytest.raises(IntegrityError) as raised, engine.begin() as connection:
        connection.execute(insert(Permit), [row])  # NOT NULL columns missing
    assert "SECRET-PLATE" not in str(raised.value)
    engine.dispose()


CHATTER = textwrap.dedent(
    """
    import logging, sys
    from shared.config import Settings
    from shared.logging import configure_logging
    configure_logging(Settings(log_format=sys.argv[1]))
    rq = logging.getLogger("rq.worker")
    rq.info("Worker %s: cleaning registries for queue: %s", "w1", "permits")
    logging.getLogger("alembic.runtime.plugins").info("setup plugin %s", "alembic.x")
    migration = logging.getLogger("alembic.runtime.migration")
    migration.info("Context impl %s.", "SQLiteImpl")
    migration.info("Will assume %s DDL.", "non-transactional")
    migration.info("Running upgrade %s -> %s", "0001", "0002")
    rq.info("Worker %s: %s: %s", "w1", "permits", "j1")
    rq.info("Successfully completed job %s in %ss on worker %s", "j1", "0:00:00.01", "w1")
    rq.info("Worker %s: %s: %s (%s)", "w1", "permits", "Job OK", "j1")
    rq.info("Worker %s: job %s result is kept for %s seconds", "w1", "j1", 60)
    logging.getLogger("worker.jobs").info("permits_stored job_id=j1")
    rq.error("Worker %s: could not connect to Redis instance", "w1")
    """
)


def test_console_drops_chatter_and_every_format_drops_rq_lines_per_job() -> None:
    def lines(log_format: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", CHATTER, log_format],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stderr

    console, json_lines = lines("console"), lines("json")
    for chatter in ("cleaning registries", "setup plugin", "Context impl", "Will assume"):
        assert chatter not in console, console
    assert "cleaning registries" in json_lines  # operators' logs keep the maintenance
    # RQ's four lines per successful job go in both formats; our own line per job stays.
    for output in (console, json_lines):
        for per_job in ("permits: j1", "Successfully completed", "Job OK", "result is kept"):
            assert per_job not in output, output
        for kept in ("Running upgrade 0001 -> 0002", "permits_stored", "could not connect"):
            assert kept in output, output


async def test_an_accepted_push_is_logged_with_its_batch_and_a_refused_one_alone(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fresh loggers: an earlier test may have configured structlog to cache its loggers.
    for module in (ingest.middlewares, ingest.permit_enqueuer):
        monkeypatch.setattr(module, "log", structlog.get_logger(module.__name__))
    client: TestClient = await aiohttp_client(  # type: ignore[assignment]
        create_app(dataclasses.replace(settings, batch_window_ms=50), redis=redis)
    )
    with structlog.testing.capture_logs() as lines:
        replies = await asyncio.gather(
            *(
                client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo=f"P{n}"))
                for n in range(3)
            )
        )
        refused = await client.post(PUSH_PATH, json=make_payload(apiToken=token, LicencePlate=None))
    references = sorted([(await reply.json())["reference_id"] for reply in replies])
    assert refused.status == 400
    (batch,) = [line for line in lines if line["event"] == "permits_enqueued"]
    assert (batch["size"], batch["enqueued"]) == (3, 3)
    assert sorted(batch["reference_ids"]) == references
    assert batch["job_id"] == permits_queue(redis).get_job_ids()[0]
    # No line per accepted request; the refused one keeps its line and its code.
    handled = [line for line in lines if line["event"] == "request_handled"]
    assert [(line["status"], line["error_code"]) for line in handled] == [(400, 9006)]
