"""What permit-push relies on in RQ: its job format, serializer protocol and worker internals.

An RQ upgrade that changes any of these breaks a test here, before it breaks the queue:
jobs are written with ``shared.queue.OrjsonSerializer`` and must stay readable by RQ's own
JSONSerializer (and the reverse: jobs queued before the switch, ``rq`` tools); the worker
methods ``worker.lean_worker.LeanWorker`` overrides keep their shape; RQ still logs the
per-job lines ``shared.logging`` drops.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import textwrap
import zlib
from collections.abc import Callable

import fakeredis
import pytest
import rq
from rq import Callback, Queue, SimpleWorker, executions
from rq.job import Job
from rq.serializers import JSONSerializer, resolve_serializer
from rq.worker import BaseWorker

from shared.config import Settings
from shared.durability import NO_WAIT
from shared.logging import RQ_PER_JOB_LINES
from shared.queue import JOB_SERIALIZER, JobWriter, OrjsonSerializer
from tests.factories import make_permit_job
from worker.lean_worker import LeanWorker


def test_rq_is_the_major_version_these_pins_were_written_for() -> None:
    assert rq.VERSION.split(".")[0] == "2", rq.VERSION


def test_rq_accepts_the_orjson_serializer_as_is() -> None:
    assert resolve_serializer(JOB_SERIALIZER) is OrjsonSerializer


def test_a_job_is_its_call_as_json_under_zlib_in_the_data_field() -> None:
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    permit = make_permit_job(7)
    job_id = JobWriter(redis, Settings(), ack=NO_WAIT).write(
        "worker.jobs.persist_permits", {"permits": [permit]}, "persist_permits(1 permits)", {}
    )
    raw = redis.hget(f"rq:job:{job_id}", "data")
    assert isinstance(raw, bytes)
    # RQ stores (function name, instance, args, kwargs) serialized, then zlib-compressed.
    call = json.loads(zlib.decompress(raw))
    assert call == ["worker.jobs.persist_permits", None, [], {"permits": [permit]}]
    # RQ's own JSONSerializer reads it back.
    assert Job.fetch(job_id, connection=redis, serializer=JSONSerializer).kwargs == {
        "permits": [permit]
    }


def test_a_simple_worker_runs_a_job_either_serializer_wrote() -> None:
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    ours = Queue("pins", connection=redis, serializer=JOB_SERIALIZER)
    theirs = Queue("pins", connection=redis, serializer=JSONSerializer)
    jobs = [ours.enqueue(len, [1, 2, 3]), theirs.enqueue(len, [1, 2])]
    SimpleWorker([ours], connection=redis, serializer=JOB_SERIALIZER).work(burst=True)
    assert [job.latest_result().return_value for job in jobs] == [3, 2]  # type: ignore[union-attr]


# What worker/lean_worker.py overrides, and shared/logging.py filters.


def test_the_simple_worker_runs_a_job_as_the_lean_worker_repeats_it() -> None:
    """LeanWorker.execute_job is SimpleWorker's with its last step pipelined."""
    body = ast.parse(textwrap.dedent(inspect.getsource(SimpleWorker.execute_job))).body[0]
    assert isinstance(body, ast.FunctionDef)
    calls = [
        node.func.attr
        for node in ast.walk(body)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]
    assert calls == ["prepare_execution", "perform_job", "set_state"]


def test_rq_ends_a_job_execution_with_its_end_time_and_a_heartbeat_only() -> None:
    """LeanWorker.handle_execution_ended keeps the first and skips the second."""
    body = ast.parse(textwrap.dedent(inspect.getsource(BaseWorker.handle_execution_ended)))
    statements = [
        node
        for node in body.body[0].body  # type: ignore[attr-defined]
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))  # docstring
    ]
    assert [ast.unparse(node) for node in statements] == [
        "job.ended_at = now()",
        "job.heartbeat(now(), heartbeat_ttl)",
    ]


def test_a_job_hash_holds_its_arguments_compressed_in_the_data_field() -> None:
    """LeanJob writes its own compressed bytes (level 1 once, or as read) in place of RQ's
    compressing the arguments at each save (RQ's data property returns _data as is once
    it is set)."""
    assert "'data': zlib.compress(self.data)" in inspect.getsource(Job.to_dict)
    assert "self.data = zlib.decompress(raw_data)" in inspect.getsource(Job.restore)
    assert "if self._data is UNEVALUATED:" in inspect.getsource(Job.data.fget)


def test_a_job_names_its_callbacks_in_these_attributes() -> None:
    """LeanWorker.handle_execution_ended reads them to see whether a job has callbacks."""
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    queue = Queue("pins", connection=redis, serializer=JOB_SERIALIZER)
    plain = Job.fetch(queue.enqueue(len, [1]).id, connection=redis, serializer=JOB_SERIALIZER)
    called = Job.fetch(
        queue.enqueue(len, [1], on_success=Callback(len), on_failure=Callback(len)).id,
        connection=redis,
        serializer=JOB_SERIALIZER,
    )
    assert (plain._success_callback_name, plain._failure_callback_name) == (None, None)
    assert called._success_callback_name and called._failure_callback_name


def test_rq_marks_a_stop_requested_mid_job_in_this_attribute() -> None:
    """HeartbeatWorker.run_maintenance_tasks reads it; RQ's loop runs maintenance first."""
    assert "self._stop_requested = True" in inspect.getsource(BaseWorker._shutdown)
    loop = inspect.getsource(BaseWorker.work)
    assert loop.index("self.run_maintenance_tasks()") < loop.index("if self._stop_requested:")


