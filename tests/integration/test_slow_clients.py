"""Slow clients against a real `permit-push serve`: a deadline for reading each request.

A trickled header and a trickled body each get a 408 (the contract's JSON error) and a
closed connection within REQUEST_READ_TIMEOUT_S; a connection that says nothing is a
keep-alive, closed quietly after KEEPALIVE_TIMEOUT_S; a slowloris of
hundreds of sockets leaves a normal meter's p99 and the receiver's open files bounded.
`python -m bench.slowloris` runs the same attack with thousands of sockets.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.payloads import make_payload
from harness.slowloris import attack
from shared.config import Settings
from shared.ports import free_port, wait_for_port
from tests.support.processes import cli, running

DEADLINE_S = 1.0
KEEPALIVE_S = 3.0
PUSH_PATH = "/api/OC-TOMA/v1/permits/push"
JSON = {"Content-Type": "application/json"}
PUSH_HEAD = b"POST /api/OC-TOMA/v1/permits/push HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture
def receiver(pg_settings: Settings, tmp_path: Path) -> Iterator[tuple[int, int, str]]:
    """(port, pid, a valid token) of a `permit-push serve` with a 1 s read deadline and a
    3 s keep-alive timeout."""
    env = {
        "REDIS_URL": pg_settings.redis_url,
        "DATABASE_URL": pg_settings.database_url,
        "REQUEST_READ_TIMEOUT_S": str(DEADLINE_S),
        "KEEPALIVE_TIMEOUT_S": str(KEEPALIVE_S),
        "RATE_LIMIT_PER_S": "0",
    }
    name = f"slow-meter-{uuid.uuid4().hex[:8]}"
    token = cli("tokens", "create", "--name", name, env=env).stdout.split()[-1]
    port = free_port()
    with running("serve", "--port", str(port), env=env, log=tmp_path / "serve.log") as process:
        wait_for_port(port)
        yield port, process.pid, token


def trickle(port: int, first: bytes, drip: bytes, every_s: float) -> tuple[float, bytes]:
    """Send ``first``, then ``drip`` every ``every_s`` until the receiver closes the
    connection; (seconds until it did, what it replied)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.settimeout(every_s)
        if first:
            connection.sendall(first)
        reply = b""
        while time.monotonic() - started < 10:
            try:
                data = connection.recv(65536)
            except TimeoutError:
                try:
                    connection.sendall(drip)
                except OSError:
                    break
                continue
            except OSError:
                break
            if not data:
                break
            reply += data
        return time.monotonic() - started, reply


def assert_408(reply: bytes) -> None:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert b"Connection: close" in head
    assert json.loads(body)["status"] == "error"


@pytest.mark.parametrize(
    ("first", "drip"),
    [
        (PUSH_HEAD, b"X-Slow: a\r\n"),  # headers that never end
        (PUSH_HEAD + b"Content-Type: application/json\r\nContent-Length: 999\r\n\r\n{", b" "),
    ],
    ids=["trickled-headers", "trickled-body"],
)
def test_a_slow_request_gets_408_and_is_closed_at_the_deadline(
    receiver: tuple[int, int, str], first: bytes, drip: bytes, tmp_path: Path
) -> None:
    port, _, _ = receiver
    took_s, reply = trickle(port, first, drip, every_s=0.2)
    assert_408(reply)
    assert DEADLINE_S - 0.1 < took_s < DEADLINE_S + 1.0, took_s
    # A slow client is the client's doing: no error line, no 5xx in the figures.
    log = (tmp_path / "serve.log").read_text(encoding="utf-8")
    assert '"http_read_timeout"' in log
    assert '"level": "error"' not in log and '"status": 500' not in log, log


def test_a_connection_that_says_nothing_is_closed_quietly_at_the_keepalive_timeout(
    receiver: tuple[int, int, str],
) -> None:
    """A meter may open its connection before it has a permit to push: that is an idle
    keep-alive, not a slow request. (It once got a 408 at the read deadline, which the
    meter then read as the reply to its first push.)"""
    port, _, _ = receiver
    took_s, reply = trickle(port, b"", b"", every_s=0.2)
    assert reply == b""  # closed without a word
    assert KEEPALIVE_S - 0.1 < took_s < KEEPALIVE_S + 1.0, took_s


def test_a_prompt_request_on_a_kept_alive_connection_is_not_cut(
    receiver: tuple[int, int, str],
) -> None:
    """The deadline is per request: idle time between requests does not count toward it."""
    port, _, _ = receiver
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        for _ in range(3):
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")
            time.sleep(DEADLINE_S * 1.5)  # idle: aiohttp's keep-alive timeout applies


def test_a_meter_pushing_on_a_connection_idle_past_the_deadline_gets_200(
    receiver: tuple[int, int, str],
) -> None:
    """A meter keeps its connection and pushes now and then: between pushes the connection
    is a keep-alive, not a slow request. (aiohttp re-reads its buffer with an empty
    data_received after a request with a body; that once armed the deadline, and the idle
    connection got a 408, which the meter read as the reply to its next push.)"""
    port, _, token = receiver
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(3):
            body = json.dumps(
                make_payload(apiToken=token, permitNo=f"idle-{uuid.uuid4().hex[:8]}-{i}")
            )
            connection.request("POST", PUSH_PATH, body=body, headers=JSON)
            reply = connection.getresponse()
            assert reply.status == 200, (i, reply.status, reply.read())
            reply.read()
            time.sleep(DEADLINE_S * 1.5)  # idle past the read deadline
    finally:
        connection.close()


def test_slowloris_leaves_pushes_and_open_files_bounded(
    receiver: tuple[int, int, str], tmp_path: Path
) -> None:
    port, pid, token = receiver
    sockets = 800
    result = asyncio.run(
        # The last attacker opens at about 3 s and is cut at about 4 s: 2 s of slack for
        # a loaded machine before the attack stops and counts who is still open.
        attack(port=port, pid=pid, token=token, sockets=sockets, open_s=3.0, run_s=6.0)
    )
    summary = result.summary()
    print(f"\nslowloris: {summary}")
    assert result.opened == sockets, summary
    # Every attacker is cut about at the deadline: none lives past it (with slack for a
    # loaded machine), so at most about (connects per second) x deadline stay open.
    assert result.cut == sockets and result.got_408 == sockets, summary
    assert max(result.lifetimes_s) < DEADLINE_S + 1.0, summary
    assert result.fd_peak - result.fd_baseline < 0.6 * sockets, summary
    assert result.fd_samples[-1] - result.fd_baseline < 0.6 * sockets, summary
    # The meter alongside: every push accepted, and quickly.
    assert set(result.push_statuses) == {200}, summary
    assert len(result.push_latencies_s) > 50, summary
    assert result.push_quantile_ms(0.99) < 250, summary
    log = (tmp_path / "serve.log").read_text(encoding="utf-8")
    assert '"level": "error"' not in log and '"status": 500' not in log
