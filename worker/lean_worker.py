"""An RQ SimpleWorker without the Redis round trips that a busy worker repeats per job for no news.

Per job, RQ 2's SimpleWorker sends about 20 round trips (54 commands) around our own
work; at ~16 permits a job that was most of a worker's CPU. Four kinds carry nothing
new on a busy worker, and `LeanWorker` skips or merges them:

- **Heartbeats.** The loop refreshes the worker key twice per job (after the job and
  before the next dequeue), each as two separate commands. Here one pipelined refresh
  after the job also sets the idle state, and a refresh is skipped while the key still
  lives nearly as long as asked (it lives `worker_ttl + 60` s).
- **The idle state** is set twice in a row (after the job, and as the dequeue starts);
  after a success it goes, with the heartbeat, into the success's own transaction.
- **The suspension check** (`rq suspend`) runs before every dequeue; here at most once a
  second, so a suspension takes effect within a second.
- **The job's heartbeat as it ends**: a round trip of its own, right before the outcome
  is written, that keeps the job's `last_heartbeat` fresh while a success or failure
  callback runs. Skipped for jobs without such a callback (this service sets none); the
  outcome's own transaction follows at once and records `ended_at`.
- **Dependents**: before a success is written, RQ WATCHes the job's dependents key and
  reads it (SMEMBERS), two round trips, to enqueue jobs that waited for this one. This
  service enqueues no job with `depends_on`, so the success transaction is written
  without them (a job that did have dependents would leave them deferred).

- **Many jobs, one run** (`jobs_per_txn` > 1): after its blocking dequeue a worker takes
  up to `jobs_per_txn - 1` more jobs of the same function already waiting, through RQ's
  own non-blocking dequeue, and runs them with the function's set runner (for permits,
  one database transaction; worker/jobs.py). RQ's bookkeeping for the set goes in one
  MULTI/EXEC before it (each job's execution, started registry entry and status) and
  one after it (each job's success); each job still has its own execution, result,
  registries, and failure with its own retry. Only jobs without callbacks and webhooks
  are taken into a set.

- **The job's arguments written back on success**: RQ compresses them again to save the
  job hash; `LeanJob` (shared/queue.py) writes back the compressed bytes it read.

What stays untouched: every registry move, the job's status and its heartbeats while it
runs, the success transaction's contents, retries and failures.
`tests/unit/test_rq_pins.py` breaks if an RQ release renames or reorders the methods this
relies on.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

import structlog
from redis.client import Pipeline
from rq import SimpleWorker, worker_registration
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.repeat import Repeat
from rq.timeouts import JobTimeoutException
from rq.utils import now as utc_now
from rq.worker import WorkerStatus

SUSPENSION_CHECK_S = 1.0
# An idle worker asked to stop exits within this even when Redis does not answer.
IDLE_STOP_DEADLINE_S = 5.0
# A refresh is skipped while the key still has this much less than asked, or more.
HEARTBEAT_SLACK_S = 5.0

log = structlog.get_logger(__name__)

# Runs a set of jobs of one function as one: each job's result, in order, or the exception
# that job fails with.
SetRunner = Callable[[Sequence[Job]], Sequence[object]]


class LeanWorker(SimpleWorker):
    def __init__(
        self,
        *args: Any,
        jobs_per_txn: int = 1,
        set_runners: Mapping[str, SetRunner] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.jobs_per_txn = jobs_per_txn
        self._set_runners = dict(set_runners or {})  # by the function name jobs carry
        # The jobs running now with their executions (a set's, or one job's). Replaced,
        # never changed in place: the job heartbeat thread reads it while they run.
        self.running: tuple[tuple[Job, Execution], ...] = ()
        self._key_alive_until = 0.0  # monotonic time the worker key expires, as last set
        self._suspension_checked_at = float("-inf")
        # RQ's registration of the death and a registration again after Redis lost its data
        # (the loss watch's thread) take turns, so a worker RQ let go never comes back.
        self._registration = threading.Lock()
        self._dead = False
        # Set by SIGTERM/SIGINT before RQ's own handling, which may fail on a Redis that is
        # gone: the runner must then stop, not wait for Redis (worker/runner.py).
        self.stop_signalled = False

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        timeout = timeout or self.worker_ttl + 60
        now = time.monotonic()
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
        elif self._key_alive_until - now >= timeout - HEARTBEAT_SLACK_S:
            return  # refreshed a moment ago, for as long
        else:
            with self.connection.pipeline(transaction=False) as own:  # one round trip, not two
                super().heartbeat(timeout, pipeline=own)
                own.execute()
        self._key_alive_until = now + timeout

    def registered(self) -> bool:
        """In RQ's set of workers (Redis loses it with its data)."""
        return bool(self.connection.sismember(self.redis_workers_keys, self.key))

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signalled = True
        # RQ sets this only for a busy worker; an idle one gets StopRequested raised
        # wherever it is, which a broad except there (maintenance) could swallow.
        self._stop_requested = True
        if self.get_state() != WorkerStatus.BUSY:
            # Nothing to finish: RQ's stop needs only Redis (the death, the scheduler),
            # which on a hung server would block for ever. Past the deadline, exit anyway.
            threading.Thread(target=self._exit_when_idle, daemon=True).start()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def _exit_when_idle(self) -> None:
        """End the process IDLE_STOP_DEADLINE_S after a stop, if it is still here and no
        job is running (a job taken before the stop took effect is left to finish)."""
        time.sleep(IDLE_STOP_DEADLINE_S)
        while self.get_state() == WorkerStatus.BUSY:
            time.sleep(0.5)
        log.warning("worker_stop_deadline", action="exiting without Redis's answer")
        scheduler = getattr(self.scheduler, "_process", None)  # RQ's scheduler process
        if scheduler is not None and scheduler.is_alive():
            scheduler.kill()
        sys.stdout.flush()
        os._exit(0)

    def register_death(self) -> None:
        with self._registration:
            self._dead = True
            super().register_death()  # type: ignore[no-untyped-call]

    def register_again_if_lost(self) -> bool:
        """Redis lost its data: put back this worker's key and its entries in RQ's worker
        sets (``rq info``, ``Worker.count``), unless it is registered, not yet born or
        dead. RQ registers a worker only at its start, and refuses a second start under a
        live name. True if it registered again."""
        with self._registration:
            if self._dead or self.birth_date is None or self.registered():
                return False
            timeout = self.worker_ttl + 60
            with self.connection.pipeline() as pipe:
                pipe.delete(self.key)  # a heartbeat since the loss left a key of one field
                pipe.hset(self.key, mapping={**self.serialize(), "state": self.get_state()})
                worker_registration.register(self, pipe)
                pipe.expire(self.key, timeout)
                pipe.execute()
            self._key_alive_until = time.monotonic() + timeout
            return True

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        if pipeline is None and state == self.get_state():
            return  # RQ sets idle after a job and again as the next dequeue starts
        super().set_state(state, pipeline=pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        now = time.monotonic()
        if now - self._suspension_checked_at >= SUSPENSION_CHECK_S:
            self._suspension_checked_at = now
            super().check_for_suspension(burst)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        # The names, not job.success_callback: that imports the callback, and an import
        # error here, outside RQ's try, would skip the job's failure handling.
        if job._success_callback_name is None and job._failure_callback_name is None:
            job.ended_at = utc_now()  # all of RQ's but the heartbeat: no callback to cover
            return
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry
    ) -> None:
        """RQ's, less the WATCH and SMEMBERS of the job's dependents and the retry loop the
        WATCH needs; with the worker's idle state and heartbeat in the same MULTI/EXEC."""
        self._write_successes([(job, self.execution)], queue)

    def _write_successes(
        self, succeeded: Sequence[tuple[Job, Execution | None]], queue: Queue
    ) -> None:
        """Each job's success as RQ writes it, all in one MULTI/EXEC, with the worker's own
        fields once for them all: RQ's counts (which RQ adds job by job), no current job,
        the idle state and the heartbeat. execute_job has no round trip of its own left."""
        with self.connection.pipeline() as pipeline:
            pipeline.multi()
            # The jobs of a set ran at once: the worker worked the longest one's time.
            working_s = max(
                self._record_success(job, queue, execution, pipeline)
                for job, execution in succeeded
            )
            pipeline.hincrby(self.key, "successful_job_count", len(succeeded))
            pipeline.hincrbyfloat(self.key, "total_working_time", working_s)
            self.set_current_job_id(None, pipeline=pipeline)
            self.execution = None
            # RQ's set_state, but the worker reads as busy until the transaction is sent:
            # a stop signalled meanwhile waits for it rather than cutting it off.
            pipeline.hset(self.key, "state", WorkerStatus.IDLE)
            self.heartbeat(pipeline=pipeline)
            pipeline.execute()
        self._state = WorkerStatus.IDLE

    def _record_success(
        self, job: Job, queue: Queue, execution: Execution | None, pipeline: Pipeline
    ) -> float:
        """The body of RQ's success transaction for one job, less the worker's own fields:
        result, repeat or clean-up, registries, the execution's removal. Returns the job's
        working seconds. RQ's "Successfully completed" line is not made: shared/logging
        drops it anyway."""
        started_at, ended_at = job.started_at, job.ended_at
        if started_at is None or ended_at is None:  # RQ sets both before it calls this
            raise RuntimeError(f"job {job.id} succeeded without its start and end times")
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        if result_ttl != 0:
            job._handle_success(
                result_ttl,
                pipeline=pipeline,
                worker_name=self.name,
                execution_id=execution.id if execution else None,
                execution_started_at=execution.created_at if execution else None,
                execution_ended_at=ended_at,
            )
        if job.repeats_left is not None and job.repeats_left > 0:
            Repeat.schedule(job, queue, pipeline=pipeline)
        else:
            job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
        if execution is not None:  # RQ's cleanup_execution, but the worker's current job
            execution.delete(job=job, pipeline=pipeline)
        return (ended_at - started_at).total_seconds()

    def execute_job(self, job: Job, queue: Queue) -> None:
        """SimpleWorker.execute_job, for ``job`` and, when it has a set runner, the jobs of
        its function already waiting behind it (up to jobs_per_txn in all). A job with a
        set runner goes the set's way even when none waits behind it: its preparation is
        one MULTI/EXEC there, not RQ's two."""
        runner = self._set_runner(job)
        if runner is None:
            self._execute_one(job, queue)
            return
        # Busy from here: a stop signalled while the set is taken waits for the set to end
        # (RQ raises StopRequested into an idle worker, stranding what it took).
        self._state = WorkerStatus.BUSY
        self._execute_set(self._take_waiting(job, queue, runner), queue, runner)

    def _set_runner(self, job: Job) -> SetRunner | None:
        if self.jobs_per_txn <= 1 or job.webhooks:
            return None
        if job._success_callback_name is not None or job._failure_callback_name is not None:
            return None
        try:
            func_name = job.func_name
        except Exception:  # unreadable: RQ's own path fails it, as it would any job
            return None
        return self._set_runners.get(func_name or "")

    def _take_waiting(self, job: Job, queue: Queue, runner: SetRunner) -> list[Job]:
        """``job`` and the jobs for the same runner waiting behind it, up to jobs_per_txn in
        all, never waiting for more. A job of another kind met is put back at the head of
        the queue, where the next dequeue takes it."""
        jobs = [job]
        while len(jobs) < self.jobs_per_txn:
            found = self.queue_class.dequeue_any(
                [queue],
                None,  # no wait: an empty queue answers at once
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
                death_penalty_class=self.death_penalty_class,
            )
            if found is None:
                break
            waiting = found[0]
            if self._set_runner(waiting) is not runner:
                # Held here it would sit unregistered while the set runs, and maintenance
                # would take it for stuck and run it again.
                with self.connection.pipeline() as pipeline:
                    pipeline.lrem(queue.intermediate_queue_key, 1, waiting.id)
                    pipeline.lpush(queue.key, waiting.id)
                    pipeline.execute()
                break
            jobs.append(waiting)
        return jobs

    def _execute_one(self, job: Job, queue: Queue) -> None:
        """SimpleWorker.execute_job, with its idle state and the loop's heartbeat in one trip
        (in the success's own transaction when the job succeeded)."""
        execution = self.prepare_execution(job)  # busy
        self.running = ((job, execution),)
        try:
            self.perform_job(job, queue)
        finally:
            self.running = ()
        self._idle_unless_written()

    def _execute_set(self, jobs: list[Job], queue: Queue, runner: SetRunner) -> None:
        """RQ's perform_job for a set of jobs run as one by ``runner``."""
        self.running = tuple(zip(jobs, self._prepare_set(jobs, queue), strict=True))
        try:
            timeout = max(job.timeout or self.queue_class.DEFAULT_TIMEOUT for job in jobs)
            try:
                with self.death_penalty_class(timeout, JobTimeoutException, job_id=jobs[0].id):
                    outcomes = list(runner(jobs))
                if len(outcomes) != len(jobs):
                    raise RuntimeError(f"{len(outcomes)} outcomes for a set of {len(jobs)} jobs")
            except Exception as exc:  # the set's time ran out, or the runner failed
                outcomes = [exc] * len(jobs)
            ended_at = utc_now()
            succeeded = []
            for (job, execution), outcome in zip(self.running, outcomes, strict=True):
                job.ended_at = ended_at
                if isinstance(outcome, BaseException):
                    self._fail(job, execution, queue, outcome)
                else:
                    job._result = outcome
                    job._status = JobStatus.FINISHED
                    succeeded.append((job, execution))
            if succeeded:
                self._write_successes(succeeded, queue)
        finally:
            self.running = ()
            self.execution = None
        self._idle_unless_written()

    def _prepare_set(self, jobs: list[Job], queue: Queue) -> list[Execution]:
        """RQ's prepare_execution and prepare_job_execution for every job of a set, in one
        MULTI/EXEC: the worker's own fields once, each job's execution, status (with its
        heartbeat) and removal from the intermediate list."""
        executions = []
        with self.connection.pipeline() as pipeline:
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            self.set_current_job_id(jobs[0].id, pipeline=pipeline)
            self.set_current_job_working_time(0, pipeline=pipeline)
            ttls = [self.get_heartbeat_ttl(job) for job in jobs]
            self.heartbeat(max(ttls), pipeline=pipeline)
            for job, ttl in zip(jobs, ttls, strict=True):
                executions.append(Execution.create(job, ttl, pipeline, worker_name=self.name))
                # RQ's job.heartbeat here is an HSET of last_heartbeat, which this writes too.
                job.prepare_for_execution(self.name, pipeline=pipeline)
                # As Job.perform does first: the job's key must not expire while it runs.
                pipeline.persist(job.key)
                # Out of RQ's intermediate list, where its LMOVE put it (a no-op for a job
                # RQ took with LPOP: a worker of several queues, or Redis before 6.2).
                pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.execute()
        self.procline(  # type: ignore[no-untyped-call]
            f"Processing {len(jobs)} jobs of {jobs[0].func_name} from {queue.name}"
        )
        return executions

    def _fail(self, job: Job, execution: Execution, queue: Queue, exc: BaseException) -> None:
        """RQ's failure path for one job of a set: its exception handlers, then its failed
        registry or its own retry."""
        job._status = JobStatus.FAILED
        self.execution = execution  # RQ's failure handling reads and clears it
        self.handle_exception(job, type(exc), exc, exc.__traceback__)
        self.handle_job_failure(
            job=job,
            queue=queue,
            started_job_registry=queue.started_job_registry,
            exc_string="".join(traceback.format_exception(exc)),
        )

    def _idle_unless_written(self) -> None:
        if self.get_state() == WorkerStatus.IDLE:
            return  # a success: its transaction wrote the idle state and the heartbeat
        with self.connection.pipeline(transaction=False) as pipe:
            self.set_state(WorkerStatus.IDLE, pipeline=pipe)
            self.heartbeat(pipeline=pipe)
            pipe.execute()