def _calls_in_order(method: Callable[..., object]) -> list[str]:
    """The methods ``method`` calls, in source order, its log lines left out."""
    body = ast.parse(textwrap.dedent(inspect.getsource(method))).body[0]
    calls = [
        node
        for node in ast.walk(body)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]
    calls.sort(key=lambda node: (node.lineno, node.col_offset))
    names = [node.func.attr for node in calls]  # type: ignore[attr-defined]
    return [name for name in names if name not in ("debug", "info")]


def test_the_lean_worker_writes_a_success_as_rq_does_but_for_the_dependents() -> None:
    """LeanWorker writes each job's success with RQ's steps less the WATCH and SMEMBERS of
    dependents, several jobs' in one MULTI/EXEC, with the worker's own fields (counts,
    current job, idle state) once for them all: any other step RQ adds or drops must be
    looked at there."""
    dependents = ("watch", "enqueue_dependents")
    worker_counts = ("increment_successful_job_count", "increment_total_working_time")
    rq_steps = _calls_in_order(BaseWorker.handle_job_success)
    assert set(dependents) <= set(rq_steps)
    ours = [step for step in rq_steps if step not in dependents + worker_counts]
    # RQ's transaction around one job's steps; ours goes around the set's. RQ's clean-up
    # of the execution is the execution's delete and the worker's current job (once here).
    assert ours[:2] == ["pipeline", "multi"] and ours[-2:] == ["cleanup_execution", "execute"]
    assert _calls_in_order(executions.cleanup_execution) == ["set_current_job_id", "delete"]
    assert _calls_in_order(LeanWorker._record_success) == [*ours[2:-2], "delete", "total_seconds"]
    assert _calls_in_order(LeanWorker._write_successes) == [
        "pipeline",
        "multi",
        "_record_success",
        "hincrby",
        "hincrbyfloat",
        "set_current_job_id",
        "hset",
        "heartbeat",
        "execute",
    ]
    # The idle state written as RQ's set_state writes it (the worker's own _state after).
    source = inspect.getsource(BaseWorker.set_state)
    assert "self._state = state" in source and "hset(self.key, 'state', state)" in source
    # The counts RQ adds one job at a time, added once for the set under the same fields.
    source = inspect.getsource(BaseWorker.increment_successful_job_count)
    assert "hincrby(self.key, 'successful_job_count', 1)" in source
    source = inspect.getsource(BaseWorker.increment_total_working_time)
    assert (
        "hincrbyfloat(self.key, 'total_working_time', job_execution_time.total_seconds())" in source
    )


def test_the_lean_worker_prepares_a_set_of_jobs_with_rqs_steps() -> None:
    """LeanWorker._prepare_set does what RQ's prepare_execution and prepare_job_execution
    do for one job, for each job of a set in one MULTI/EXEC (the worker's own fields once)."""
    skip = {"pipeline", "execute", "procline", "format", "time"}
    rq_steps = _calls_in_order(executions.prepare_execution) + _calls_in_order(
        BaseWorker.prepare_job_execution
    )
    ours = _calls_in_order(LeanWorker._prepare_set)
    # Execution.create is what prepare_execution calls; heartbeat is the worker's (the job's
    # is an HSET of the last_heartbeat that prepare_for_execution writes too); persist is
    # Job.perform's (below).
    assert {step for step in rq_steps if step not in skip} == {
        step for step in ours if step not in skip
    } - {"append", "persist"}
    assert "'last_heartbeat': utcformat(self.last_heartbeat)" in inspect.getsource(
        Job.prepare_for_execution
    )
    # A set's jobs are not run by Job.perform, whose one Redis step ours takes over.
    perform = inspect.getsource(Job.perform)
    assert perform.count("self.connection.") == 1 and "self.connection.persist(self.key)" in perform
    assert "persist" in _calls_in_order(LeanWorker._prepare_set)
    # Each job of a set has its own execution, which RQ's failure path and clean-up read
    # from the worker: LeanWorker sets worker.execution to the job's before calling them.
    assert "self.execution.id" in inspect.getsource(BaseWorker.handle_job_failure)
    assert "worker.execution.delete(job=job" in inspect.getsource(executions.cleanup_execution)


@pytest.mark.parametrize(
    ("method", "parameters"),
    [
        (BaseWorker.run_maintenance_tasks, ["self"]),
        (BaseWorker.handle_execution_ended, ["self", "job", "queue", "heartbeat_ttl"]),
        (BaseWorker.heartbeat, ["self", "timeout", "pipeline"]),
        (BaseWorker.set_state, ["self", "state", "pipeline"]),
        (BaseWorker.check_for_suspension, ["self", "burst"]),
        (BaseWorker.get_state, ["self"]),
        (BaseWorker.handle_job_success, ["self", "job", "queue", "started_job_registry"]),
        (BaseWorker.prepare_job_execution, ["self", "job", "remove_from_intermediate_queue"]),
        (
            BaseWorker.handle_job_failure,
            ["self", "job", "queue", "started_job_registry", "exc_string"],
        ),
        (BaseWorker.handle_exception, ["self", "job", "exc_info"]),
    ],
)
def test_the_worker_methods_the_lean_worker_overrides(
    method: Callable[..., object], parameters: list[str]
) -> None:
    assert list(inspect.signature(method).parameters) == parameters


def test_rq_logs_these_lines_for_each_successful_job(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("rq.worker"), "filters", [])  # see them all
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    queue = Queue("pins", connection=redis, serializer=JOB_SERIALIZER)
    queue.enqueue(len, [1])
    worker = SimpleWorker(
        [queue], connection=redis, serializer=JOB_SERIALIZER, log_job_description=False
    )  # as worker/runner.py makes it
    with caplog.at_level(logging.INFO, logger="rq.worker"):
        worker.work(burst=True)
    templates = {record.msg for record in caplog.records if record.name == "rq.worker"}
    assert templates >= RQ_PER_JOB_LINES, RQ_PER_JOB_LINES - templates
