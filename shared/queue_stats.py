"""Queue figures read straight from RQ's own keys in Redis, in three pipelined round trips.

Nothing here counts on its own: every figure is the size of one of RQ's lists or
registries (the keys `rq info` and rq-dashboard read through RQ's API), so it cannot
drift from what RQ holds. The key names come from RQ's classes, not from strings of ours.

Reads only. RQ's own `registry.count` first runs `cleanup()`, which moves abandoned jobs
and deletes expired entries; a scrape must not change the queue, so expired entries
(score at or below now) are left out with ZCOUNT instead, which gives the number RQ
would report after its cleanup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import (
    BaseRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.utils import utcparse

from shared.constants import DB_STATS_KEY, PERMITS_STORED_KEY

# rq-exporter's `status` label values, in the order `rq info` thinks of them.
JOB_STATUSES = ("queued", "started", "deferred", "scheduled", "failed", "finished")

# Registries whose score is an expiry time (RQ's cleanup drops entries at or below now).
# Deferred jobs are scored by creation time and scheduled jobs by when they are due, and
# RQ never expires either, so those are counted whole.
_EXPIRING: dict[str, type[BaseRegistry]] = {
    "started": StartedJobRegistry,
    "failed": FailedJobRegistry,
    "finished": FinishedJobRegistry,
}
_NON_EXPIRING: dict[str, type[BaseRegistry]] = {
    "deferred": DeferredJobRegistry,
    "scheduled": ScheduledJobRegistry,
}

_REGISTRY_STATUSES = (*_EXPIRING, *_NON_EXPIRING)

# The head of a queue is normally its oldest job. A few more ids are read, and the oldest
# of them taken, in case the first has been deleted (RQ skips such ids when it dequeues)
# or was pushed to the front (reconcile jobs are), without reading the whole list.
HEAD_SAMPLE = 5


@dataclass(frozen=True, slots=True)
class QueueFigures:
    name: str
    jobs: dict[str, int]  # status -> number of jobs, for every status of JOB_STATUSES
    lag_s: float  # age of the oldest queued job; 0 when nothing is queued


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    name: str
    queues: str  # comma-separated, as RQ stores it and rq-exporter labels it
    state: str  # idle | busy | started | suspended ("?" before RQ sets one)


@dataclass(frozen=True, slots=True)
class PermitFigures:
    """What the workers publish about stored permits (see worker/stats.py)."""

    stored_total: int | None  # permits inserted since Redis last lost its data
    disconnected: int | None  # stored permits whose zone matched nothing
    dead_letters: int | None  # rows in the dead-letter table not yet requeued


@dataclass(frozen=True, slots=True)
class QueueStats:
    queues: list[QueueFigures]
    workers: list[WorkerFigures]
    permits: PermitFigures = field(default_factory=lambda: PermitFigures(None, None, None))

    def queue(self, name: str) -> QueueFigures:
        return next(figures for figures in self.queues if figures.name == name)


def read_queue_stats(redis: Redis, queue_names: list[str], now: float | None = None) -> QueueStats:
    """Every queue RQ knows (plus ``queue_names``), its workers, and the published counts.

    Three round trips whatever the sizes of the queues: the names of queues and workers;
    each queue's sizes and head; the heads' enqueue times and the workers' states.
    """
    now = time.time() if now is None else now
    prefix = Queue.redis_queue_namespace_prefix
    with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(Queue.redis_queues_keys)
        pipe.smembers(Worker.redis_workers_keys)
        pipe.get(PERMITS_STORED_KEY)
        pipe.hmget(DB_STATS_KEY, ["disconnected", "dead_letters"])
        known_keys, worker_keys, stored, (disconnected, dead) = pipe.execute()
    names = sorted({_text(key).removeprefix(prefix) for key in known_keys} | set(queue_names))
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(prefix + name)
            pipe.lrange(prefix + name, 0, HEAD_SAMPLE - 1)
            for registry in _EXPIRING.values():
                pipe.zcount(_registry_key(registry, name), f"({now}", "+inf")
            for registry in _NON_EXPIRING.values():
                pipe.zcard(_registry_key(registry, name))
        per_queue = pipe.execute()
    width = 2 + len(_EXPIRING) + len(_NON_EXPIRING)
    heads: dict[str, list[str]] = {}
    counts: dict[str, dict[str, int]] = {}
    for i, name in enumerate(names):
        queued, head, *sizes = per_queue[i * width : (i + 1) * width]
        heads[name] = [_text(job_id) for job_id in head]
        counts[name] = {"queued": queued, **dict(zip(_REGISTRY_STATUSES, sizes, strict=True))}
    worker_keys = sorted(_text(key) for key in worker_keys)
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            for job_id in heads[name]:
                pipe.hget(Job.key_for(job_id), "enqueued_at")
        for key in worker_keys:
            pipe.hmget(key, ["state", "queues", "birth", "death"])
        details = iter(pipe.execute())
    queues = []
    for name in names:
        enqueued = [next(details) for _ in heads[name]]
        oldest = min((utcparse(_text(at)).timestamp() for at in enqueued if at), default=None)
        lag_s = max(0.0, now - oldest) if oldest is not None and counts[name]["queued"] else 0.0
        jobs = {status: counts[name][status] for status in JOB_STATUSES}
        queues.append(QueueFigures(name, jobs, lag_s))
    workers = []
    for key in worker_keys:
        state, worker_queues, birth, death = next(details)
        # No birth: the key expired (RQ's Worker.all skips it too); death: it is stopping.
        if birth is None or death is not None:
            continue
        workers.append(
            WorkerFigures(
                key.removeprefix(Worker.redis_worker_namespace_prefix),
                _text(worker_queues or b""),
                _text(state or b"?"),
            )
        )
    permits = PermitFigures(_int(stored), _int(disconnected), _int(dead))
    return QueueStats(queues, workers, permits)


def _registry_key(registry: type[BaseRegistry], queue_name: str) -> str:
    return str(registry.key_template.format(queue_name))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _int(value: bytes | None) -> int | None:
    return None if value is None else int(value)
