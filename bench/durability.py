"""What a durable acknowledgement costs: enqueue latency and rate per Redis fsync policy.

    python -m bench.durability [--batches 2000] [--valkey PATH/TO/valkey-server]

For each mode it starts a private server (AOF on, loopback, temp dir) and enqueues
micro-batches through the receiver's own PermitEnqueuer from 4 threads (the receiver's
ENQUEUE_CONCURRENCY), timing each batch from the claim to the acknowledgement:
  everysec   appendfsync everysec, reply after the enqueue (DURABLE_ACK=off, the default)
  always     appendfsync always: Redis fsyncs each write before replying (Redis 7.0 here)
  waitaof    appendfsync everysec + WAITAOF 1 0 after each batch (needs Redis 7.2+/Valkey)
Not part of `make test`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from harness.payloads import make_payload
from harness.services import RedisServer
from ingest.permit_enqueuer import PermitEnqueuer, PushItem
from shared.config import Settings
from shared.queue import JobWriter
from shared.redis import make_receiver_redis
from shared.schemas import load_permit
from shared.tokens import ClientInfo


def measure(mode: str, binary: str, batches: int, batch_size: int) -> str:
    server = RedisServer(appendfsync="always" if mode == "always" else "everysec", binary=binary)
    try:
        server.start()
        settings = Settings(
            redis_url=server.url,
            durable_ack="waitaof" if mode == "waitaof" else "off",
            max_queue_depth=0,
        )
        redis = make_receiver_redis(settings)
        enqueuer = PermitEnqueuer(JobWriter.connect(redis, settings), settings)
        client = ClientInfo(1, "bench", "Standard")
        now = datetime.now(UTC)

        def one(batch: int) -> float:
            items = [
                PushItem(client, load_permit(make_payload(permitNo=f"{batch}-{i}")), now)
                for i in range(batch_size)
            ]
            started = time.perf_counter()
            outcomes = enqueuer.enqueue(items)
            elapsed = time.perf_counter() - started
            assert all(isinstance(o, str) for o in outcomes), outcomes
            return elapsed

        began = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            latencies = sorted(pool.map(one, range(batches)))
        wall = time.perf_counter() - began
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
        return (
            f"{mode:<9} batch {batch_size:>3}: {batches / wall:>7.0f} batches/s "
            f"{batches * batch_size / wall:>8.0f} permits/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
        )
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--valkey", help="a valkey-server (or Redis 7.2+) binary for WAITAOF")
    args = parser.parse_args()
    for batch_size in (1, 50):
        print(measure("everysec", "redis-server", args.batches, batch_size), flush=True)
        print(measure("always", "redis-server", args.batches, batch_size), flush=True)
        if args.valkey:
            print(measure("everysec", args.valkey, args.batches, batch_size) + " (valkey)")
            print(measure("waitaof", args.valkey, args.batches, batch_size) + " (valkey)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
