"""Backpressure on Redis memory: 503 before Redis is full, read cheaply.

The compose file gives Redis a ``maxmemory`` with ``noeviction``: once full, every write
fails. The receiver refuses pushes a little earlier, when ``used_memory`` passes
REDIS_MEMORY_SHARE of ``maxmemory``, so updates, deletes and the workers' own writes still
have room and a client hears 503 + Retry-After instead of a Redis error. The figures are
read by one background task every REDIS_MEMORY_CHECK_S (one INFO per interval per
process), never per request; the check itself is two comparisons. It runs before a batch
writes anything, so a refused batch leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis import Redis
from redis.exceptions import RedisError

from shared.config import Settings
from shared.errors import QueueFullError

log = structlog.get_logger(__name__)


class RedisMemoryFullError(QueueFullError):
    """Redis used more than its share of maxmemory at the last reading."""


class RedisMemory:
    """The last reading of Redis's used_memory and maxmemory (0: no limit)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._share = settings.redis_memory_share
        self._interval_s = settings.redis_memory_check_s
        self.used = 0
        self.limit = 0
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def read(self) -> None:
        """One INFO memory (synchronous); a failed read keeps the last figures."""
        try:
            info = self._redis.info("memory")
        except RedisError as exc:
            if not self._failing:  # once per outage, not every interval
                log.warning("redis_memory_unreadable", error=type(exc).__name__)
            self._failing = True
            return
        self._failing = False
        self.used = int(info.get("used_memory", 0))
        self.limit = int(info.get("maxmemory", 0))

    def check(self) -> None:
        """Raise RedisMemoryFullError when past the share (503 + Retry-After)."""
        if self._share and self.limit and self.used >= self._share * self.limit:
            raise RedisMemoryFullError(
                f"Redis uses {self.used} of {self.limit} bytes (limit {self._share:.0%})"
            )

    async def start(self) -> None:
        await asyncio.to_thread(self.read)
        self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await asyncio.to_thread(self.read)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
