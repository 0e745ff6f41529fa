"""A small keep-alive HTTP/1.1 load client, run in its own process.

Two modes:
- `rate`: open loop, a fleet of `--connections` meters: requests arrive at random (Poisson)
  times at a fixed total rate, each on an idle connection taken at random, so every
  connection pushes now and then. Latency is measured from the time each request was
  *scheduled*, so a stalled server cannot hide its queueing delay (no coordinated
  omission). A request that finds no idle connection waits for one, its clock running.
- `count`: closed loop, exactly `--count` requests over `--connections` connections; used
  to push a known number of permits for the end-to-end drain.

It speaks raw HTTP over asyncio protocols instead of aiohttp's client: several times
cheaper per request, which matters when client and server share two cores. Why not wrk2,
vegeta or k6: bench/README.md.

    python -m bench.loadclient --port 8080 --token T --mode rate --rate 4000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import uvloop

from harness.slowloris import raise_file_limit

PUSH_PATH = "/api/OC-TOMA/v1/permits/push"
_HEAD = (
    "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    "Accept: application/json\r\nContent-Length: {length}\r\n\r\n"
)


def permit_body(token: str, nonce: str, index: int) -> bytes:
    """A valid permit whose plate and permit number are unique per (nonce, index)."""
    return (
        f'{{"apiToken":"{token}","Amount":"14.50","CurrencyID":"CAD",'
        f'"LicencePlate":"P{nonce}{index}","zone":"Lot 4","permitNo":"{nonce}-{index}",'
        f'"startTime":"2018-07-02T09:00:00","endTime":"2018-07-02T09:30:00"}}'
    ).encode()


def build_request(body: bytes) -> bytes:
    return _HEAD.format(path=PUSH_PATH, length=len(body)).encode() + body


@dataclass
class Stats:
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    outstanding: int = 0
    lost: int = 0  # requests whose connection closed before the reply
    unsolicited: int = 0  # replies on an idle connection (a 408 before closing it)


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, stats: Stats, on_idle: Callable[[Connection], None]) -> None:
        self.stats = stats
        self.on_idle = on_idle
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.started_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they quack alike.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """Closed by the server: a request in flight is lost, and the meter is gone."""
        if self.started_at and self.transport is not None:
            self.stats.lost += 1
            self.stats.outstanding -= 1
        self.transport = None

    def send(self, request: bytes, started_at: float) -> None:
        assert self.transport is not None
        self.started_at = started_at
        self.stats.outstanding += 1
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (status := self._next_reply()) is not None:
            if not self.started_at:  # a reply to no request: a server closing an idle one
                self.stats.unsolicited += 1
                continue
            self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
            self.stats.latencies_s.append(time.perf_counter() - self.started_at)
            self.stats.outstanding -= 1
            self.started_at = 0.0
            self.on_idle(self)

    def _next_reply(self) -> int | None:
        """The status of the next whole reply in the buffer, taken out of it; else None."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return None
        del self.buffer[: end + 4 + length]
        return int(head[0].split()[1])


class Generator:
    """Hands requests to idle connections, taken at random; keeps a backlog when none is."""

    def __init__(self, token: str, nonce: str, seed: int = 0) -> None:
        self.token = token
        self.nonce = nonce
        self.index = 0
        self.stats = Stats()
        self.idle: list[Connection] = []
        self.backlog: deque[float] = deque()
        self.limit: int | None = None  # count mode: stop after this many
        self.random = random.Random(seed)

    def take_idle(self) -> Connection:
        """A random idle connection (swap with the last, then pop: O(1))."""
        position = self.random.randrange(len(self.idle))
        self.idle[position], self.idle[-1] = self.idle[-1], self.idle[position]
        return self.idle.pop()

    def next_request(self) -> bytes:
        self.index += 1
        return build_request(permit_body(self.token, self.nonce, self.index))

    def submit(self, scheduled_at: float) -> None:
        while self.idle:
            conn = self.take_idle()
            if conn.transport is not None:  # else the server closed it while idle
                conn.send(self.next_request(), scheduled_at)
                return
        self.backlog.append(scheduled_at)

    def on_idle(self, conn: Connection) -> None:
        if self.backlog:
            conn.send(self.next_request(), self.backlog.popleft())
        elif self.limit is not None and self.index < self.limit:
            conn.send(self.next_request(), time.perf_counter())
        else:
            self.idle.append(conn)


