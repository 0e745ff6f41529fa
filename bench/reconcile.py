"""Reconcile a million disconnected permits in PostgreSQL; print permits/s and peak RSS.

    createdb -h 127.0.0.1 -U postgres zones_bench
    .venv/bin/python -m bench.reconcile \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/zones_bench

The database's public schema is dropped and rebuilt by the migrations (the bench refuses
a database with permits in it unless given --reset). It loads the permits server-side,
then adds the zones (and one alias) as `permit-push zones add` would, then runs the same
`reconcile` the RQ job runs, in this process, and checks every count afterwards.

Shape of the data: half the matching permits share one name (a busy lot sent under a
misspelling for months: keyset batches matter there), the rest spread over --names
names, one of them matched through an alias; plus --noise permits under names no zone
has, which must stay disconnected.
"""

from __future__ import annotations

import argparse
import resource
import time

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from shared.clients import create_client
from shared.config import Settings
from shared.db import make_engine, make_sessionmaker, upgrade_database
from shared.models import ApiClient, Permit
from shared.zones import add_alias, add_zone
from worker.reconcile import reconcile

LOAD = text(
    """
    INSERT INTO permits (reference_id, client_id, permit_type, plate, plate_normalized,
        zone_name, zone_normalized, start_raw, end_raw, starts_at, ends_at, received_at,
        stored_at)
    SELECT md5(:salt || g::text)::uuid::text, :client_id, 'Standard', 'PL' || g, 'PL' || g,
        name, lower(name), '2024-05-01T09:00:00', '2024-05-01T10:00:00',
        now(), now() + interval '1 hour', now() - (g || ' seconds')::interval, now()
    FROM (
        SELECT g, CASE
            WHEN g <= :matching / 2 THEN 'Lot 0'
            WHEN g <= :matching THEN 'Lot ' || (1 + g % (:names - 1))
            ELSE 'Nowhere ' || (g % 1000)
        END AS name
        FROM generate_series(1, :total) AS g
    ) AS numbered
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL database to use up")
    parser.add_argument("--permits", type=int, default=1_000_000, help="permits to link")
    parser.add_argument("--noise", type=int, default=100_000, help="permits matching no zone")
    parser.add_argument("--names", type=int, default=100, help="zone names the permits use")
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--reset", action="store_true", help="drop the permits already there")
    args = parser.parse_args()

    engine = make_engine(Settings(database_url=args.database_url), pool_size=2)
    assert engine.dialect.name == "postgresql", "this bench is for PostgreSQL"
    sessions = make_sessionmaker(engine)
    prepare(engine, sessions, args.reset)

    started = time.perf_counter()
    with sessions.begin() as session:
        create_client(session, "bench")
        client_id = session.scalars(select(ApiClient.id)).one()
        session.execute(
            LOAD,
            {
                "salt": str(time.time()),
                "client_id": client_id,
                "matching": args.permits,
                "names": args.names,
                "total": args.permits + args.noise,
            },
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE permits"))
    print(
        f"loaded {args.permits + args.noise:,} disconnected permits in "
        f"{time.perf_counter() - started:.1f} s"
    )

    with sessions.begin() as session:
        add_zone(session, "Lot 0")
        for number in range(2, args.names):
            add_zone(session, f"Lot {number}")
        add_zone(session, "Parking One")
        add_alias(session, "Parking One", "Lot 1")

    rss_before = peak_rss_mib()
    started = time.perf_counter()
    result = reconcile(sessions, None, args.batch_rows)
    elapsed = time.perf_counter() - started
    rss_peak = peak_rss_mib()

    with sessions() as session:
        left = session.scalar(select(func.count()).where(Permit.zone_id.is_(None)))
    assert result.linked == args.permits, result
    assert left == args.noise, left
    print(
        f"reconciled {result.linked:,} permits under {result.names} names in {elapsed:.1f} s: "
        f"{result.linked / elapsed:,.0f} permits/s, {result.batches} batches of <= "
        f"{args.batch_rows} rows; {left:,} unmatched left disconnected"
    )
    print(f"peak RSS {rss_peak:.0f} MiB (before reconciling: {rss_before:.0f} MiB)")

    started = time.perf_counter()
    again = reconcile(sessions, None, args.batch_rows)
    assert again.linked == 0, again
    print(f"a second run (nothing left to link) took {time.perf_counter() - started:.2f} s")
    engine.dispose()


def prepare(engine: Engine, sessions: sessionmaker[Session], reset: bool) -> None:
    """A freshly migrated, empty schema."""
    with sessions() as session:
        exists = session.scalar(text("SELECT to_regclass('public.permits') IS NOT NULL"))
        if exists and not reset and session.scalar(text("SELECT EXISTS (SELECT FROM permits)")):
            raise SystemExit("the database has permits: use another one, or --reset")
    with sessions.begin() as session:
        session.execute(text("DROP SCHEMA public CASCADE"))
        session.execute(text("CREATE SCHEMA public"))
    upgrade_database(engine)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


if __name__ == "__main__":
    main()
