"""`permit-push failed`: batches RQ gave up on, and permits the worker dead-lettered.

Two places hold what was not stored: RQ's FailedJobRegistry (a whole batch whose retries
ran out, say after a long database outage) and the `dead_letters` table (one permit the
database refused, with its reason). Job ids are UUIDs; dead letters are numbered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click
from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import select
from sqlalchemy.orm import Session

from cli.checks import connect_redis, database_sessions
from shared import opseq
from shared.config import Settings
from shared.constants import (
    APPLY_OPERATIONS_JOB,
    OPERATION_CLASH_REASON,
    PERSIST_PERMITS_JOB,
)
from shared.errors import PermitPushError
from shared.models import DeadLetter, utcnow
from shared.queue import JOB_RETRY, JOB_SERIALIZER, JobWriter


class NotFailedError(PermitPushError):
    """No failed job or dead letter has that id."""


@dataclass(frozen=True, slots=True)
class Failures:
    writer: JobWriter
    registry: FailedJobRegistry

    @classmethod
    def open(cls, settings: Settings, redis: Redis) -> Failures:
        writer = JobWriter.connect(redis, settings)
        return cls(writer, FailedJobRegistry(queue=writer.queue))

    @property
    def queue(self) -> Queue:
        return self.writer.queue

    def jobs(self) -> list[Job]:
        ids = self.registry.get_job_ids()
        jobs = self.queue.job_class.fetch_many(ids, self.queue.connection, JOB_SERIALIZER)
        return [job for job in jobs if job]

    def job(self, job_id: str) -> Job:
        if job_id not in self.registry:
            raise NotFailedError(f"no failed job {job_id!r} (see: permit-push failed list)")
        try:
            return self.queue.job_class.fetch(
                job_id, connection=self.queue.connection, serializer=JOB_SERIALIZER
            )
        except NoSuchJobError:
            raise NotFailedError(f"failed job {job_id!r} has expired") from None

    def requeue_job(self, job_id: str) -> int:
        """Put a failed batch back on the queue with a fresh set of retries."""
        job = self.job(job_id)
        job.retries_left = JOB_RETRY.max
        self.registry.requeue(job)
        return len(permits_of(job))

    def requeue_letter(self, session: Session, letter: DeadLetter) -> str:
        """Enqueue a dead-lettered permit again, under its own reference id.

        Like any create: its owner goes back to Redis with the job (so an update for it is
        accepted while it waits) and, with DURABLE_ACK, Redis fsyncs it before we go on.
        """
        if letter.payload.get("kind") in ("update", "delete"):  # an update or a delete
            operation = dict(letter.payload)
            if letter.reason.startswith(OPERATION_CLASH_REASON):  # its number was another's
                (operation["seq"],) = opseq.take_now(self.writer.redis, 1)  # as received now
            job_id = self.writer.write(
                APPLY_OPERATIONS_JOB,
                {"operations": [operation]},
                "apply_operations(1 operations, requeued dead letter)",
                {},
            )
            letter.requeued_at = utcnow()
            session.flush()
            return job_id
        job_id = self.writer.write(
            PERSIST_PERMITS_JOB,
            {"permits": [letter.payload]},
            "persist_permits(1 permits, requeued dead letter)",
            {letter.reference_id: int(str(letter.payload["client_id"]))},
        )
        letter.requeued_at = utcnow()
        session.flush()
        return job_id


def permits_of(job: Job) -> list[dict[str, Any]]:
    permits = (job.kwargs or {}).get("permits", [])
    return permits if isinstance(permits, list) else []


def last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _pending_letters(session: Session) -> list[DeadLetter]:
    query = select(DeadLetter).where(DeadLetter.requeued_at.is_(None)).order_by(DeadLetter.id)
    return list(session.scalars(query))


@click.group()
def failed() -> None:
    """What was not stored: failed batches (RQ) and dead-lettered permits."""


@failed.command("list")
@click.pass_obj
def list_(settings: Settings) -> None:
    """List failed batches and dead letters not yet requeued."""
    redis = connect_redis(settings)
    jobs = Failures.open(settings, redis).jobs()
    click.echo(f"failed batches: {len(jobs)}")
    for job in jobs:
        ended = f"{job.ended_at:%Y-%m-%d %H:%M:%S}" if job.ended_at else "-"
        result = job.latest_result()
        reason = last_line(result.exc_string if result is not None else None)
        click.echo(f"  {job.id}  {ended}  {len(permits_of(job))} permits  {reason[:100]}")
    with database_sessions(settings) as sessions, sessions() as session:
        letters = _pending_letters(session)
    click.echo(f"dead letters: {len(letters)}")
    for letter in letters:
        created = f"{letter.created_at:%Y-%m-%d %H:%M:%S}"
        click.echo(f"  {letter.id:<6} {letter.reference_id}  {created}  {letter.reason[:100]}")


@failed.command()
@click.argument("failure_id")
@click.pass_obj
def show(settings: Settings, failure_id: str) -> None:
    """Show one failed batch (job id) or dead letter (number) with its reason."""
    if failure_id.isdigit():
        with database_sessions(settings) as sessions, sessions() as session:
            letter = session.get(DeadLetter, int(failure_id))
            if letter is None:
                raise NotFailedError(f"no dead letter {failure_id}")
            click.echo(f"dead letter {letter.id}: permit {letter.reference_id}")
            click.echo(f"job: {letter.job_id or '-'}  created: {letter.created_at:%Y-%m-%d %H:%M}")
            requeued = f"{letter.requeued_at:%Y-%m-%d %H:%M}" if letter.requeued_at else "no"
            click.echo(f"requeued: {requeued}")
            click.echo(f"reason: {letter.reason}")
            click.echo(json.dumps(letter.payload, indent=2, sort_keys=True))
        return
    redis = connect_redis(settings)
    job = Failures.open(settings, redis).job(failure_id)
    permits = permits_of(job)
    retries = job.retries_left or 0
    click.echo(f"failed batch {job.id}: {len(permits)} permits, {retries} retries left")
    click.echo("reference ids: " + " ".join(str(p.get("reference_id")) for p in permits))
    result = job.latest_result()
    click.echo((result.exc_string if result else None) or "(no traceback kept)")


@failed.command()
@click.argument("failure_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every failed batch and pending dead letter.")
@click.pass_obj
def requeue(settings: Settings, failure_ids: tuple[str, ...], all_: bool) -> None:
    """Put failed batches (job ids) and dead letters (numbers) back on the queue."""
    if not failure_ids and not all_:
        raise click.UsageError("give job ids or dead-letter numbers, or --all")
    redis = connect_redis(settings)
    failures = Failures.open(settings, redis)
    job_ids = [i for i in failure_ids if not i.isdigit()]
    letter_ids = [int(i) for i in failure_ids if i.isdigit()]
    if all_:
        job_ids = [job.id for job in failures.jobs()]
    for job_id in job_ids:
        count = failures.requeue_job(job_id)
        click.echo(f"requeued batch {job_id} ({count} permits)")
    with database_sessions(settings) as sessions, sessions.begin() as session:
        letters = _pending_letters(session) if all_ else []
        for letter_id in letter_ids:
            letter = session.get(DeadLetter, letter_id)
            if letter is None:
                raise NotFailedError(f"no dead letter {letter_id}")
            letters.append(letter)
        for letter in letters:
            new_job = failures.requeue_letter(session, letter)
            click.echo(f"requeued dead letter {letter.id} ({letter.reference_id}) as job {new_job}")
