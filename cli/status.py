"""`permit-push status`: the queue, its workers and what reached the database, at a glance.

Queue figures come from RQ's keys in Redis (the same reads as the receiver's /metrics);
permit figures from the database, which an operator's command may read.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import click
from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.results import Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cli.checks import connect_redis, require_database
from shared.config import Settings
from shared.counts import DatabaseCounts, count_database
from shared.db import make_engine, make_sessionmaker
from shared.models import Permit
from shared.queue import JOB_SERIALIZER
from shared.queue_stats import JOB_STATUSES, QueueStats, read_queue_stats

LATEST_FAILURES = 3
TOP_ZONES = 10
# Clears the screen from the top left: a --watch refresh overwrites the last one.
_HOME_AND_CLEAR = "\x1b[H\x1b[J"


@dataclass(frozen=True, slots=True)
class Failure:
    job_id: str
    failed_at: datetime | None
    error: str  # the traceback's last line: the exception and its message


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    queue_name: str
    stats: QueueStats
    failures: list[Failure]
    stored_last_minute: int
    counts: DatabaseCounts
    zones: list[tuple[str, int]]  # disconnected zone name as sent, permits


@click.command()
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.2),
    help="Seconds between refreshes with --watch.",
)
@click.pass_obj
def status(settings: Settings, watch: bool, interval: float) -> None:
    """Queue depth by state, lag, workers, failures, recent stores, disconnected zones."""
    redis = connect_redis(settings)
    engine = make_engine(settings)
    require_database(engine)
    sessions = make_sessionmaker(engine)
    in_place = watch and is_terminal()
    try:
        while True:
            with sessions() as session:
                text = render(take_snapshot(redis, session, settings.queue_name))
            if in_place:  # color=True: click would strip the escape codes as colours
                click.echo(_HOME_AND_CLEAR + text, color=True)
            else:
                click.echo(text)
            if not watch:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()


def is_terminal() -> bool:
    return sys.stdout.isatty()


def take_snapshot(redis: Redis, session: Session, queue_name: str) -> Snapshot:
    now = datetime.now(UTC)
    return Snapshot(
        taken_at=now,
        queue_name=queue_name,
        stats=read_queue_stats(redis, [queue_name], now.timestamp()),
        failures=latest_failures(redis, queue_name),
        stored_last_minute=stored_since(session, now - timedelta(minutes=1)),
        counts=count_database(session),
        zones=disconnected_zones(session),
    )


def latest_failures(redis: Redis, queue_name: str, limit: int = LATEST_FAILURES) -> list[Failure]:
    """The most recent jobs in RQ's failed job registry, with the error that failed each."""
    registry = FailedJobRegistry(queue_name, connection=redis, serializer=JOB_SERIALIZER)
    # Scored by expiry (failure time + the same TTL), so the highest score failed last.
    job_ids = registry.get_job_ids(0, limit - 1, desc=True, cleanup=False)
    failures = []
    jobs = Job.fetch_many(job_ids, connection=redis, serializer=JOB_SERIALIZER)
    for job_id, job in zip(job_ids, jobs, strict=True):
        result = job.latest_result() if job is not None else None
        if result is not None and result.type == Result.Type.FAILED:
            lines = [line for line in (result.exc_string or "").splitlines() if line.strip()]
            failures.append(Failure(job_id, result.created_at, lines[-1] if lines else "?"))
        else:
            failures.append(Failure(job_id, None, "?"))
    return failures


def stored_since(session: Session, since: datetime) -> int:
    """Permits stored since ``since``, read from the newest rows only.

    `stored_at` has no index; the primary key follows insertion order, so the newest row
    stored before ``since`` is found by walking the key backwards, and only the rows
    after it are counted: the cost follows the recent rate, not the table's size.
    """
    boundary = (
        select(Permit.id)
        .where(Permit.stored_at < since)
        .order_by(Permit.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    count = session.scalar(
        select(func.count())
        .select_from(Permit)
        .where(Permit.id > func.coalesce(boundary, 0), Permit.stored_at >= since)
    )
    return count or 0


def disconnected_zones(session: Session, limit: int = TOP_ZONES) -> list[tuple[str, int]]:
    """The zone names (normalised) with the most disconnected permits."""
    permits = func.count().label("permits")
    rows = session.execute(
        select(Permit.zone_normalized, permits)
        .where(Permit.disconnected)
        .group_by(Permit.zone_normalized)
        .order_by(permits.desc(), Permit.zone_normalized)
        .limit(limit)
    )
    return [(str(zone), int(count)) for zone, count in rows]


def render(snapshot: Snapshot) -> str:
    stats = snapshot.stats
    lines = [f"permit-push status at {snapshot.taken_at:%Y-%m-%d %H:%M:%S} UTC", ""]
    for queue in stats.queues:
        if queue.name != snapshot.queue_name and not any(queue.jobs.values()):
            continue  # another application's empty queue in the same Redis
        depth = ", ".join(f"{queue.jobs[status]} {status}" for status in JOB_STATUSES)
        lines.append(f"queue {queue.name}: {depth}")
        lines.append(f"  lag (oldest queued job): {_duration(queue.lag_s)}")
    ours = [w for w in stats.workers if snapshot.queue_name in w.queues.split(",")]
    states = _tally(w.state for w in ours)
    lines += [
        "",
        f"workers on {snapshot.queue_name}: {len(ours)}" + (f" ({states})" if ours else ""),
    ]
    lines += [f"  {w.name}  {w.state}  {w.queues}" for w in sorted(ours, key=lambda w: w.name)]
    failed = stats.queue(snapshot.queue_name).jobs["failed"]
    lines += ["", f"failed jobs: {failed}; dead letters: {snapshot.counts.dead_letters}"]
    for failure in snapshot.failures:
        when = f"{failure.failed_at:%Y-%m-%d %H:%M:%S}" if failure.failed_at else "?"
        lines.append(f"  {when}  {failure.job_id}  {failure.error[:100]}")
    lines += ["", f"permits stored in the last minute: {snapshot.stored_last_minute}"]
    lines += [
        "",
        f"disconnected permits: {snapshot.counts.disconnected}"
        + (f" (top {len(snapshot.zones)} zone names)" if snapshot.zones else ""),
    ]
    lines += [f"  {count:>8}  {zone}" for zone, count in snapshot.zones]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _tally(values: Iterable[str]) -> str:
    return ", ".join(f"{n} {value}" for value, n in sorted(Counter(values).items()))
