"""The benchmark's entry point: `python -m bench [--quick] [...]`.

Phases, in one run on this machine:
1. receiver peak throughput with wrk: bare aiohttp, naive RQ-per-request, the design's floor,
   permit-push;
   then permit-push's latency at 80% of its peak, open loop;
2. end-to-end drain: HTTP pushes until every permit is a PostgreSQL row, against raw
   psycopg executemany (100 rows per transaction) of the same rows;
3. queue growth: drain rate with 10^3, 10^5 and 10^6 permits queued, worker peak RSS;
4. the receiver with DURABLE_ACK=off and =replica on a private primary with one replica;
5. a fleet-shaped open loop (bench/fleet.py): 2,000 connections, Poisson arrivals; the
   highest rate holding p99 <= 25 ms for bare and for permit-push with its workers, and
   permit-push at 80% of its peak.
Everything started is stopped at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

from bench import fleet, httpbench, pgbase, replica_ack, rqstate
from bench.drain import DrainResult, Stores, end_to_end, queued_drain
from bench.procs import (
    LOG_DIR,
    BenchError,
    ProcessGroup,
    process_group,
    start_profiler,
    stop_profiler,
)
from bench.report import print_report
from bench.results import ONE_BOX, ONE_BOX_QUEUE, LoadResult, median_by_rps
from bench.service import Service, cli_path
from bench.wrkload import WrkSettings, require_wrk
from shared.ports import free_port

PHASES = ("http", "drain", "growth", "ack", "fleet")


@dataclass
class Report:
    """Everything measured in this run; printed as a table and optionally saved as JSON."""

    settings: dict[str, Any] = field(default_factory=dict)
    peak: dict[str, LoadResult] = field(default_factory=dict)
    drain: DrainResult | None = None
    raw: pgbase.RawResult | None = None
    growth: dict[int, DrainResult] = field(default_factory=dict)
    durable_ack: dict[str, LoadResult] = field(default_factory=dict)
    fleet: fleet.FleetResult | None = None
    notes: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="short runs, small sizes (about 4 min)")
    p.add_argument("--only", default=",".join(PHASES), help=f"comma list of: {','.join(PHASES)}")
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 10; quick 3)")
    p.add_argument("--repeats", type=int, help="wrk runs per target, median kept (3; quick 1)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument(
        "--fleet-connections", type=int, default=2000, help="open-loop connections (2000)"
    )
    p.add_argument("--fleet-duration", type=float, help="seconds per open-loop run (10; quick 4)")
    p.add_argument("--processes", type=int, default=2, help="receiver processes per target")
    p.add_argument("--workers", type=int, default=2, help="permit-push worker processes")
    p.add_argument("--drain-count", type=int, help="permits pushed end to end (50000; quick 5000)")
    p.add_argument("--growth-sizes", help="queued permits (1000,100000,1000000; quick 1000,10000)")
    p.add_argument(
        "--fill-batch",
        type=int,
        help="permits per job when filling the queue "
        "(default: the mean batch the receiver made in the drain phase)",
    )
    p.add_argument("--fillers", type=int, default=2, help="processes filling the queue")
    p.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis, without a db")
    p.add_argument("--redis-db", type=int, default=13, help="dedicated db index, flushed")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--pg-db", default="permit_bench", help="created and dropped by the run")
    p.add_argument("--keep-db", action="store_true", help="leave the database for inspection")
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="setting for every permit-push process (e.g. BATCH_WINDOW_MS=5)",
    )
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the receiver (one extra run) and the draining workers into DIR; "
        "sampling slows the workers, so take figures from a run without it",
    )
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on --quick."""
    quick = args.quick
    args.duration = args.duration or (3.0 if quick else 10.0)
    args.repeats = args.repeats or (1 if quick else 3)
    args.fleet_duration = args.fleet_duration or (4.0 if quick else 10.0)
    args.drain_count = args.drain_count or (5_000 if quick else 50_000)
    sizes = args.growth_sizes or ("1000,10000" if quick else "1000,100000,1000000")
    args.growth_sizes = [int(s) for s in sizes.split(",") if s]
    args.phases = [p for p in args.only.split(",") if p]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        raise BenchError(f"unknown phase(s) {sorted(unknown)}; choose from {PHASES}")
    return args


