"""The worker process: an RQ SimpleWorker plus a token publisher thread.

RQ's default Worker forks a work horse per job: about 6 jobs/s measured here, since each
fork re-imports state and opens a new database connection. SimpleWorker runs jobs in its
own process and keeps the engine and zone cache warm; a crash of a job still lands in
RQ's FailedJobRegistry, and a killed process's job is re-run from the StartedJobRegistry.
"""

from __future__ import annotations

import signal
import threading

import structlog
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue
from rq.serializers import JSONSerializer

from shared.clients import publish_tokens
from shared.config import Settings
from shared.redis import make_worker_redis
from worker.context import WorkerContext, init_context
from worker.recovery import HeartbeatWorker

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Work the permits queue until stopped (or, with ``burst``, until it is empty).

    RQ's worker quits when Redis goes away at the wrong moment (while it records a
    finished job). Here the process stays: it waits for Redis and starts a new RQ worker;
    the job it was finishing is in the StartedJobRegistry and is re-run if needed.
    """
    context = init_context(settings)
    redis = make_worker_redis(settings)
    publisher = TokenPublisher(context, settings)
    publisher.publish_once()  # the receiver can authenticate before the first interval
    publisher.start()
    queue = Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)
    try:
        while True:
            worker = HeartbeatWorker(
                [queue],
                connection=redis,
                serializer=JSONSerializer,
                log_job_description=False,  # job arguments are permits: never log them
                abandoned_job_s=settings.abandoned_job_s,
                # RQ blocks an idle worker in BLMOVE for worker_ttl - 15 s and only then
                # checks whether maintenance (which re-runs abandoned jobs) is due.
                worker_ttl=settings.maintenance_interval_s + 15,
                maintenance_interval=settings.maintenance_interval_s,
            )
            try:
                worker.work(
                    burst=burst, with_scheduler=True, logging_level=settings.log_level.upper()
                )
                return
            except RedisConnectionError:
                log.warning("worker_lost_redis", action="waiting for Redis, then restarting")
            if not wait_for_redis(redis):
                return
    finally:
        publisher.stop()


def wait_for_redis(redis: Redis, max_delay_s: float = 5.0) -> bool:
    """Ping Redis with backoff until it answers (True) or SIGTERM/SIGINT arrives (False)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        delay_s = 0.2
        while not stop.wait(delay_s):
            try:
                redis.ping()
                log.info("worker_redis_back")
                return True
            except RedisConnectionError:
                delay_s = min(delay_s * 2, max_delay_s)
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class TokenPublisher(threading.Thread):
    """Re-publishes the active clients' token hashes to Redis every few seconds.

    Redis may restart without its data; this brings the tokens back within one interval
    with no one acting.
    """

    def __init__(self, context: WorkerContext, settings: Settings) -> None:
        super().__init__(name="token-publisher", daemon=True)
        self._context = context
        self._redis = make_worker_redis(settings)
        self._interval_s = settings.token_publish_s
        self._stopped = threading.Event()

    def publish_once(self) -> None:
        try:
            with self._context.sessions() as session:
                count = publish_tokens(session, self._redis)
            log.debug("tokens_published", clients=count)
        except Exception:  # Redis or the database away: try again next interval
            log.warning("tokens_publish_failed", exc_info=True)

    def run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self.publish_once()

    def stop(self) -> None:
        self._stopped.set()
