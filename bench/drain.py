"""End-to-end drain (HTTP push to PostgreSQL row) and the queue-growth drain."""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from redis import Redis

from bench import loadclient, pgbase, rqstate
from bench.procs import (
    BenchError,
    CpuMeter,
    ProcessGroup,
    peak_rss_mib,
    python_argv,
    start_profiler,
    stop_profiler,
    wait_http,
)
from bench.service import Service

POLL_S = 0.01


@dataclass(frozen=True, slots=True)
class DrainResult:
    permits: int
    seconds: float
    jobs: int
    worker_peak_rss_mib: float
    worker_cpu_us: float = 0.0  # permit-push workers' CPU per permit
    pg_cpu_us: float = 0.0  # PostgreSQL's CPU (all its processes) per permit

    @property
    def rate(self) -> float:
        return self.permits / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class Stores:
    """The benchmark's Redis db and PostgreSQL database, plus the service pointed at them."""

    redis: Redis
    conninfo: str
    service: Service


def wait_workers(stores: Stores, group: ProcessGroup, count: int, timeout_s: float = 60) -> None:
    """Wait until `count` RQ workers registered: a started worker is ready to dequeue."""
    deadline = time.monotonic() + timeout_s
    while rqstate.workers_registered(stores.redis, stores.service.queue_name) < count:
        group.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{count} workers did not register within {timeout_s:.0f} s")
        time.sleep(0.05)


def wait_first_row(conn: psycopg.Connection[object], group: ProcessGroup, timeout_s: float) -> int:
    """Poll until the permits table has a row; return the count then seen."""
    deadline = time.monotonic() + timeout_s
    while (rows := pgbase.count_rows(conn)) == 0:
        group.check_alive()
        if time.monotonic() > deadline:
            raise BenchError("no permit reached PostgreSQL; see the worker logs")
        time.sleep(POLL_S)
    return rows


def wait_all_rows(
    stores: Stores,
    conn: psycopg.Connection[object],
    group: ProcessGroup,
    expected: int,
    timeout_s: float,
) -> float:
    """Wait until `expected` rows exist; return the time they were seen.

    Watches the queue length first (cheap), and counts rows only once the queue is empty,
    so count(*) over 10^6 rows does not compete with the worker for most of the drain.
    """
    deadline = time.monotonic() + timeout_s
    while rqstate.queue_length(stores.redis, stores.service.queue_name) > 0:
        group.check_alive()
        if time.monotonic() > deadline:
            raise BenchError("the queue did not drain in time")
        time.sleep(POLL_S)
    while (rows := pgbase.count_rows(conn)) < expected:
        group.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"only {rows} of {expected} permits reached PostgreSQL")
        time.sleep(POLL_S)
    return time.perf_counter()


def push_count(port: int, token: str, count: int, connections: int) -> int:
    """Push `count` unique permits through the receiver; return how many got a 200."""
    options = ("--mode", "count", "--count", str(count), "--connections", str(connections))
    result = loadclient.run_in_process(port, token, *options, timeout_s=1800)
    if result["errors"]:
        raise BenchError(f"pushes failed: {result['statuses']}")
    return int(result["requests"])


def end_to_end(
    stores: Stores,
    group: ProcessGroup,
    token: str,
    *,
    count: int,
    receivers: int,
    workers: int,
    port: int,
) -> DrainResult:
    """Receiver and workers up; push `count` permits; time until the last one is a row."""
    with psycopg.connect(stores.conninfo, autocommit=True) as conn:
        pgbase.truncate(conn, ["permits"])
        rqstate.reset_keep_tokens(stores.redis)
        worker_procs = stores.service.start_workers(group, workers)
        receiver = stores.service.start_receiver(group, port, receivers)
        wait_http(port, group)
        wait_workers(stores, group, workers)
        meters = cpu_meters(stores, worker_procs)
        started = time.perf_counter()
        pushed = push_count(port, token, count, connections=64)
        done = wait_all_rows(stores, conn, group, pushed, timeout_s=1800)
        cpu = [1e6 * m.used() / max(pushed, 1) for m in meters]
        peak = max(peak_rss_mib(p.pid) for p in worker_procs)
        for proc in [*receiver, *worker_procs]:
            group.stop(proc)
        jobs = rqstate.finished_jobs(stores.redis, stores.service.queue_name)
    return DrainResult(pushed, done - started, jobs, peak, *cpu)


def cpu_meters(stores: Stores, workers: list[subprocess.Popen[bytes]]) -> list[CpuMeter]:
    """Meters for the workers and for PostgreSQL (empty when its pid is unknown)."""
    postmaster = pgbase.postmaster_pid(stores.conninfo)
    return [CpuMeter([p.pid for p in workers]), CpuMeter([postmaster] if postmaster else [])]


def fill_queue(
    stores: Stores, group: ProcessGroup, token: str, count: int, batch: int, fillers: int
) -> None:
    """Enqueue `count` permits with `fillers` processes running bench.fill."""
    share = -(-count // fillers)
    procs = []
    for i in range(fillers):
        n = min(share, count - i * share)
        if n <= 0:
            break
        argv = python_argv(
            "-m",
            "bench.fill",
            "--count",
            str(n),
            "--batch",
            str(batch),
            "--token",
            token,
            "--nonce",
            f"g{i}{uuid.uuid4().hex[:5]}",
        )
        # No depth limit while filling: the point is a backlog past what the receiver would
        # let build up (MAX_QUEUE_DEPTH counts jobs; 20 000 by default).
        env = {**stores.service.env(), "MAX_QUEUE_DEPTH": "0"}
        procs.append(group.start(f"fill-{i}", argv, env))
    for proc in procs:
        if proc.wait() != 0:
            raise BenchError(f"bench.fill exited with {proc.returncode}; see its log")
        group.stop(proc)


def queued_drain(
    stores: Stores,
    group: ProcessGroup,
    token: str,
    *,
    count: int,
    batch: int,
    workers: int,
    fillers: int,
    profile_dir: Path | None = None,
) -> DrainResult:
    """Fill the queue with no worker, start the workers, time the drain.

    The clock starts at the first row, not at the worker's start: the worker's imports and
    first connection are a fixed cost that would swamp the 10^3 case and hide the trend.
    """
    with psycopg.connect(stores.conninfo, autocommit=True) as conn:
        pgbase.truncate(conn, ["permits"])
        rqstate.reset_keep_tokens(stores.redis)
        fill_queue(stores, group, token, count, batch, fillers)
        jobs = rqstate.queue_length(stores.redis, stores.service.queue_name)
        worker_procs = stores.service.start_workers(group, workers)
        first_rows = wait_first_row(conn, group, timeout_s=120)
        meters = cpu_meters(stores, worker_procs)
        first_at = time.perf_counter()
        spies = [
            start_profiler(group, p.pid, profile_dir / f"worker-{count}-{i}.txt")
            for i, p in enumerate(worker_procs)
            if profile_dir is not None
        ]
        done = wait_all_rows(stores, conn, group, count, timeout_s=3600)
        cpu = [1e6 * m.used() / max(count - first_rows, 1) for m in meters]
        peak = max(peak_rss_mib(p.pid) for p in worker_procs)
        for spy in spies:
            stop_profiler(group, spy)
        for proc in worker_procs:
            group.stop(proc)
    return DrainResult(count - first_rows, done - first_at, jobs, peak, *cpu)