def http_phase(
    args: argparse.Namespace, group: ProcessGroup, stores: Stores, token: str, report: Report
) -> None:
    """All targets run side by side (idle ones cost nothing); runs alternate between them,
    so load from elsewhere on the machine hits every target alike. The one-box target's
    workers are idle too, once they have drained what its own runs queued."""
    wrk = WrkSettings(args.wrk_threads, args.connections, args.duration)
    redis_url = stores.service.redis_url
    # One box: the receiver with its workers draining on the same cores while it is
    # measured, on a queue of its own so that they drain nothing of the other targets.
    one_box = dataclasses.replace(
        stores.service,
        queue_name=ONE_BOX_QUEUE,
        extra={**stores.service.extra, "QUEUE_NAME": ONE_BOX_QUEUE},
    )
    starters: dict[str, Callable[[int], object]] = {
        "bare": lambda port: httpbench.start_bare(group, port, args.processes),
        "naive": lambda port: httpbench.start_naive(group, port, args.processes, redis_url),
        "floor": lambda port: httpbench.start_floor(
            group, port, args.processes, stores.service.env()
        ),
        "permit-push": lambda port: stores.service.start_receiver(group, port, args.processes),
        ONE_BOX: lambda port: (
            one_box.start_receiver(group, port, args.processes),
            one_box.start_workers(group, args.workers),
        ),
    }
    if not service_available(Report()):
        del starters["permit-push"], starters[ONE_BOX]

    def reset() -> None:
        # The one-box workers first finish what the last run queued: a flush under a
        # running job would fail it.
        if ONE_BOX in starters:
            rqstate.wait_drained(stores.redis, ONE_BOX_QUEUE, group)
        rqstate.reset_keep_tokens(stores.redis)

    with contextlib.ExitStack() as stack:
        targets = []
        for name, start in starters.items():
            port = free_port()
            pids = stack.enter_context(
                httpbench.running(group, functools.partial(start, port), port)
            )
            counts = name in ("permit-push", ONE_BOX)
            targets.append(httpbench.Target(name, port, pids, counts_batches=counts))
        for target in targets:
            reset()
            httpbench.warm_up(target, token, wrk)
        runs: dict[str, list[LoadResult]] = {t.name: [] for t in targets}
        for _ in range(args.repeats):
            for target in targets:
                reset()
                runs[target.name].append(httpbench.one_run(target, token, wrk, stores.redis))
                group.check_alive()
        for target in targets:
            report.peak[target.name] = median_by_rps(runs[target.name])
            log(f"{target.name}: {report.peak[target.name].rps:,.0f} req/s")
        pp = next((t for t in targets if t.name == "permit-push"), None)
        if pp is not None and args.profile is not None:
            reset()
            profile_receiver(group, pp, token, args, stores.redis)
    reset()


def profile_receiver(
    group: ProcessGroup,
    target: httpbench.Target,
    token: str,
    args: argparse.Namespace,
    redis: Redis,
) -> None:
    """One extra, unreported wrk run with py-spy on every receiver process."""
    spy = start_profiler(group, target.pids[0], args.profile / "receiver.txt", subprocesses=True)
    wrk = WrkSettings(args.wrk_threads, args.connections, args.duration)
    httpbench.one_run(target, token, wrk, redis)
    stop_profiler(group, spy)


