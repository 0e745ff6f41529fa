"""What permit-push relies on in RQ's job format and serializer protocol.

An RQ upgrade that changes any of these breaks a test here, before it breaks the queue:
jobs are written with ``shared.queue.OrjsonSerializer`` and must stay readable by RQ's own
JSONSerializer (and the reverse: jobs queued before the switch, ``rq`` tools).
"""

from __future__ import annotations

import json
import zlib

import fakeredis
import rq
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer, resolve_serializer

from shared.config import Settings
from shared.queue import JOB_SERIALIZER, JobWriter, OrjsonSerializer
from tests.factories import make_permit_job


def test_rq_is_the_major_version_these_pins_were_written_for() -> None:
    assert rq.VERSION.split(".")[0] == "2", rq.VERSION


def test_rq_accepts_the_orjson_serializer_as_is() -> None:
    assert resolve_serializer(JOB_SERIALIZER) is OrjsonSerializer


def test_a_job_is_its_call_as_json_under_zlib_in_the_data_field() -> None:
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    permit = make_permit_job(7)
    job_id = JobWriter(redis, Settings(), wait_aof=False).write(
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
