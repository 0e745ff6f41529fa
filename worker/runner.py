"""The worker process: an RQ SimpleWorker plus threads publishing tokens and figures.

RQ's default Worker forks a work horse per job: about 6 jobs/s measured here, since each
fork re-imports state and opens a new database connection. SimpleWorker runs jobs in its
own process and keeps the engine and zone cache warm; a crash of a job still lands in
RQ's FailedJobRegistry, and a killed process's job is re-run from the StartedJobRegistry.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from functools import partial

import structlog
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from shared.clients import publish_tokens
from shared.config import Settings
from shared.constants import PERSIST_PERMITS_JOB
from shared.data_loss import LOSS_CHECK_S, data_lost, wait_for_report
from shared.queue import JOB_SERIALIZER, permits_queue
from shared.redis import make_worker_redis
from worker.context import WorkerContext, init_context
from worker.jobs import persist_permit_jobs
from worker.lean_worker import LeanWorker
from worker.operations import raise_operation_counter
from worker.recovery import HeartbeatWorker
from worker.stats import publish_database_counts

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The loss watch's longest pause between tries while Redis or the database is away.
MAX_LOSS_RETRY_S = 1.0


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Work the permits queue until stopped (or, with ``burst``, until it is empty).

    RQ's worker quits when Redis goes away at the wrong moment (while it records a
    finished job). Here the process stays: it waits for Redis and starts a new RQ worker;
    the job it was finishing is in the StartedJobRegistry and is re-run if needed.
    """
    context = init_context(settings)
    redis = make_worker_redis(settings)
    side_redis = make_worker_redis(settings)  # the background threads' own connections
    publishers = [
        Periodic("tokens_publish", settings.token_publish_s, partial(_tokens, context, side_redis)),
        Periodic("stats_publish", settings.stats_publish_s, partial(_stats, context, side_redis)),
        Periodic("opseq_floor", settings.token_publish_s, partial(_opseq, context, side_redis)),
    ]
    for publisher in publishers:
        publisher.run_once()  # the receiver can authenticate before the first interval
        publisher.start()
    watch = LossWatch(side_redis, publishers)
    watch.start()
    queue = permits_queue(redis, settings)
    try:
        while True:
            worker = watch.worker = HeartbeatWorker(
                [queue],
                connection=redis,
                serializer=JOB_SERIALIZER,
                log_job_description=False,  # job arguments are permits: never log them
                abandoned_job_s=settings.abandoned_job_s,
                # RQ blocks an idle worker in BLMOVE for worker_ttl - 15 s and only then
                # checks whether maintenance (which re-runs abandoned jobs) is due.
                worker_ttl=settings.maintenance_interval_s + 15,
                maintenance_interval=settings.maintenance_interval_s,
                job_class=queue.job_class,  # permits_queue's: LeanJob
                jobs_per_txn=settings.worker_jobs_per_txn,
                set_runners={PERSIST_PERMITS_JOB: persist_permit_jobs},
            )
            try:
                worker.work(
                    burst=burst, with_scheduler=True, logging_level=settings.log_level.upper()
                )
                return
            # A Sentinel failover shows as a ConnectionError (MasterNotFoundError while
            # there is no primary; redis-py's Sentinel connection turns a demoted
            # primary's READONLY into one); a plain URL behind a moved address shows
            # READONLY itself, a ResponseError.
            except (RedisConnectionError, ReadOnlyError):
                if worker.stop_signalled:  # RQ's stop failed on the Redis that is gone
                    log.warning("worker_stopped_without_redis")
                    return
                log.warning("worker_lost_redis", action="waiting for Redis, then restarting")
            if not wait_for_redis(redis):
                return
    finally:
        watch.stop()
        for publisher in publishers:
            publisher.stop()
        # Leave current figures behind (a burst run's, or the last before a restart).
        run_logged("stats_publish", partial(_stats, context, side_redis, force=True))


