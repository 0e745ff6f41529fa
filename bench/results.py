"""Result records shared by the load generators and the report."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One load run against one target."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    client_cpu_pct: float = 0.0  # the load client's own CPU, % of one core (Python client)
    server_cpu_us: float = 0.0  # the target's processes' CPU per successful request
    redis_cpu_us: float = 0.0  # redis-server's CPU per successful request
    p999_ms: float = 0.0  # open loop only (bench.loadclient); wrk reports no p99.9 here
    mean_batch: float = 0.0  # permits a batch (RQ job), from the receiver's own metrics

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def median_by_rps(runs: list[LoadResult]) -> LoadResult:
    """The run with the median throughput (its own latencies stay with it)."""
    ordered = sorted(runs, key=lambda r: r.rps)
    return ordered[(len(ordered) - 1) // 2]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# The receiver measured with its workers draining on the same cores (bench/run.py).
ONE_BOX = "one box"
ONE_BOX_QUEUE = "permits-one-box"
