"""The fleet phase's parts: the peak search (bench/fleet.py) and the open-loop client
(bench/loadclient.py) against a small local server."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from bench import fleet
from bench.loadclient import PUSH_PATH, main_async
from bench.results import LoadResult


def fake_runs(limit: float, tried: list[float]) -> Callable[[float], fleet.FleetRun]:
    """Runs that pass at or under `limit` req/s (p99 1 ms) and fail above (p99 100 ms);
    each rate tried is noted in `tried`."""

    def run_at(rate: float) -> fleet.FleetRun:
        tried.append(rate)
        p99 = 1.0 if rate <= limit else 100.0
        return fleet.FleetRun(rate, LoadResult(int(rate), 0, 1.0, 0.5, p99))

    return run_at


def test_the_peak_search_doubles_then_bisects_to_the_highest_passing_rate() -> None:
    tried: list[float] = []
    peak, runs = fleet.find_peak(fake_runs(1300, tried))
    assert tried[:4] == [250, 500, 1000, 2000]  # doubling until the first failure
    assert len(tried) == 4 + fleet.BISECTIONS
    assert peak == 1250  # 1000 < 1250 <= 1300 < 1312.5: within 1/16 of the last doubling
    assert [run.passed for run in runs] == [rate <= 1300 for rate in tried]


def test_a_search_whose_first_rate_fails_finds_no_peak() -> None:
    tried: list[float] = []
    assert fleet.find_peak(fake_runs(100, tried))[0] == 0.0
    assert tried == [fleet.START_RATE]


def test_a_run_fails_on_errors_or_workers_left_behind() -> None:
    fine = LoadResult(100, 0, 1.0, 0.5, 1.0)
    assert fleet.FleetRun(100, fine).passed
    assert not fleet.FleetRun(100, LoadResult(99, 1, 1.0, 0.5, 1.0)).passed
    assert not fleet.FleetRun(100, fine, behind_s=fleet.BEHIND_BOUND_S + 0.1).passed


class Stalls:
    """A push handler that stalls every reply for a while once, when told."""

    def __init__(self) -> None:
        self.peers: Counter[int] = Counter()
        self.stall_until = 0.0

    async def push(self, request: web.Request) -> web.Response:
        await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers[peer[1] if peer else 0] += 1
        if (wait := self.stall_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        return web.json_response({"status": "success"})


@pytest.fixture
async def server() -> AsyncIterator[tuple[Stalls, int]]:
    handler = Stalls()
    app = web.Application()
    app.router.add_post(PUSH_PATH, handler.push)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield handler, port
    await runner.cleanup()


def client_args(port: int, **overrides: object) -> argparse.Namespace:
    args = {"port": port, "token": "t", "nonce": "n", "connections": 40, "mode": "rate"}
    args |= {"rate": 300.0, "duration": 1.0, "count": 0, "timeout": 10.0, "seed": 1}
    return argparse.Namespace(**(args | overrides))


async def test_the_open_loop_spreads_pushes_over_the_connections(
    server: tuple[Stalls, int],
) -> None:
    handler, port = server
    result = await main_async(client_args(port))
    requests = result["requests"]
    assert isinstance(requests, int) and 200 <= requests <= 400  # Poisson around 300
    assert result["errors"] == 0
    assert sum(handler.peers.values()) == requests
    # Each request on an idle connection taken at random: nearly all 40 are used.
    assert len(handler.peers) >= 35


async def test_a_stalled_server_shows_in_the_latency_of_requests_scheduled_meanwhile(
    server: tuple[Stalls, int],
) -> None:
    """No coordinated omission: latency runs from each request's scheduled send."""
    handler, port = server
    handler.stall_until = time.monotonic() + 0.3
    # One connection: timed from its actual send, only the first request would be slow.
    result = await main_async(client_args(port, connections=1, rate=200.0))
    assert result["errors"] == 0
    # The ~60 requests scheduled during the stall waited for the connection, and count it.
    p99 = result["p99_ms"]
    assert isinstance(p99, float) and p99 >= 150


class ClosesAfterEachReply(asyncio.Protocol):
    """A server with the old keep-alive fault: after its reply to a push, a 408 that
    no request asked for, and the connection closed."""

    REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.received = b""

    def data_received(self, data: bytes) -> None:
        self.received += data
        if b"}" in self.received:  # the whole permit body is in
            assert isinstance(self.transport, asyncio.Transport)
            self.transport.write(self.REPLY + self.TIMEOUT)
            self.transport.close()


async def test_replies_nobody_asked_for_count_as_errors() -> None:
    server = await asyncio.get_running_loop().create_server(ClosesAfterEachReply, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await main_async(client_args(port, connections=60, rate=100.0, duration=0.4))
    finally:
        server.close()
    answered = result["requests"]
    assert isinstance(answered, int) and answered > 0
    assert result["unsolicited"] == answered  # each 200 came with a 408 behind it
    assert result["errors"] == answered + result["unanswered"]