def wait_for_redis(redis: Redis, max_delay_s: float = 5.0) -> bool:
    """Wait with backoff until Redis answers as a primary (True) or SIGTERM/SIGINT arrives
    (False). A replica answers too, and would refuse the new RQ worker's first write."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        delay_s = 0.2
        while not stop.wait(delay_s):
            try:
                if is_primary(redis):
                    log.info("worker_redis_back")
                    return True
            except RedisConnectionError:
                pass
            delay_s = min(delay_s * 2, max_delay_s)
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def is_primary(redis: Redis) -> bool:
    try:
        role = redis.execute_command("ROLE")  # type: ignore[no-untyped-call]
    except ResponseError:  # ROLE renamed or refused (some hosted Redis): an answer will do
        return True
    return bool(role[0] in (b"master", "master"))


def _tokens(context: WorkerContext, redis: Redis) -> None:
    """Re-publish the active clients' token hashes.

    Redis may restart without its data; this brings the tokens back within one interval
    with no one acting. The read and the write happen under the clients' lock, released
    as the session closes: a revoke waits for it, so this never brings a revoked token
    back (shared/clients.py).
    """
    with context.sessions() as session:
        count = publish_tokens(session, redis)
    log.debug("tokens_published", clients=count)


def _opseq(context: WorkerContext, redis: Redis) -> None:
    """Keep Redis's order counter above the database's largest order number."""
    with context.sessions() as session:
        raise_operation_counter(session, redis)


def _stats(context: WorkerContext, redis: Redis, *, force: bool = False) -> None:
    """Publish the database counts the receiver's /metrics shows (worker/stats.py)."""
    with context.sessions() as session:
        publish_database_counts(session, redis, context.settings.stats_publish_s, force=force)


def run_logged(task: str, action: Callable[[], None]) -> None:
    """Run ``action``; a failure (Redis or the database away) is logged, not raised."""
    try:
        action()
    except Exception as exc:  # one line each interval, not a traceback, while it lasts
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        log.warning("periodic_task_failed", task=task, error=type(exc).__name__, reason=reason)


class Periodic(threading.Thread):
    """Runs ``action`` every ``interval_s`` seconds until stopped.

    A failure (Redis or the database away) is logged and retried at the next interval.
    """

    def __init__(self, name: str, interval_s: float, action: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._action = action
        self._interval_s = interval_s
        self._stopped = threading.Event()

    def run_once(self) -> None:
        run_logged(self.name, self._action)

    def run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self.run_once()

    def stop(self) -> None:
        self._stopped.set()


class LossWatch(threading.Thread):
    """Rebuilds what Redis lost, at once, when its data is gone (shared/data_loss.py).

    Waits for a receiver's report, or ``check_s``, then looks for the token set's marker.
    On a loss it runs every publisher now (tokens first: a receiver that never read a set
    needs them) instead of at their next interval, and registers the RQ worker again.
    Everything else a loss takes is re-created by use or was only in the queue
    (docs/reliability.md, "Redis lost its data").
    """

    def __init__(
        self, redis: Redis, publishers: list[Periodic], check_s: float = LOSS_CHECK_S
    ) -> None:
        super().__init__(name="loss_watch", daemon=True)
        self._redis = redis
        self._publishers = publishers
        self._check_s = check_s
        self._stopped = threading.Event()
        self.worker: LeanWorker | None = None  # the RQ worker of the moment (runner's loop)

    def run(self) -> None:
        retry_s = self._check_s
        while not self._stopped.is_set():
            try:
                self._register_again()  # the first worker's rebuild hides the loss from others
                lost = wait_for_report(self._redis, self._check_s) or data_lost(self._redis)
                if not lost or self.rebuild():
                    retry_s = self._check_s
                    continue
            except Exception as exc:  # Redis away, mostly; the thread must not die of it
                if retry_s == self._check_s:  # once per run of failures
                    log.warning("loss_watch_failing", error=type(exc).__name__)
            # Not rebuilt (the database or Redis away): look again soon, without spinning.
            retry_s = min(retry_s * 2, MAX_LOSS_RETRY_S)
            self._stopped.wait(retry_s)

    def rebuild(self) -> bool:
        """Re-publish what a loss took, if the set is still missing; True once it is back.

        A report can arrive after another worker rebuilt: then there is nothing to do.
        """
        if not data_lost(self._redis):
            return True
        log.warning("redis_data_lost", action="republishing tokens and figures, re-registering")
        for publisher in self._publishers:
            publisher.run_once()
        self._register_again()
        return not data_lost(self._redis)

    def _register_again(self) -> None:
        worker = self.worker
        if worker is not None:
            worker.register_again_if_lost()

    def stop(self) -> None:
        self._stopped.set()
