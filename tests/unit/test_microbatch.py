"""The micro-batcher: windows, size limits, group commit, shutdown."""

from __future__ import annotations

import asyncio
import threading

from ingest.microbatch import FIRST_BUSY_WINDOW_S, MicroBatcher


class RecordingFlush:
    """A flush that records batch sizes and can be held to simulate a slow Redis."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.release.wait(5)
        self.sizes.append(len(items))
        return [item * 10 if item >= 0 else ValueError(item) for item in items]


async def test_items_within_the_window_share_a_batch() -> None:
    flush = RecordingFlush()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", flush, window_s=0.02, max_size=100, concurrency=2
    )
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert flush.sizes == [5]
    await batcher.close()


async def test_a_full_batch_goes_at_once_without_waiting_for_the_window() -> None:
    flush = RecordingFlush()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", flush, window_s=60, max_size=3, concurrency=2
    )
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(6))), 5)
    assert results == [0, 10, 20, 30, 40, 50]
    assert flush.sizes == [3, 3]
    await batcher.close()


async def test_items_gather_while_every_slot_is_busy() -> None:
    flush = RecordingFlush()
    flush.release.clear()  # the first batch hangs in Redis
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", flush, window_s=0.001, max_size=100, concurrency=1
    )
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.05)  # its window is over: it is in flight
    later = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 11)]
    await asyncio.sleep(0.05)  # many windows pass; no slot is free
    flush.release.set()
    assert await first == 0
    assert [await f for f in later] == [i * 10 for i in range(1, 11)]
    assert flush.sizes == [1, 10]  # group commit: one batch, not ten
    await batcher.close()


async def test_with_no_window_a_lone_item_goes_at_once_and_the_next_gather_behind_it() -> None:
    """BATCH_WINDOW_MS=0, the default: nothing waits for company while a slot is free."""
    flush = RecordingFlush()
    flush.release.clear()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", flush, window_s=0, max_size=100, concurrency=1
    )
    first = asyncio.ensure_future(batcher.submit(0))
    for _ in range(3):  # a few turns of the loop, no time: the batch is already out
        await asyncio.sleep(0)
    assert batcher._in_flight, "a lone item waited"
    later = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
    flush.release.set()
    assert await asyncio.wait_for(first, 5) == 0
    assert [await f for f in later] == [i * 10 for i in range(1, 6)]
    assert flush.sizes == [1, 5]
    await batcher.close()


async def test_an_item_error_fails_only_that_item() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", RecordingFlush(), window_s=0.01, max_size=10, concurrency=1
    )
    good, bad = await asyncio.gather(batcher.submit(1), batcher.submit(-1), return_exceptions=True)
    assert good == 10
    assert isinstance(bad, ValueError)
    await batcher.close()


async def test_a_failing_flush_fails_its_whole_batch() -> None:
    def broken(items: list[int]) -> list[int | Exception]:
        raise ConnectionError("Redis is away")

    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", broken, window_s=0.01, max_size=10, concurrency=1
    )
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)
    await batcher.close()


async def test_close_flushes_what_is_pending() -> None:
    flush = RecordingFlush()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", flush, window_s=60, max_size=100, concurrency=1
    )
    pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(4)]
    await asyncio.sleep(0)  # submitted, waiting for a window that would take a minute
    await asyncio.wait_for(batcher.close(), 5)
    assert [f.result() for f in pending] == [0, 10, 20, 30]
    assert flush.sizes == [4]


async def test_after_a_batch_that_found_items_waiting_the_next_lets_more_join() -> None:
    flush = RecordingFlush()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", flush, window_s=0, busy_window_s=0.2, max_size=100, concurrency=1
    )
    flush.release.clear()  # the first batch hangs in Redis; one item waits behind it
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.02)
    second = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.02)
    flush.release.set()
    assert await first == 0
    # The first returned with an item waiting: the next batch waits FIRST_BUSY_WINDOW_S,
    # and the item that arrives within it joins.
    third = asyncio.ensure_future(batcher.submit(2))
    assert await asyncio.wait_for(asyncio.gather(second, third), 5) == [10, 20]
    assert flush.sizes == [1, 2]
    assert batcher._busy_wait_s == FIRST_BUSY_WINDOW_S
    await batcher.close()


class OneAtATimeFlush(RecordingFlush):
    """A flush that returns only when let go, one call per ``let_one_go``."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Semaphore(0)

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.go.acquire(timeout=5)
        return super().__call__(items)

    def let_one_go(self) -> None:
        self.go.release()


