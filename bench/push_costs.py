"""What one push alone waits for, stage by stage: `python -m bench.push_costs [--pushes 400]`.

A lone push is one micro-batch of one permit. Its enqueue runs on the receiver's enqueue
thread against real Redis (db 13, flushed) and PostgreSQL (database `permit_bench`,
created and dropped), as in `serve`: the claim round trip (de-dup and queue depth), the
first-id read on the read pool (started before the claim, so the two overlap), and the
RQ job's write. The claim and the write are timed by wrapping the enqueuer's own calls;
the read, which runs beside the claim there, is timed alone right after each enqueue, for
the same key. Pushes are spaced 5 ms apart so that each is alone. The hop from the event
loop to a thread and back is timed on uvloop apart. Figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar
from unittest.mock import patch

import orjson
import uvloop

from bench import pgbase
from bench.httpbench import run_nonce
from bench.loadclient import percentile_ms, permit_body
from bench.servers.floor import CLIENT
from bench.service import Service
from ingest.permit_enqueuer import PermitEnqueuer, PushItem
from ingest.read_store_sql import SqlReadStore
from shared.config import Settings
from shared.queue import JobWriter
from shared.redis import make_receiver_redis
from shared.schemas import load_permit

T = TypeVar("T")
REDIS_URL = "redis://127.0.0.1:6379/13"


def timed(samples: list[float], call: Callable[..., T]) -> Callable[..., T]:
    def wrapper(*args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            samples.append(time.perf_counter() - started)

    return wrapper


def permit(nonce: str, index: int, settings: Settings) -> PushItem:
    """A new, valid permit, as the bench's load client sends them."""
    body = orjson.loads(permit_body("bench", nonce, index))
    loaded = load_permit(
        body, timezone=settings.timezone, max_duration=settings.max_permit_duration
    )
    return PushItem(CLIENT, loaded, datetime.now(UTC))


def enqueue_stages(settings: Settings, pushes: int) -> dict[str, list[float]]:
    """Seconds per stage, one list per stage, for `pushes` lone single-permit enqueues."""
    redis = make_receiver_redis(settings)
    reads = SqlReadStore(settings, settings.database_url)
    try:
        writer = JobWriter.connect(redis, settings)
        enqueuer = PermitEnqueuer(writer, settings, first_ids=reads.start_first_ids)
        stages: dict[str, list[float]] = {"claim (Redis)": [], "job write (RQ)": []}
        stages |= {"first-id read (PostgreSQL)": [], "whole enqueue": []}
        enqueue = timed(stages["whole enqueue"], enqueuer.enqueue)
        # The enqueuer's own calls, timed where it makes them.
        claim = timed(stages["claim (Redis)"], enqueuer._run_claim)
        write = timed(stages["job write (RQ)"], writer.write)
        nonce = run_nonce()
        with patch.object(enqueuer, "_run_claim", claim), patch.object(writer, "write", write):
            for index in range(pushes):
                item = permit(nonce, index, settings)
                enqueue([item])
                # The read alone, for the same key again (the same query and plan).
                started = time.perf_counter()
                reads.start_first_ids([(CLIENT.id, item.fingerprint())]).answer()
                stages["first-id read (PostgreSQL)"].append(time.perf_counter() - started)
                time.sleep(0.005)
        return stages
    finally:
        reads.close()
        redis.flushdb()
        redis.close()


async def thread_hops(count: int) -> list[float]:
    """Seconds for the event loop to hand a no-op to a thread and have its result back."""
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    with ThreadPoolExecutor(1) as executor:
        for _ in range(count):
            started = time.perf_counter()
            await loop.run_in_executor(executor, int)
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.002)
    return samples


def summary(name: str, samples: list[float]) -> str:
    kept = samples[len(samples) // 10 :]  # the first tenth warms caches up
    return f"  {name:<28}{percentile_ms(kept, 50):>9.3f}{percentile_ms(kept, 99):>9.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pushes", type=int, default=400)
    args = parser.parse_args()
    pg = pgbase.PgTarget("127.0.0.1", 5432, "postgres", "permit_bench")
    pgbase.recreate_database(pg)
    try:
        Service(REDIS_URL, pg.sqlalchemy_url()).upgrade()
        settings = Settings(redis_url=REDIS_URL, database_url=pg.sqlalchemy_url())
        stages = enqueue_stages(settings, args.pushes)
        hops = uvloop.run(thread_hops(args.pushes))
    finally:
        pgbase.drop_database(pg)
    print(f"One permit pushed alone, {args.pushes} times: milliseconds")
    print(f"  {'stage':<28}{'p50':>9}{'p99':>9}")
    for name, samples in stages.items():
        print(summary(name, samples))
    print(summary("event loop -> thread -> loop", hops))


if __name__ == "__main__":
    main()
