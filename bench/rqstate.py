"""Looks at and resets the benchmark's Redis database (a dedicated db index)."""

from __future__ import annotations

import time

from redis import Redis
from rq import Queue, Worker
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.procs import BenchError, ProcessGroup
from shared.constants import TOKENS_KEY, TOKENS_LOADED_KEY


def reset_keep_tokens(redis: Redis) -> None:
    """FLUSHDB the bench's db index, keeping the published token hash.

    Jobs, registries and de-dup keys of the previous phase go; the receiver can still
    authenticate without waiting for a worker to re-publish the tokens.
    """
    tokens = redis.dump(TOKENS_KEY)
    redis.flushdb()
    if tokens is not None:
        redis.restore(TOKENS_KEY, 0, tokens)
        redis.set(TOKENS_LOADED_KEY, "1")


def wait_drained(
    redis: Redis, queue_name: str, group: ProcessGroup, timeout_s: float = 600
) -> None:
    """Wait until the queue is empty and no job of it is running."""
    queue = Queue(queue_name, connection=redis)
    deadline = time.monotonic() + timeout_s
    while queue.count or queue.started_job_registry.count:
        group.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"queue {queue_name} not drained within {timeout_s:.0f} s")
        time.sleep(0.05)


def queue_length(redis: Redis, queue_name: str) -> int:
    return int(redis.llen(Queue(queue_name, connection=redis).key))


def finished_jobs(redis: Redis, queue_name: str) -> int:
    queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
    return int(FinishedJobRegistry(queue=queue).count)


def workers_registered(redis: Redis, queue_name: str) -> int:
    queue = Queue(queue_name, connection=redis)
    return int(Worker.count(connection=redis, queue=queue))
