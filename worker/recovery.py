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
from typing import Any

import structlog
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue

log = structlog.get_logger(__name__)


class HeartbeatWorker(SimpleWorker):
    """A SimpleWorker whose running job counts as abandoned after ``abandoned_job_s`` of silence."""

    def __init__(self, *args: Any, abandoned_job_s: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.abandoned_job_s = abandoned_job_s

    def get_heartbeat_ttl(self, job: Job) -> int:
        # RQ's SimpleWorker answers job.timeout + 60: a dead worker's job waits that long.
        return self.abandoned_job_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        heartbeat = JobHeartbeat(self, job)
        heartbeat.start()
        try:
            super().execute_job(job, queue)
        finally:
            heartbeat.stop()


class JobHeartbeat(threading.Thread):
    """Renews the running job's StartedJobRegistry entry while the job runs.

    SimpleWorker runs the job on its main thread, so nothing else would: RQ's forking
    Worker does this from the parent while the work horse runs. Only the registry score
    and the worker's own key are touched; ZADD XX never brings back an entry the main
    thread has just removed on finishing the job.
    """

    def __init__(self, worker: HeartbeatWorker, job: Job) -> None:
        super().__init__(name="job-heartbeat", daemon=True)
        self._worker = worker
        self._job = job
        self._ttl_s = worker.abandoned_job_s
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self._ttl_s / 3):
            execution = self._worker.execution
            if execution is None:
                continue
            try:
                with self._worker.connection.pipeline() as pipe:
                    self._job.started_job_registry.add_execution(
                        execution, pipeline=pipe, ttl=self._ttl_s, xx=True
                    )
                    self._worker.heartbeat(self._ttl_s + 60, pipeline=pipe)
                    pipe.execute()
            except Exception:  # Redis away: the job cannot finish either; RQ sorts it out
                log.warning("job_heartbeat_failed", job_id=self._job.id, exc_info=True)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
