"""Micro-batching: pushes that arrive within a few milliseconds share one enqueue.

Each request awaits its own outcome, which is set only once the whole batch is
acknowledged by Redis, so a 200 is never sent for a permit that is not yet queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import structlog

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

log = structlog.get_logger(__name__)


class Batcher(Generic[Item, Outcome]):
    """Collects items for ``window_s`` or until ``max_size``, then flushes them together.

    ``flush`` is synchronous (RQ is) and runs on a small thread pool: at most
    ``concurrency`` batches are in flight; the next batch fills while they are.
    ``flush`` returns one outcome per item: a value, or an exception for that item alone.
    An exception raised by ``flush`` itself fails every item of the batch.
    """

    def __init__(
        self,
        flush: Callable[[list[Item]], list[Outcome | Exception]],
        *,
        window_s: float,
        max_size: int,
        concurrency: int,
    ) -> None:
        self._flush = flush
        self._window_s = window_s
        self._max_size = max_size
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="enqueue")
        self._slots = asyncio.Semaphore(concurrency)
        self._pending: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Outcome:
        """Queue ``item`` for the next batch and wait for its outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_size:
            self._start_flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window_s, self._start_flush)
        return await future

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Outcome]]]) -> None:
        items = [item for item, _ in batch]
        async with self._slots:
            try:
                outcomes = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._flush, items
                )
            except Exception as exc:  # every request of the batch hears of it
                log.warning("batch_failed", size=len(items), error=type(exc).__name__)
                outcomes = [exc] * len(items)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the request went away; its permit is queued regardless
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def close(self) -> None:
        """Flush what is pending and wait for every batch in flight (graceful shutdown)."""
        self._start_flush()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._executor.shutdown(wait=True)
