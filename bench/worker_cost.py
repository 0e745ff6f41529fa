"""A worker's fixed cost per job and its cost per permit, from one burst worker on a filled queue.

    python -m bench.worker_cost [--jobs 1000] [--sizes 1,16,64,200]

For each job size: the queue is filled through the receiver's enqueue code (bench.fill),
then one `permit-push worker --burst` drains it alone. Its CPU (user + system, from
wait4) less that of a burst worker on an empty queue (start-up and shut-down) is the
cost of the jobs; Redis's INFO commandstats (reset before the drain; server-wide, so run
it on a quiet Redis) gives the commands per job. A least-squares line through the sizes
splits the cost into a fixed part per job and a part per permit. Uses Redis db 12 and the
database `permit_bench_cost` (created and dropped).

`--noop` also measures jobs that do nothing (`builtins.dict()`, written by the receiver's
job writer like a batch): RQ's own cost per job in this worker, the floor under the fixed
part whatever the job does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import uuid
from dataclasses import dataclass

from redis import Redis

from bench import pgbase
from bench.procs import python_argv
from bench.service import Service, cli_path
from shared.config import Settings
from shared.durability import NO_WAIT
from shared.queue import JobWriter

REDIS_URL = "redis://127.0.0.1:6379"
REDIS_DB = 12
NOOP_JOB = "builtins.dict"  # called with no arguments: returns {}, touches nothing


@dataclass(frozen=True, slots=True)
class Cost:
    size: int
    jobs: int
    cpu_s: float  # the drain's, start-up excluded
    commands_per_job: float

    @property
    def us_per_permit(self) -> float:
        return 1e6 * self.cpu_s / (self.jobs * self.size)

    @property
    def ms_per_job(self) -> float:
        return 1e3 * self.cpu_s / self.jobs


def burst_worker_cpu(service: Service) -> float:
    """CPU seconds of one `permit-push worker --burst` run to completion."""
    env = {**os.environ, **service.env()}
    proc = subprocess.Popen(
        [cli_path(), "worker", "--burst"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"permit-push worker --burst exited with {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def fill(service: Service, token: str, jobs: int, size: int) -> None:
    argv = python_argv(
        "-m", "bench.fill", "--count", str(jobs * size), "--batch", str(size),
        "--token", token, "--nonce", uuid.uuid4().hex[:6],
    )  # fmt: skip
    env = {**os.environ, **service.env(), "MAX_QUEUE_DEPTH": "0"}
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, timeout=1800)


def commands(redis: Redis) -> int:
    stats = redis.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def measure(service: Service, redis: Redis, token: str, jobs: int, size: int) -> Cost:
    fill(service, token, jobs, size)
    return drain(service, redis, jobs, size)


def measure_noop(service: Service, redis: Redis, jobs: int) -> Cost:
    """Jobs that run nothing, written by the receiver's job writer: RQ's cost per job."""
    settings = Settings.from_env({**os.environ, **service.env()})
    writer = JobWriter(redis, settings, ack=NO_WAIT)
    for _ in range(jobs):
        writer.write(NOOP_JOB, {}, "no-op", {})
    return drain(service, redis, jobs, 0)


def drain(service: Service, redis: Redis, jobs: int, size: int) -> Cost:
    """One burst worker on the filled queue: its CPU less a burst run's on an empty one."""
    redis.config_resetstat()
    before = commands(redis)
    cpu = burst_worker_cpu(service)
    sent = commands(redis) - before - 1  # less our own INFO
    idle = burst_worker_cpu(service)  # the queue is empty now: start-up and shut-down only
    return Cost(size, jobs, max(cpu - idle, 0.0), sent / jobs)


def fit(costs: list[Cost]) -> tuple[float, float]:
    """(fixed ms per job, us per permit): least squares of job CPU against job size."""
    xs = [float(c.size) for c in costs]
    ys = [c.ms_per_job for c in costs]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    return mean_y - slope * mean_x, 1e3 * slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per size")
    parser.add_argument("--sizes", default="1,16,64,200", help="permits per job, comma list")
    parser.add_argument("--noop", action="store_true", help="also jobs that do nothing")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    pg = pgbase.PgTarget(dbname="permit_bench_cost")
    pgbase.recreate_database(pg)
    redis = Redis.from_url(f"{REDIS_URL}/{REDIS_DB}")
    redis.flushdb()
    service = Service(f"{REDIS_URL}/{REDIS_DB}", pg.sqlalchemy_url())
    try:
        service.upgrade()
        token = service.create_token("cost")
        started = time.monotonic()
        noop = measure_noop(service, redis, args.jobs) if args.noop else None
        costs = [measure(service, redis, token, args.jobs, size) for size in sizes]
        print(f"one burst worker, {args.jobs} jobs per size ({time.monotonic() - started:.0f} s)")
        print("  permits/job   CPU ms/job   CPU us/permit   Redis commands/job")
        if noop is not None:
            print(
                f"  {'no-op':>11} {noop.ms_per_job:12.2f} {'-':>15} {noop.commands_per_job:20.1f}"
            )
        for c in costs:
            print(
                f"  {c.size:11d} {c.ms_per_job:12.2f} {c.us_per_permit:15.0f}"
                f" {c.commands_per_job:20.1f}"
            )
        if len(costs) > 1:
            fixed_ms, per_permit_us = fit(costs)
            print(f"  fit: {fixed_ms:.2f} ms per job + {per_permit_us:.0f} us per permit")
    finally:
        redis.flushdb()
        pgbase.drop_database(pg)


if __name__ == "__main__":
    main()
