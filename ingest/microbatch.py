"""Micro-batching by group commit: pushes that arrive together share one enqueue.

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

# The busy window's first wait; it doubles with each busy batch (MicroBatcher).
FIRST_BUSY_WINDOW_S = 0.000125


class MicroBatcher(Generic[Item, Outcome]):
    """Cuts a batch ``window_s`` after its first item, or at ``max_size`` items.

    At most ``concurrency`` batches are in flight. While they all are, items keep
    gathering and the next batch is cut as soon as one returns (group commit): the busier
    the receiver, the larger its batches, so the fixed cost of a Redis round trip and of
    an RQ job is spread over more permits instead of queueing behind each other.

    A batch that returns with items waiting behind it means the receiver is busy: the next
    batch then waits a little for more (the busy window), a wait that doubles from
    FIRST_BUSY_WINDOW_S with each such batch up to ``busy_window_s``. An item that finds
    nothing in flight and nothing waiting (the load has gone) resets it: the next busy
    spell starts from the first wait again. A lone push never waits for it.

    ``flush`` is synchronous (RQ is) and runs on a small thread pool whose threads are
    named ``name``. It returns one outcome per item: a value, or an exception for that
    item alone. An exception raised by ``flush`` itself fails every item of the batch.
    """

    def __init__(
        self,
        name: str,
        flush: Callable[[list[Item]], list[Outcome | Exception]],
        *,
        window_s: float,
        max_size: int,
        concurrency: int,
        busy_window_s: float = 0.0,
    ) -> None:
        self._flush = flush
        self._window_s = window_s
        self._busy_window_s = busy_window_s
        self._busy_wait_s = 0.0  # the busy window now: 0 until a batch finds items waiting
        self._max_size = max_size
        self._concurrency = concurrency
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix=name)
        self._pending: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._due = False  # the oldest pending item has waited its window
        self._in_flight: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Outcome:
        """Queue ``item`` for the next batch and wait for its outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        if not self._pending and not self._in_flight:
            self._busy_wait_s = 0.0  # idle: the load has gone
        self._pending.append((item, future))
        if self._timer is None and not self._due:
            self._timer = loop.call_later(self._window_s, self._window_elapsed)
        self._cut()
        return await future

    def _window_elapsed(self) -> None:
        self._timer = None
        self._due = True
        self._cut()

    def _cut(self) -> None:
        """Start as many batches as are due and as slots allow."""
        while (
            self._pending
            and len(self._in_flight) < self._concurrency
            and (self._due or len(self._pending) >= self._max_size)
        ):
            batch = self._pending[: self._max_size]
            del self._pending[: self._max_size]
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        if not self._pending:
            self._due = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._busy_window_s and self._due and 0 < len(self._pending) < self._max_size:
            # Items waited behind this batch past their window: let more join the next one
            # (a larger batch costs less a permit), a little longer with each busy batch.
            # Only once their window is over (no timer runs then): a running window or
            # busy wait is never cut short, nor started again by another batch's return.
            wait = min(self._busy_window_s, max(2 * self._busy_wait_s, FIRST_BUSY_WINDOW_S))
            self._busy_wait_s = wait
            self._due = False
            self._timer = asyncio.get_running_loop().call_later(wait, self._window_elapsed)
            return
        self._cut()  # what gathered meanwhile goes now, if its window is over

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Outcome]]]) -> None:
        items = [item for item, _ in batch]
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
        while self._pending or self._in_flight:
            self._due = True
            self._cut()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._executor.shutdown(wait=True)
