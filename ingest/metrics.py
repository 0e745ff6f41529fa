"""The receiver's Prometheus metrics: what this process did, and the queue as RQ holds it.

Two kinds of figures (deploy/metrics.yml lists every name, with its labels and scope):

- per receiver: requests, latency, enqueue time, batch sizes, rejections. Counted here.
  With PROMETHEUS_MULTIPROC_DIR set, prometheus-client keeps them in files in that
  directory, one per process, and a scrape of any process sums them all.
- global: queue depth by RQ state, lag, workers, and the permit figures the workers
  publish. Read from Redis at each scrape (shared/queue_stats.py), never counted here,
  so they cannot drift; every receiver reports the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from shared.config import Settings
from shared.queue_stats import read_queue_stats

log = structlog.get_logger(__name__)

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

# A push is answered in a few milliseconds; the tail up to the 10 s a meter may wait.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ENQUEUE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class ReceiverMetrics:
    """This receiver's instruments and the registry /metrics renders."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        own = CollectorRegistry()
        self.requests = Counter(
            "permit_push_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=own,
        )
        self.request_duration = Histogram(
            "permit_push_http_request_duration_seconds",
            "Time from receiving a request to having its reply, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=own,
        )
        self.enqueue_duration = Histogram(
            "permit_push_enqueue_duration_seconds",
            "Time to write one micro-batch to Redis (de-duplication keys and its RQ job).",
            buckets=ENQUEUE_BUCKETS_S,
            registry=own,
        )
        self.batch_size = Histogram(
            "permit_push_batch_size",
            "Pushes per micro-batch, i.e. per RQ job.",
            buckets=BATCH_BUCKETS,
            registry=own,
        )
        self.rejected = Counter(
            "permit_push_rejected",
            "Pushes refused, by the OPS-COM ErrorCode of the reply.",
            ["error_code"],
            registry=own,
        )
        # Each label set's child, looked up once: ``labels()`` takes a lock and builds
        # the key on every call. The label values are few (routes, methods, statuses).
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self._rejected: dict[int, Counter] = {}
        queue_figures = QueueCollector(redis, [settings.queue_name])
        if settings.prometheus_multiproc_dir:
            # The instruments above write to files there; this sums every process's files.
            self.registry = CollectorRegistry()
            path = settings.prometheus_multiproc_dir
            MultiProcessCollector(self.registry, path=path)  # type: ignore[no-untyped-call]
        else:
            self.registry = own
        self.registry.register(queue_figures)

    def request_done(
        self, route: str, method: str, status: int, error_code: int | None, elapsed_s: float
    ) -> None:
        """Count one answered request; ``error_code``: a rejected push's OPS-COM code."""
        key = (route, method, status)
        if (counter := self._requests.get(key)) is None:
            counter = self._requests[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        if (duration := self._durations.get(route)) is None:
            duration = self._durations[route] = self.request_duration.labels(route)
        duration.observe(elapsed_s)
        if error_code is not None:
            if (rejected := self._rejected.get(error_code)) is None:
                rejected = self._rejected[error_code] = self.rejected.labels(str(error_code))
            rejected.inc()

    def timed_flush(
        self, flush: Callable[[list[Item]], list[Outcome]]
    ) -> Callable[[list[Item]], list[Outcome]]:
        """``flush`` (one batch to Redis), observing the batch's size and its enqueue time."""

        def timed(items: list[Item]) -> list[Outcome]:
            self.batch_size.observe(len(items))
            with self.enqueue_duration.time():
                return flush(items)

        return timed


class QueueCollector(Collector):
    """rq-exporter's ``rq_jobs`` and ``rq_workers``, the queue lag and the permit figures.

    Read at each scrape in three pipelined round trips. When Redis does not answer, the
    scrape still succeeds without these figures (and the warning says why), so the
    receiver's own metrics stay visible and ``up`` keeps meaning "the receiver answers".
    """

    def __init__(self, redis: Redis, queue_names: Sequence[str]) -> None:
        self._redis = redis
        self._queue_names = list(queue_names)

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to read from Redis at registration time

    def collect(self) -> Iterable[Metric]:
        try:
            stats = read_queue_stats(self._redis, self._queue_names)
        except RedisError as exc:
            log.warning("queue_stats_unavailable", error=type(exc).__name__)
            return []
        jobs = GaugeMetricFamily(
            "rq_jobs",
            "RQ jobs by queue and status (RQ's lists and registries).",
            labels=["queue", "status"],
        )
        lag = GaugeMetricFamily(
            "permit_push_queue_lag_seconds",
            "Age of the oldest job waiting in the queue (0 when empty).",
            labels=["queue"],
        )
        for queue in stats.queues:
            for status, count in queue.jobs.items():
                jobs.add_metric([queue.name, status], count)
            lag.add_metric([queue.name], queue.lag_s)
        workers = GaugeMetricFamily(
            "rq_workers",
            "RQ workers registered in Redis, one series each (value 1).",
            labels=["name", "queues", "state"],
        )
        for worker in stats.workers:
            workers.add_metric([worker.name, worker.queues, worker.state], 1)
        families: list[Metric] = [jobs, lag, workers]
        families += self._memory()
        permits = stats.permits
        published: list[tuple[Callable[..., Metric], str, str, int | None]] = [
            (
                CounterMetricFamily,
                "permit_push_permits_stored",
                "Permits the workers inserted (a resend or re-run adds nothing).",
                permits.stored_total,
            ),
            (
                GaugeMetricFamily,
                "permit_push_permits_disconnected",
                "Stored permits whose zone name matches no zone or alias.",
                permits.disconnected,
            ),
            (
                GaugeMetricFamily,
                "permit_push_dead_letters",
                "Rows in the dead-letter table not yet requeued.",
                permits.dead_letters,
            ),
        ]
        for family, name, documentation, figure in published:
            if figure is not None:  # not published (yet, or any more): no series, not 0
                families.append(family(name, documentation, value=figure))
        return families

    def _memory(self) -> list[Metric]:
        """Redis used_memory and maxmemory: one INFO per scrape (none if Redis refuses it)."""
        try:
            info = self._redis.info("memory")
        except RedisError as exc:
            log.warning("redis_memory_unavailable", error=type(exc).__name__)
            return []
        return [
            GaugeMetricFamily(
                "permit_push_redis_memory_used_bytes",
                "Redis used_memory (INFO memory).",
                value=int(info.get("used_memory", 0)),
            ),
            GaugeMetricFamily(
                "permit_push_redis_memory_max_bytes",
                "Redis maxmemory (0: no limit); pushes get 503 past REDIS_MEMORY_SHARE of it.",
                value=int(info.get("maxmemory", 0)),
            ),
        ]


def prepare_multiprocess_dir(path: str) -> None:
    """Empty PROMETHEUS_MULTIPROC_DIR before the receiver processes start.

    Files left by an earlier run would be summed into this run's counters. Call it once,
    in the parent, before any process serves a request.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
