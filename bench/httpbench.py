"""Receiver throughput: the same wrk load against each target, one after the other."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from bench.procs import BenchError, ProcessGroup, cpu_seconds, python_argv, wait_http
from bench.results import LoadResult
from bench.servers.common import PUSH_PATH
from bench.wrkload import WrkSettings, run_wrk

WARMUP_S = 2.0


def start_bare(group: ProcessGroup, port: int, processes: int) -> None:
    argv = python_argv("-m", "bench.servers.bare", "--port", str(port))
    group.start("bare", [*argv, "--processes", str(processes)])


def start_naive(group: ProcessGroup, port: int, processes: int, redis_url: str) -> None:
    argv = python_argv("-m", "bench.servers.naive", "--port", str(port))
    group.start("naive", [*argv, "--processes", str(processes)], {"REDIS_URL": redis_url})


def start_floor(group: ProcessGroup, port: int, processes: int, env: dict[str, str]) -> None:
    """``env``: permit-push's own (its Redis and any --service-env), so both batch alike."""
    argv = python_argv("-m", "bench.servers.floor", "--port", str(port))
    group.start("floor", [*argv, "--processes", str(processes)], env)


@contextlib.contextmanager
def running(group: ProcessGroup, start: Callable[[], object], port: int) -> Iterator[list[int]]:
    """Start a target's processes, wait until it answers, yield their pids, stop them."""
    before = {id(p) for _, p in group.procs}
    start()
    started = [p for _, p in group.procs if id(p) not in before]
    try:
        wait_http(port, group)
        yield [p.pid for p in started]
    finally:
        for proc in started:
            group.stop(proc)


def redis_cpu_seconds(redis: Redis) -> float:
    info = redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def with_cpu(run: Callable[[], LoadResult], pids: list[int], redis: Redis) -> LoadResult:
    """Run a load and attach the target's and Redis's CPU per successful request."""
    server0, redis0 = cpu_seconds(pids), redis_cpu_seconds(redis)
    result = run()
    per_request = 1e6 / max(result.requests, 1)
    return dataclasses.replace(
        result,
        server_cpu_us=(cpu_seconds(pids) - server0) * per_request,
        redis_cpu_us=(redis_cpu_seconds(redis) - redis0) * per_request,
    )


@dataclass(frozen=True, slots=True)
class Target:
    """A running receiver under test."""

    name: str
    port: int
    pids: list[int]
    counts_batches: bool = False  # permit-push: its /metrics counts permits and batches

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PUSH_PATH}"


def warm_up(target: Target, token: str, wrk: WrkSettings) -> None:
    """A short unreported run: connections, caches and code paths get warm."""
    run_wrk(target.url, token, run_nonce(), WrkSettings(wrk.threads, wrk.connections, WARMUP_S))


def one_run(target: Target, token: str, wrk: WrkSettings, redis: Redis) -> LoadResult:
    """One closed-loop wrk run, with the target's and Redis's CPU per request (and the
    permits a batch, where the target counts them)."""
    run = functools.partial(run_wrk, target.url, token, run_nonce(), wrk)
    if not target.counts_batches:
        return with_cpu(run, target.pids, redis)
    permits0, batches0 = batch_figures(target.port)
    result = with_cpu(run, target.pids, redis)
    permits, batches = batch_figures(target.port)
    return dataclasses.replace(result, mean_batch=(permits - permits0) / max(batches - batches0, 1))


def batch_figures(port: int) -> tuple[float, float]:
    """(permits, batches) the receiver has counted so far: its batch-size histogram."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "permit_push_batch_size":
            values = {sample.name: sample.value for sample in family.samples}
            return (
                values["permit_push_batch_size_sum"],
                values["permit_push_batch_size_count"],
            )
    raise BenchError("the receiver's /metrics has no permit_push_batch_size")


def run_nonce() -> str:
    # Short: it goes into the plate (25 characters at most) with a thread tag and counter.
    return uuid.uuid4().hex[:6]
