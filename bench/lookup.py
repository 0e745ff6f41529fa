"""Enforcement lookup latency over 10^6 stored permits in PostgreSQL (not part of make test).

    python -m bench.lookup [--database-url URL] [--permits N] [--queries Q] [--keep]

Creates its own database (default ``lookup_bench``), migrates it, fills it with N permits
(INSERT ... SELECT generate_series: 200 000 plates, 50 zones with aliases, a year of
times, 1 % deleted), then times, in the same run and on the same random (plate, zone,
at) triples, half of them with a zone:

* ``bare``: a hand-written indexed SELECT of the same rows through psycopg (zone given
  as its id, resolved beforehand), the floor the service is compared with;
* ``lookup``: ``SqlReadStore.active`` awaited on an event loop, exactly what the
  endpoint awaits: thread-pool hop, zone name/alias resolution, ORM rows, dict bodies;
* ``http``: ``GET /api/OC-TOMA/v1/permits/active`` on a receiver in this process
  (token check, rate limit, JSON), for the whole picture.

The database is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import psycopg
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import make_url

from ingest.app import create_app
from ingest.read_store import ActiveQuery
from ingest.read_store_sql import SqlReadStore
from shared.clients import create_client, publish_tokens
from shared.config import Settings
from shared.db import make_engine, make_sessionmaker, upgrade_database

PLATES = 200_000
ZONES = 50
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)

FILL = """
INSERT INTO permits (reference_id, client_id, permit_type, plate, plate_normalized,
    zone_name, zone_normalized, zone_id, permit_no, amount, currency, start_raw, end_raw,
    starts_at, ends_at, received_at, stored_at, deleted_at, last_seq)
SELECT md5(g::text)::uuid::text, %(client)s, 'Standard',
    'P' || (g %% %(plates)s), 'P' || (g %% %(plates)s),
    'Lot ' || (g %% %(zones)s), 'lot ' || (g %% %(zones)s), (g %% %(zones)s) + 1,
    NULL, 2.50, 'CAD', 'x', 'x',
    %(start)s + (g * 31) * interval '1 second',
    %(start)s + (g * 31) * interval '1 second' + interval '2 hours',
    now(), now(),
    CASE WHEN g %% 100 = 0 THEN now() END, 0
FROM generate_series(1, %(permits)s) AS g
"""

BARE = """
SELECT * FROM permits
WHERE plate_normalized = %s AND deleted_at IS NULL AND ends_at >= %s AND starts_at <= %s
"""
BARE_ZONE = BARE + " AND zone_id = %s"


def prepare(url: str, permits: int) -> str:
    """Create, migrate and fill the bench database; return its client's token."""
    admin = make_url(url).set(database="postgres")
    name = make_url(url).database
    with psycopg.connect(
        admin.render_as_string(False).replace("+psycopg", ""), autocommit=True
    ) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(Settings(database_url=url))
    upgrade_database(engine)
    with make_sessionmaker(engine).begin() as session:
        token = create_client(session, "enforcement")
    engine.dispose()
    with psycopg.connect(_dsn(url), autocommit=True) as c:
        for z in range(ZONES):
            c.execute(
                "INSERT INTO zones (id, name, name_normalized, created_at)"
                " VALUES (%s, %s, %s, now())",
                (z + 1, f"Lot {z}", f"lot {z}"),
            )
            c.execute(
                "INSERT INTO zone_aliases (alias, alias_normalized, zone_id, created_at)"
                " VALUES (%s, %s, %s, now())",
                (f"Alias {z}", f"alias {z}", z + 1),
            )
        started = time.perf_counter()
        c.execute(
            FILL,
            {
                "client": 1,
                "plates": PLATES,
                "zones": ZONES,
                "start": YEAR_START,
                "permits": permits,
            },
        )
        c.execute("VACUUM ANALYZE permits")
        print(f"filled {permits} permits in {time.perf_counter() - started:.1f} s")
    return token