def drain_phase(
    args: argparse.Namespace, group: ProcessGroup, stores: Stores, token: str, report: Report
) -> None:
    report.drain = end_to_end(
        stores,
        group,
        token,
        count=args.drain_count,
        receivers=args.processes,
        workers=args.workers,
        port=free_port(),
    )
    log(f"end-to-end: {report.drain.rate:,.0f} permits/s")
    raws = sorted(
        (pgbase.raw_executemany_rate(stores.conninfo) for _ in range(args.repeats)),
        key=lambda r: r.rate,
    )
    report.raw = raws[(len(raws) - 1) // 2]  # the median run
    log(f"raw executemany: {report.raw.rate:,.0f} rows/s")


def growth_phase(
    args: argparse.Namespace, group: ProcessGroup, stores: Stores, token: str, report: Report
) -> None:
    batch = args.fill_batch or mean_batch(report) or 100
    report.settings["fill_batch"] = batch
    for size in args.growth_sizes:
        report.growth[size] = queued_drain(
            stores,
            group,
            token,
            count=size,
            batch=batch,
            workers=args.workers,
            fillers=args.fillers,
            profile_dir=args.profile,
        )
        log(f"queued {size:,}: {report.growth[size].rate:,.0f} permits/s")


def ack_phase(
    args: argparse.Namespace, group: ProcessGroup, stores: Stores, token: str, report: Report
) -> None:
    wrk = WrkSettings(args.wrk_threads, args.connections, args.duration)
    report.durable_ack = replica_ack.measure(
        stores.service, group, wrk, args.processes, args.repeats
    )
    for name, result in report.durable_ack.items():
        log(f"{name}: {result.rps:,.0f} req/s, p99 {result.p99_ms:.1f} ms")


def fleet_phase(
    args: argparse.Namespace, group: ProcessGroup, stores: Stores, token: str, report: Report
) -> None:
    rqstate.reset_keep_tokens(stores.redis)
    report.fleet = fleet.Fleet(
        group,
        stores,
        token,
        processes=args.processes,
        workers=args.workers,
        connections=args.fleet_connections,
        duration_s=args.fleet_duration,
    ).measure()
    for name, rate in report.fleet.peak.items():
        log(f"open-loop peak {name}: {rate:,.0f} req/s")


def mean_batch(report: Report) -> int:
    """Permits per job the receiver produced under the drain phase's load."""
    if report.drain is None or not report.drain.jobs:
        return 0
    return max(1, round(report.drain.permits / report.drain.jobs))


def service_env(args: argparse.Namespace) -> dict[str, str]:
    pairs = (item.partition("=") for item in args.service_env)
    return {key: value for key, _, value in pairs}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def service_available(report: Report) -> bool:
    """Whether the permit-push CLI is installed; without it only the baselines run."""
    try:
        cli_path()
    except BenchError as exc:
        report.notes.append(f"{exc}: only the baselines ran")
        return False
    return True


def run(args: argparse.Namespace, report: Report) -> None:
    """Run the chosen phases, filling `report` as they finish."""
    require_wrk()
    pg = pgbase.PgTarget(args.pg_host, args.pg_port, args.pg_user, args.pg_db)
    redis_url = f"{args.redis}/{args.redis_db}"
    stores = Stores(
        Redis.from_url(redis_url),
        pg.conninfo(),
        Service(redis_url, pg.sqlalchemy_url(), extra=service_env(args)),
    )
    report.settings.update({k: v for k, v in vars(args).items() if k != "json"})
    phases = {
        "http": http_phase,
        "drain": drain_phase,
        "growth": growth_phase,
        "ack": ack_phase,
        "fleet": fleet_phase,
    }
    with_service = service_available(report)
    load_at_start = load_average()
    try:
        with process_group() as group:
            log(f"database {pg.dbname}, Redis db {args.redis_db}; logs in {LOG_DIR}")
            pgbase.recreate_database(pg)
            stores.redis.flushdb()
            token = "bench-token"  # the baselines check no token
            if with_service:
                stores.service.upgrade()
                token = stores.service.create_token("bench")
            for name in args.phases:
                if not with_service and name != "http":
                    continue
                log(f"phase {name}")
                phases[name](args, group, stores, token, report)
    finally:
        cleanup(stores, pg, keep_db=args.keep_db)
    report.notes.append(
        f"load average at start {load_at_start}, at end {load_average()}: anything else running "
        "on the same cores lowers every figure"
    )


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def cleanup(stores: Stores, pg: pgbase.PgTarget, *, keep_db: bool) -> None:
    """Leave Redis and PostgreSQL as found: the bench's db index empty, its database gone."""
    stores.redis.flushdb()
    if not keep_db:
        pgbase.drop_database(pg)


def main(argv: list[str] | None = None) -> int:
    report = Report()
    status = 0
    try:
        args = resolve(parse_args(argv))
        run(args, report)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started was stopped", file=sys.stderr)
        status = 130
    if report.settings:  # what finished before an error is still worth seeing
        print_report(report)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(asdict(report), fh, indent=2, default=str)
    return status
