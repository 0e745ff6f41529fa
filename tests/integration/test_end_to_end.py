"""The seed's request, end to end: real `permit-push serve` and `worker` processes."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.ports import free_port, wait_for_port
from tests.factories import make_payload, seed_raw_request
from tests.support.database import wait_for_row
from tests.support.processes import cli, rq_info, running


@dataclass
class Service:
    port: int
    token: str
    env: dict[str, str]
    logs: Path


@pytest.fixture
def service(
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    tmp_path: Path,
) -> Iterator[Service]:
    env = {
        "REDIS_URL": pg_settings.redis_url,
        "DATABASE_URL": pg_settings.database_url,
        "TOKEN_PUBLISH_S": "1",
    }
    token = (
        cli("tokens", "create", "--name", "seed-meters", env=env).stdout.strip().splitlines()[-1]
    )
    port = free_port()
    with (
        running("serve", "--port", str(port), env=env, log=tmp_path / "serve.log"),
        running("worker", env=env, log=tmp_path / "worker.log"),
    ):
        wait_for_port(port)
        yield Service(port, token, env, tmp_path)


def send_raw(port: int, request: bytes) -> tuple[int, dict[str, object]]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(
            request.replace(b"Host: controller.operationscommander.io", b"Host: 127.0.0.1")
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert b"Content-Type: application/json" in head
    return status, json.loads(body)


def test_seed_raw_request_byte_for_byte_is_stored_in_postgres(
    service: Service, pg_sessions: sessionmaker[Session]
) -> None:
    status, reply = send_raw(service.port, seed_raw_request(service.token))
    assert status == 200, reply
    assert reply["status"] == "success"
    reference_id = str(reply["reference_id"])
    assert UUID(reference_id).version == 4
    assert reply["InternalReferenceID"] == reference_id
    permit = wait_for_row(pg_sessions, reference_id, timeout_s=1.0)
    assert (permit.plate, permit.zone_name, permit.permit_no) == ("PL8RDR", "Lot 4", "L4-1138")
    assert str(permit.amount) == "14.50" and permit.currency == "CAD"


def test_javascript_example_body_is_stored(
    service: Service, pg_sessions: sessionmaker[Session]
) -> None:
    # JSON.stringify(body): compact, same attributes; XMLHttpRequest's two headers.
    body = json.dumps(make_payload(apiToken=service.token, permitNo="JS-1"), separators=(",", ":"))
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.port}/api/OC-TOMA/v1/permits/push",
        data=body.encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        assert response.status == 200
        reply = json.load(response)
    permit = wait_for_row(pg_sessions, reply["reference_id"], timeout_s=1.0)
    assert permit.permit_no == "JS-1"


def test_rq_info_shows_the_queue_and_the_worker(service: Service) -> None:
    send_raw(service.port, seed_raw_request(service.token))
    deadline = time.monotonic() + 10
    while True:
        output = rq_info(service.env["REDIS_URL"])
        if ("permits" in output and "1 workers" in output) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "permits" in output, output
    assert "1 workers" in output, output


def test_tokens_come_back_after_redis_loses_its_data(service: Service, real_redis: Redis) -> None:
    real_redis.flushdb()  # a restart without persistence
    deadline = time.monotonic() + 60
    while True:
        status, _ = send_raw(service.port, seed_raw_request(service.token))
        if status == 200 or time.monotonic() > deadline:
            break
        assert status == 503  # never 401: the receiver knows the set is missing
        time.sleep(0.2)
    assert status == 200