async def busy_spell(
    batcher: MicroBatcher[int, int], flush: OneAtATimeFlush, items: range
) -> list[float]:
    """Each batch returns with one item waiting behind it; the busy waits that follow."""
    replies = [asyncio.ensure_future(batcher.submit(items[0]))]
    waits = []
    for item in items[1:]:
        while batcher._pending or not batcher._in_flight:  # until the last one is in flight
            await asyncio.sleep(0.001)
        replies.append(asyncio.ensure_future(batcher.submit(item)))
        await asyncio.sleep(0.005)
        flush.let_one_go()
        await asyncio.wait_for(replies[-2], 5)
        waits.append(batcher._busy_wait_s)
    flush.let_one_go()
    assert await asyncio.wait_for(asyncio.gather(*replies), 5) == [i * 10 for i in items]
    return waits


async def test_the_busy_window_doubles_while_the_load_lasts_up_to_its_bound() -> None:
    flush = OneAtATimeFlush()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", flush, window_s=0, busy_window_s=0.05, max_size=100, concurrency=1
    )
    waits = await busy_spell(batcher, flush, range(12))
    assert flush.sizes == [1] * 12
    doubling = [FIRST_BUSY_WINDOW_S * 2**n for n in range(9)]
    assert waits == [wait for wait in doubling if wait < 0.05] + [0.05] * 2
    await batcher.close()


async def test_after_an_idle_moment_a_busy_spell_starts_from_the_first_wait() -> None:
    flush = OneAtATimeFlush()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", flush, window_s=0, busy_window_s=1.0, max_size=100, concurrency=1
    )

    first = FIRST_BUSY_WINDOW_S
    assert await busy_spell(batcher, flush, range(4)) == [first, 2 * first, 4 * first]
    assert not batcher._pending and not batcher._in_flight  # idle
    assert await busy_spell(batcher, flush, range(4, 7)) == [first, 2 * first]
    await batcher.close()


async def test_a_window_that_is_still_running_is_not_cut_short_by_the_busy_wait() -> None:
    flush = RecordingFlush()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", flush, window_s=0.3, busy_window_s=0.001, max_size=100, concurrency=1
    )
    flush.release.clear()
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.35)  # its window is over: it is in flight, held
    behind = asyncio.ensure_future(batcher.submit(1))  # its own 0.3 s window starts
    await asyncio.sleep(0.01)
    flush.release.set()
    assert await first == 0
    await asyncio.sleep(0.05)  # far past the 1 ms busy wait, inside the item's window
    later = asyncio.ensure_future(batcher.submit(2))
    assert await asyncio.wait_for(asyncio.gather(behind, later), 5) == [10, 20]
    assert flush.sizes == [1, 2]  # the window ran its course and took the later item
    await batcher.close()


async def test_a_full_batch_does_not_wait_out_the_busy_window() -> None:
    flush = RecordingFlush()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        "test", flush, window_s=0, busy_window_s=60.0, max_size=3, concurrency=1
    )
    flush.release.clear()
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.02)
    behind = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0.02)
    flush.release.set()
    await first
    more = asyncio.ensure_future(batcher.submit(3))  # the third item fills the batch
    assert await asyncio.wait_for(asyncio.gather(*behind, more), 5) == [10, 20, 30]
    assert flush.sizes == [1, 3]
    await batcher.close()