def drop(url: str) -> None:
    admin = make_url(url).set(database="postgres")
    with psycopg.connect(
        admin.render_as_string(False).replace("+psycopg", ""), autocommit=True
    ) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}"')


def _dsn(url: str) -> str:
    return make_url(url).render_as_string(False).replace("postgresql+psycopg", "postgresql")


def queries(count: int, permits: int, seed: int = 1) -> list[tuple[str, int | None, datetime]]:
    """(plate, zone number or None, at) triples; `at` inside a random permit of that plate."""
    rng = random.Random(seed)
    picked = []
    for _ in range(count):
        g = rng.randrange(1, permits + 1)
        at = YEAR_START + timedelta(seconds=g * 31 + rng.randrange(0, 7200))
        picked.append((f"P{g % PLATES}", g % ZONES if rng.random() < 0.5 else None, at))
    return picked


async def timed(calls: list[Callable[[], Awaitable[int]]]) -> tuple[list[float], int]:
    latencies, rows = [], 0
    for call in calls:
        started = time.perf_counter()
        rows += await call()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, rows


def summary(name: str, latencies: list[float], rows: int) -> str:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{name:<7} p50 {p50:6.3f} ms   p99 {p99:6.3f} ms   rows {rows}"


async def measure(url: str, token: str, picked: list[tuple[str, int | None, datetime]]) -> None:
    settings = Settings(database_url=url, log_format="console", rate_limit_per_s=0)
    reader = SqlReadStore(settings, url)
    bare = await psycopg.AsyncConnection.connect(_dsn(url), autocommit=True)

    def bare_call(plate: str, zone: int | None, at: datetime) -> Callable[[], Awaitable[int]]:
        async def call() -> int:
            args: tuple[Any, ...] = (plate, at, at) if zone is None else (plate, at, at, zone + 1)
            cursor = await bare.execute(BARE if zone is None else BARE_ZONE, args, prepare=True)
            return len(await cursor.fetchall())

        return call

    def lookup_call(plate: str, zone: int | None, at: datetime) -> Callable[[], Awaitable[int]]:
        name = None if zone is None else f"Alias {zone}"

        async def call() -> int:
            query = ActiveQuery(plate, name, at, timedelta(0), None, 101)
            return len(await reader.active(query))

        return call

    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    engine = make_engine(settings)
    with make_sessionmaker(engine).begin() as session:
        publish_tokens(session, redis)
    engine.dispose()
    client = TestClient(TestServer(create_app(settings, redis=redis)))
    await client.start_server()
    headers = {"Authorization": f"Bearer {token}"}

    def http_call(plate: str, zone: int | None, at: datetime) -> Callable[[], Awaitable[int]]:
        params = {"plate": plate, "at": at.isoformat()}
        if zone is not None:
            params["zone"] = f"Alias {zone}"

        async def call() -> int:
            response = await client.get(
                "/api/OC-TOMA/v1/permits/active", params=params, headers=headers
            )
            return len((await response.json())["permits"])

        return call

    kinds = {"bare": bare_call, "lookup": lookup_call, "http": http_call}
    for make in kinds.values():  # warm every path (connections, plans, caches)
        await timed([make(*q) for q in picked[:200]])
    results = {name: await timed([make(*q) for q in picked]) for name, make in kinds.items()}
    for name, (latencies, rows) in results.items():
        print(summary(name, latencies, rows))
    bare_p99 = sorted(results["bare"][0])[int(len(picked) * 0.99)]
    lookup_p99 = sorted(results["lookup"][0])[int(len(picked) * 0.99)]
    print(f"lookup p99 / bare p99 = {lookup_p99 / bare_p99:.2f}")
    await client.close()
    await bare.close()
    reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/lookup_bench"
    )
    parser.add_argument("--permits", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    args = parser.parse_args()
    token = prepare(args.database_url, args.permits)
    try:
        asyncio.run(measure(args.database_url, token, queries(args.queries, args.permits)))
    finally:
        if not args.keep:
            drop(args.database_url)


if __name__ == "__main__":
    main()
