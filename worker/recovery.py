"""Re-running the batch of a worker that died (SIGKILL, OOM, lost host) within a minute.

RQ notices an abandoned job when its entry in the StartedJobRegistry expires and a worker
runs maintenance. RQ's SimpleWorker registers a job for `job_timeout + 60` seconds (360 s
here) and cleans registries every 10 minutes, while an idle worker blocks in BLMOVE for
`worker_ttl - 15` (405 s): up to about 16 minutes in all. `HeartbeatWorker` registers a job
for ABANDONED_JOB_S only, and a thread renews that while the job runs; the runner sets the
maintenance interval and the dequeue timeout to MAINTENANCE_INTERVAL_S. A killed worker's
job is then re-run (JOB_RETRY's first interval is 0) within ABANDONED_JOB_S + 2 x
MAINTENANCE_INTERVAL_S: 50 s with the defaults.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import structlog
from rq.exceptions import StopRequested
from rq.job import Job
from rq.queue import Queue
from rq.utils import now

from worker.context import get_context
from worker.expiry import dead_letter_old_failures
from worker.lean_worker import LeanWorker

log = structlog.get_logger(__name__)


class HeartbeatWorker(LeanWorker):
    """A LeanWorker whose running job counts as abandoned after ``abandoned_job_s`` of silence."""

    def __init__(self, *args: Any, abandoned_job_s: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.abandoned_job_s = abandoned_job_s
        self._job_heartbeat = JobHeartbeat(self)

    def get_heartbeat_ttl(self, job: Job) -> int:
        # RQ's SimpleWorker answers job.timeout + 60: a dead worker's job waits that long.
        return self.abandoned_job_s

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance, but none once a stop is requested: the worker is leaving.

        A SIGTERM mid-job stops RQ's scheduler process at once. If maintenance falls due
        as the job ends, RQ starts a new scheduler before the loop sees the stop, then
        stops it: the child, forked a moment ago with the worker's signal handlers,
        ignores a second SIGTERM within a second, and the worker waits for it for ever
        (seen in tests/fault: `test_worker_sigterm_finishes_its_batch`). Another worker's
        maintenance cleans the registries.
        """
        if self._stop_requested:
            return
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]

    def clean_registries(self) -> None:
        """RQ's maintenance, plus rescuing jobs orphaned in the intermediate queue sooner.

        A job sits in RQ's intermediate queue between the worker's BLMOVE and its
        registration as started: a worker (or Redis) that dies in that instant leaves
        it there, and RQ only requeues it after a minute and two maintenance runs.
        """
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                try:
                    self._rescue_intermediate(queue)
                    self._dead_letter_old_failures(queue)
                finally:
                    queue.release_maintenance_lock()  # type: ignore[no-untyped-call]
        super().clean_registries()  # type: ignore[no-untyped-call]

    def _dead_letter_old_failures(self, queue: Queue) -> None:
        """Failed batches into dead_letters before RQ expires them (worker/expiry.py)."""
        context = get_context()
        try:
            dead_letter_old_failures(queue, context.sessions, context.settings.failed_dead_letter_s)
        except StopRequested:
            raise  # SIGTERM, raised by RQ wherever the worker is: never swallowed
        except Exception as exc:  # the database away: the next maintenance tries again
            log.warning("failed_batch_dead_letter_failed", error=type(exc).__name__)

    def _rescue_intermediate(self, queue: Queue) -> None:
        intermediate = queue.intermediate_queue
        grace = timedelta(seconds=self.abandoned_job_s)
        for job_id in intermediate.get_job_ids():
            if job_id in queue.started_job_registry:
                continue
            job = queue.fetch_job(job_id)
            if job is None:
                intermediate.remove(job_id)
                continue
            if intermediate.set_first_seen(job_id):
                continue  # seen for the first time: it may just be on its way
            first_seen = intermediate.get_first_seen(job_id)
            if first_seen is not None and now() - first_seen > grace:
                log.warning("job_rescued_from_intermediate_queue", job_id=job_id)
                # As RQ's own IntermediateQueue.cleanup does: a failure, so Retry applies.
                self.handle_job_failure(
                    job, queue, exc_string="Job was stuck in the intermediate queue."
                )
                intermediate.remove(job_id)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        self._job_heartbeat.start()
        try:
            return bool(super().work(*args, **kwargs))
        finally:
            self._job_heartbeat.stop()


class JobHeartbeat(threading.Thread):
    """Renews the running jobs' StartedJobRegistry entries while they run.

    SimpleWorker runs a job on its main thread, so nothing else would: RQ's forking
    Worker does this from the parent while the work horse runs. One thread for the
    worker's life, not one started and joined per job: it wakes every third of the
    entry's TTL and renews the jobs the worker is running then (a set's, or one), so a
    job is renewed at most a third of the TTL after it started. Only the registry scores
    and the worker's own key are touched; ZADD XX never brings back an entry the main
    thread has just removed on finishing the job.
    """

    def __init__(self, worker: HeartbeatWorker) -> None:
        super().__init__(name="job-heartbeat", daemon=True)
        self._worker = worker
        self._ttl_s = worker.abandoned_job_s
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self._ttl_s / 3):
            running = self._worker.running
            if not running:
                continue
            try:
                with self._worker.connection.pipeline() as pipe:
                    for job, execution in running:
                        job.started_job_registry.add_execution(
                            execution, pipeline=pipe, ttl=self._ttl_s, xx=True
                        )
                    self._worker.heartbeat(self._ttl_s + 60, pipeline=pipe)
                    pipe.execute()
            except Exception:  # Redis away: the jobs cannot finish either; RQ sorts it out
                log.warning(
                    "job_heartbeat_failed", job_ids=[j.id for j, _ in running], exc_info=True
                )

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=5)
