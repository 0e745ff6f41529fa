"""A worker's fixed cost per job and its cost per permit, from one burst worker on a filled queue.

    python -m bench.worker_cost [--jobs 1000] [--sizes 1,16,64,200] [--per-txn 1,16]

For each number of jobs a worker runs as one (WORKER_JOBS_PER_TXN, `--per-txn`) and each
job size: the queue is filled through the receiver's enqueue code (bench.fill), then one
`permit-push worker --burst` drains it alone. Its CPU (user + system, from
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

# The goals (docs/performance.md, "A worker's cost per job"): CPU a permit at these
# job sizes, and Redis commands a job, at the default WORKER_JOBS_PER_TXN.
GOAL_US_PER_PERMIT = {16: 80.0, 200: 20.0}
GOAL_COMMANDS_PER_JOB = 15.0

REDIS_URL = "redis://127.0.0.1:6379"
REDIS_DB = 12
NOOP_JOB = "builtins.dict"  # called with no arguments: returns {}, touches nothing


@dataclass(frozen=True, slots=True)
class Cost:
    per_txn: int  # WORKER_JOBS_PER_TXN of the worker that drained them
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

    def row(self) -> str:
        size = f"{self.size:11d}" if self.size else f"{'no-op':>11}"
        if self.size:
            us_per_permit = f"{self.us_per_permit:15.0f}"
            commands_per_permit = f"{self.commands_per_job / self.size:19.2f}"
        else:
            us_per_permit, commands_per_permit = f"{'-':>15}", f"{'-':>19}"
        return (
            f"  {self.per_txn:7d} {size} {self.ms_per_job:12.2f} {us_per_permit}"
            f" {self.commands_per_job:16.1f} {commands_per_permit}{goals(self)}"
        )


def goals(cost: Cost) -> str:
    """The goals this row is measured against, met or not (at the default per-txn only)."""
    if cost.per_txn != Settings().worker_jobs_per_txn or not cost.size:
        return ""
    marks = []
    goal_us = GOAL_US_PER_PERMIT.get(cost.size)
    if goal_us is not None:
        marks.append(f"us/permit <= {goal_us:g}: {_met(cost.us_per_permit <= goal_us)}")
    met = cost.commands_per_job <= GOAL_COMMANDS_PER_JOB
    marks.append(f"commands/job <= {GOAL_COMMANDS_PER_JOB:g}: {_met(met)}")
    return "   (" + "; ".join(marks) + ")"


def _met(met: bool) -> str:
    return "met" if met else "NOT met"


def burst_worker_cpu(service: Service, per_txn: int) -> float:
    """CPU seconds of one `permit-push worker --burst` run to completion."""
    env = {**os.environ, **service.env(), "WORKER_JOBS_PER_TXN": str(per_txn)}
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


def measure(service: Service, redis: Redis, token: str, jobs: int, size: int, per_txn: int) -> Cost:
    fill(service, token, jobs, size)
    return drain(service, redis, jobs, size, per_txn)


def measure_noop(service: Service, redis: Redis, jobs: int, per_txn: int) -> Cost:
    """Jobs that run nothing, written by the receiver's job writer: RQ's cost per job."""
    settings = Settings.from_env({**os.environ, **service.env()})
    writer = JobWriter(redis, settings, ack=NO_WAIT)
    for _ in range(jobs):
        writer.write(NOOP_JOB, {}, "no-op", {})
    return drain(service, redis, jobs, 0, per_txn)


def drain(service: Service, redis: Redis, jobs: int, size: int, per_txn: int) -> Cost:
    """One burst worker on the filled queue: its CPU less a burst run's on an empty one."""
    redis.config_resetstat()
    before = commands(redis)
    cpu = burst_worker_cpu(service, per_txn)
    sent = commands(redis) - before - 1  # less our own INFO
    idle = burst_worker_cpu(service, per_txn)  # the queue is empty now: start-up, shut-down
    return Cost(per_txn, size, jobs, max(cpu - idle, 0.0), sent / jobs)


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
    parser.add_argument(
        "--per-txn",
        default=f"1,{Settings().worker_jobs_per_txn}",
        help="WORKER_JOBS_PER_TXN values, comma list (default: 1 and the default)",
    )
    parser.add_argument("--noop", action="store_true", help="also jobs that do nothing")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    per_txns = [int(n) for n in args.per_txn.split(",")]
    pg = pgbase.PgTarget(dbname="permit_bench_cost")
    pgbase.recreate_database(pg)
    redis = Redis.from_url(f"{REDIS_URL}/{REDIS_DB}")
    redis.flushdb()
    service = Service(f"{REDIS_URL}/{REDIS_DB}", pg.sqlalchemy_url())
    try:
        service.upgrade()
        token = service.create_token("cost")
        started = time.monotonic()
        # No-op jobs have no set runner: they run one by one whatever per_txn, so once.
        costs = [measure_noop(service, redis, args.jobs, per_txns[0])] if args.noop else []
        for per_txn in per_txns:
            for size in sizes:
                costs.append(measure(service, redis, token, args.jobs, size, per_txn))
        print(f"one burst worker, {args.jobs} jobs per size ({time.monotonic() - started:.0f} s)")
        print(
            "  per-txn permits/job   CPU ms/job   CPU us/permit   Redis cmds/job"
            "   Redis cmds/permit"
        )
        for cost in costs:
            print(cost.row())
        for per_txn in per_txns:
            sized = [c for c in costs if c.per_txn == per_txn and c.size]
            if len(sized) > 1:
                fixed_ms, per_permit_us = fit(sized)
                print(
                    f"  fit at {per_txn} per txn: {fixed_ms:.2f} ms per job"
                    f" + {per_permit_us:.0f} us per permit"
                )
    finally:
        redis.flushdb()
        pgbase.drop_database(pg)


if __name__ == "__main__":
    main()
