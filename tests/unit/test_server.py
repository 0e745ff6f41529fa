"""Malformed HTTP, answered by aiohttp before any middleware: JSON too, and no traceback;
and the receiver's start-up heap kept out of garbage collections."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import fakeredis
import orjson
import pytest
from aiohttp import web

from ingest.app import create_app
from ingest.server import JsonErrorAppRunner, run_app
from shared.config import Settings

MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"POST /api/OC-TOMA/v1/permits/push HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /api/OC-TOMA/v1/permits/push HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the HTTP port
    b"GET / HTTP/9.9\r\n\r\n",
]


async def exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return reply


@pytest.mark.parametrize("raw", MALFORMED, ids=range(len(MALFORMED)))
async def test_malformed_http_gets_a_json_400_and_one_log_line(
    settings: Settings, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    runner = JsonErrorAppRunner(create_app(settings, redis=fakeredis.FakeRedis()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with caplog.at_level(logging.DEBUG):
            reply = await exchange(port, raw)
    finally:
        await runner.cleanup()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", reply[:200]
    assert b"Content-Type: application/json" in head
    parsed = orjson.loads(body)
    assert (parsed["status"], parsed["ErrorCode"]) == ("error", 9003)
    assert "Traceback" not in caplog.text


def test_the_receiver_freezes_its_start_up_heap_once_it_serves() -> None:
    """What start-up built is frozen (gc.freeze) while the receiver serves."""
    assert gc.get_freeze_count() == 0
    loop = asyncio.new_event_loop()
    deadline = time.monotonic() + 10
    frozen: list[int] = []

    def stop_once_frozen() -> None:
        if gc.get_freeze_count() == 0 and time.monotonic() < deadline:
            loop.call_later(0.05, stop_once_frozen)
            return
        frozen.append(gc.get_freeze_count())
        raise web.GracefulExit  # what aiohttp's SIGINT/SIGTERM handler raises

    loop.call_soon(stop_once_frozen)
    try:
        run_app(web.Application(), host="127.0.0.1", port=0, shutdown_timeout=1, loop=loop)
    finally:
        gc.unfreeze()  # the rest of the test session collects as before
    assert frozen and frozen[0] > 10_000  # modules, classes, aiohttp: thousands of objects
