"""`python -m bench.fuzz [N]`: N hostile requests (default 10^5); none may get a 5xx.

The requests of tests/integration/test_hostile_fuzz.py, many more of them, against an
in-process receiver on the Redis and PostgreSQL of TEST_REDIS_URL / TEST_DATABASE_URL
(migrated; it adds an API client of its own). Prints the count of each status.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from uuid import uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from harness.fuzz import Sender, hostile_request
from shared.clients import create_client, publish_tokens
from shared.config import Settings
from shared.db import make_engine, make_sessionmaker


def main(count: int) -> int:
    config = Settings(
        redis_url=os.environ["TEST_REDIS_URL"],
        database_url=os.environ["TEST_DATABASE_URL"],
        log_format="json",
        log_level="ERROR",
        batch_window_ms=1.0,
    )
    redis = Redis.from_url(config.redis_url)
    engine = make_engine(config)
    with make_sessionmaker(engine).begin() as session:
        token = create_client(session, f"fuzz-{uuid4().hex[:8]}")
        session.flush()
        publish_tokens(session, redis)
    sender = Sender(config, redis, token)
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def send(data: st.DataObject) -> None:
        statuses[sender.status(data.draw(hostile_request(token)))] += 1

    started = time.monotonic()
    try:
        send()
    finally:
        sender.close()
        engine.dispose()
        redis.close()
    total = sum(statuses.values())
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    print(f"{total} requests in {time.monotonic() - started:.0f} s; statuses {dict(statuses)}")
    print(f"responses >= 500: {server_errors}")
    return 1 if server_errors else 0


if __name__ == "__main__":
    raise SystemExit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
