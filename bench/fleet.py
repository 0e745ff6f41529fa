"""Phase `fleet`: a fleet-shaped open loop, the way meters load the service.

Thousands of meters, each on its own kept-alive connection, push now and then: requests
arrive at random (Poisson) times at a fixed total rate, and a slow reply does not slow
the fleet down (bench.loadclient, latency from each request's scheduled send).

Two targets on the same cores, one after the other: the bare aiohttp handler (the
ceiling) and permit-push as one box (`serve` plus its workers draining into PostgreSQL).
For each, the peak: the highest rate whose run holds p99 at or under P99_BOUND_MS with
every request answered 2xx, and, for permit-push, the workers keeping up. The search
doubles the rate from START_RATE until a run fails, then halves the gap BISECTIONS times.
Then permit-push runs at 80% of its peak.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bench import httpbench, loadclient, rqstate
from bench.drain import Stores, wait_workers
from bench.procs import CpuMeter, ProcessGroup
from bench.results import LoadResult
from shared.ports import free_port

P99_BOUND_MS = 25.0
# The first rate of the search, and the rate of the latency goal for a lone push.
START_RATE = 250.0
BISECTIONS = 4
MAX_RATE = 64_000.0
# Permits still queued when the load stops, in seconds of that load: above this, the
# workers did not keep up and the rate is not one the box can hold.
BEHIND_BOUND_S = 1.0


@dataclass(frozen=True, slots=True)
class FleetRun:
    """One open-loop run at one offered rate."""

    offered: float
    load: LoadResult
    mean_batch: float = 0.0  # permits per RQ job (the receiver's own metrics)
    behind_s: float = 0.0  # permits queued at the end, in seconds of the offered rate
    worker_cpu_us: float = 0.0  # the workers' CPU per permit pushed

    @property
    def passed(self) -> bool:
        return (
            self.load.errors == 0
            and self.load.p99_ms <= P99_BOUND_MS
            and self.behind_s <= BEHIND_BOUND_S
        )


@dataclass
class FleetResult:
    connections: int
    duration_s: float
    runs: dict[str, list[FleetRun]] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)
    at_80: FleetRun | None = None


def find_peak(run_at: Callable[[float], FleetRun]) -> tuple[float, list[FleetRun]]:
    """The highest passing rate found: double from START_RATE, then bisect. 0: none passed."""
    runs: list[FleetRun] = []
    good, bad, rate = 0.0, 0.0, START_RATE
    while not bad and rate <= MAX_RATE:
        runs.append(run := run_at(rate))
        if run.passed:
            good, rate = rate, rate * 2
        else:
            bad = rate
    if good and bad:
        for _ in range(BISECTIONS):
            middle = (good + bad) / 2
            runs.append(run := run_at(middle))
            good, bad = (middle, bad) if run.passed else (good, middle)
    return good, runs


@dataclass(frozen=True, slots=True)
class Fleet:
    """The phase's settings and what it runs against; `measure` runs it."""

    group: ProcessGroup
    stores: Stores
    token: str
    processes: int
    workers: int
    connections: int
    duration_s: float

    def measure(self) -> FleetResult:
        result = FleetResult(self.connections, self.duration_s)
        with self._bare() as run_bare:
            result.peak["bare"], result.runs["bare"] = find_peak(run_bare)
        with self._one_box() as run_push:
            result.peak["permit-push"], result.runs["permit-push"] = find_peak(run_push)
            if result.peak["permit-push"]:
                result.at_80 = run_push(0.8 * result.peak["permit-push"])
        return result

    def _load(
        self, port: int, pids: list[int], rate: float, duration_s: float | None = None
    ) -> LoadResult:
        """One open-loop run (bench.loadclient in its own process), with the target's and
        Redis's CPU per request."""
        duration_s = duration_s or self.duration_s
        options = [
            *("--mode", "rate", "--rate", f"{rate:.0f}", "--duration", f"{duration_s:g}"),
            *("--connections", str(self.connections)),
        ]

        def load() -> LoadResult:
            raw = loadclient.run_in_process(port, self.token, *options, timeout_s=duration_s + 120)
            return LoadResult(
                raw["requests"],
                raw["errors"],
                raw["seconds"],
                raw["p50_ms"],
                raw["p99_ms"],
                raw["client_cpu_pct"],
                p999_ms=raw["p999_ms"],
            )

        return httpbench.with_cpu(load, pids, self.stores.redis)

    @contextlib.contextmanager
    def _bare(self) -> Iterator[Callable[[float], FleetRun]]:
        """The bare handler started; yields a function running one rate against it."""
        port = free_port()
        start = functools.partial(httpbench.start_bare, self.group, port, self.processes)
        with httpbench.running(self.group, start, port) as pids:
            self._load(port, pids, START_RATE, httpbench.WARMUP_S)  # unreported
            yield lambda rate: FleetRun(rate, self._load(port, pids, rate))

    @contextlib.contextmanager
    def _one_box(self) -> Iterator[Callable[[float], FleetRun]]:
        """permit-push's receivers and workers started; yields a function running one rate."""
        group, service, redis = self.group, self.stores.service, self.stores.redis
        port = free_port()
        worker_procs = service.start_workers(group, self.workers)
        try:
            wait_workers(self.stores, group, self.workers)
            start = functools.partial(service.start_receiver, group, port, self.processes)
            with httpbench.running(group, start, port) as pids:
                # Unreported: connections, caches and code paths get warm, as in phase 1.
                self._load(port, pids, START_RATE, httpbench.WARMUP_S)

                def run_at(rate: float) -> FleetRun:
                    rqstate.wait_drained(redis, service.queue_name, group)
                    rqstate.reset_keep_tokens(redis)
                    cpu = CpuMeter([p.pid for p in worker_procs])
                    permits0, batches0 = httpbench.batch_figures(port)
                    run = self._load(port, pids, rate)
                    queued_jobs = rqstate.queue_length(redis, service.queue_name)
                    permits, batches = httpbench.batch_figures(port)
                    mean_batch = (permits - permits0) / max(batches - batches0, 1)
                    return FleetRun(
                        rate,
                        run,
                        mean_batch=mean_batch,
                        behind_s=queued_jobs * mean_batch / rate,
                        worker_cpu_us=cpu.used() * 1e6 / max(run.requests, 1),
                    )

                yield run_at
        finally:
            for proc in worker_procs:
                group.stop(proc)