async def open_connections(gen: Generator, port: int, count: int) -> list[Connection]:
    loop = asyncio.get_running_loop()
    conns: list[Connection] = []
    for _ in range(count):
        _transport, conn = await loop.create_connection(
            lambda: Connection(gen.stats, gen.on_idle), "127.0.0.1", port
        )
        conns.append(conn)
    return conns


async def run_rate(gen: Generator, rate: float, duration_s: float) -> float:
    """Requests at Poisson arrival times, `rate` a second on average, for `duration_s`;
    return the seconds until the last reply (or the drain timeout)."""
    start = time.perf_counter()
    end = start + duration_s
    due = start + gen.random.expovariate(rate)
    while due < end:
        now = time.perf_counter()
        while due <= now and due < end:
            gen.submit(due)
            due += gen.random.expovariate(rate)
        await asyncio.sleep(max(0.0, min(due, end) - time.perf_counter()))
    await _wait_drained(gen, timeout_s=30.0)
    return time.perf_counter() - start


async def run_count(gen: Generator, count: int) -> float:
    """Closed loop: each connection sends its next request when the reply arrives."""
    gen.limit = count
    start = time.perf_counter()
    idle, gen.idle = gen.idle, []
    for position, conn in enumerate(idle):
        if gen.index >= count:
            gen.idle = idle[position:]
            break
        conn.send(gen.next_request(), time.perf_counter())
    while sum(gen.stats.statuses.values()) + gen.stats.lost < count:
        await asyncio.sleep(0.005)
    return time.perf_counter() - start


async def _wait_drained(gen: Generator, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while (gen.stats.outstanding or gen.backlog) and time.perf_counter() < deadline:
        await asyncio.sleep(0.005)


def percentile_ms(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] * 1000


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    raise_file_limit(args.connections + 256)  # a socket a meter, and the rest
    gen = Generator(args.token, args.nonce, args.seed)
    conns = await open_connections(gen, args.port, args.connections)
    gen.idle.extend(conns)
    cpu_started = time.process_time()
    if args.mode == "rate":
        elapsed = await run_rate(gen, args.rate, args.duration)
    else:
        elapsed = await asyncio.wait_for(run_count(gen, args.count), args.timeout)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    ok = gen.stats.statuses.get(200, 0)
    unanswered = len(gen.backlog) + gen.stats.outstanding + gen.stats.lost
    unsolicited = gen.stats.unsolicited
    return {
        "requests": ok,
        "errors": sum(gen.stats.statuses.values()) - ok + unanswered + unsolicited,
        "statuses": gen.stats.statuses,
        "unanswered": unanswered,
        "unsolicited": unsolicited,
        "seconds": elapsed,
        "p50_ms": percentile_ms(gen.stats.latencies_s, 50),
        "p99_ms": percentile_ms(gen.stats.latencies_s, 99),
        "p999_ms": percentile_ms(gen.stats.latencies_s, 99.9),
        # The client shares the cores with the server: say how much of one it took.
        "client_cpu_pct": 100 * (time.process_time() - cpu_started) / elapsed,
    }


def run_in_process(port: int, token: str, *options: str, timeout_s: float) -> dict[str, Any]:
    """This client in a process of its own, with a fresh nonce (new permits); its result."""
    from bench.httpbench import run_nonce  # the bench's side only, not the client's
    from bench.procs import BenchError

    argv = [sys.executable, "-m", "bench.loadclient", "--port", str(port), "--token", token]
    argv += ["--nonce", run_nonce(), *options]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return dict(json.loads(line.removeprefix("BENCH_JSON ")))
    raise BenchError(f"load client printed no result: {out.stderr.strip()[-2000:]}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--nonce", default="r0")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--mode", choices=["rate", "count"], default="rate")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s (rate mode)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (rate mode)")
    parser.add_argument("--count", type=int, default=10_000, help="requests (count mode)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (count mode)")
    parser.add_argument("--seed", type=int, default=0, help="arrival times and connections")
    return parser.parse_args()


if __name__ == "__main__":
    result = uvloop.run(main_async(parse_args()))
    print("BENCH_JSON " + json.dumps(result), flush=True)
