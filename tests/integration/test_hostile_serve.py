"""Hostile clients against a real `permit-push serve` process."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import zlib
from pathlib import Path

from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from ingest.routes import BATCH_PATH, PUSH_PATH
from shared.config import Settings
from shared.ports import free_port, wait_for_port
from tests.support.processes import running

GIB = 1 << 30


def gzip_bomb(inflated: int) -> bytes:
    """A gzip stream of ``inflated`` bytes of JSON white space: about 1/1000 on the wire."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    parts = [packer.compress(b"[")]
    parts += [packer.compress(block) for _ in range(inflated >> 20)]
    return b"".join([*parts, packer.flush()])


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    """The reply's status, read while the body is still being sent (as curl does)."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        sender = threading.Thread(target=_send, args=(connection, head.encode() + body))
        sender.start()
        reply = connection.recv(65536)
        sender.join()
    return int(reply.split(b" ")[1])


def _send(connection: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the receiver closes once it has answered
        connection.sendall(data)


def healthz_s(port: int) -> float:
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    return time.monotonic() - started


def test_a_gzip_bomb_gets_413_quickly_and_is_not_inflated_after(
    pg_settings: Settings, pg_sessions: sessionmaker[Session], real_redis: Redis, tmp_path: Path
) -> None:
    env = {"REDIS_URL": pg_settings.redis_url, "DATABASE_URL": pg_settings.database_url}
    bomb = gzip_bomb(4 * GIB)  # ~4 MB on the wire, 4 GiB inflated
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    port = free_port()
    with running("serve", "--port", str(port), env=env, log=tmp_path / "serve.log"):
        wait_for_port(port)
        for path in (PUSH_PATH, BATCH_PATH):
            started = time.monotonic()
            assert post(port, path, bomb, headers) == 413
            answered_s = time.monotonic() - started
            # The receiver must not go on inflating the rest of the body after its 413
            # (aiohttp's lingering close reads, and inflates, up to 10 s of it).
            busy_s = healthz_s(port)
            assert answered_s < 2.0 and busy_s < 0.5, (path, answered_s, busy_s)
