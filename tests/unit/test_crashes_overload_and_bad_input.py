"""Resends after a crash, backpressure, a killed worker, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from uuid import UUID

import fakeredis
import orjson
import pytest
import rq.utils
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue
from rq.exceptions import DequeueTimeout
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from ingest.routes import BATCH_PATH, PUSH_PATH
from shared.clients import create_client
from shared.config import Settings
from shared.constants import PERSIST_PERMITS_JOB
from shared.durability import NO_WAIT
from shared.models import ApiClient, Permit
from shared.queue import JOB_RETRY, JobWriter
from tests.factories import make_payload, make_permit_job, permits_queue, queued_permits
from worker import runner
from worker.recovery import HeartbeatWorker

REPO = Path(__file__).resolve().parents[2]


async def test_resend_after_a_crash_between_claim_and_enqueue_is_stored(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    # The first send claims its reference id, then "crashes" before the enqueue.
    with mock.patch.object(Queue, "enqueue_job", side_effect=RedisConnectionError("crash")):
        first = await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    assert first.status == 503
    assert permits_queue(redis).count == 0
    (claimed,) = [
        str(UUID(bytes=value))
        for key in redis.scan_iter("ingest:seen:*")
        for value in redis.hvals(key)
    ]
    resend = await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    assert resend.status == 200
    assert (await resend.json())["reference_id"] == claimed
    assert [p["reference_id"] for p in queued_permits(redis)] == [claimed]


async def test_queue_over_its_depth_is_503_with_retry_after(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    app = create_app(dataclasses.replace(settings, max_queue_depth=2), redis=redis)
    client: TestClient = await aiohttp_client(app)
    for number in ("1", "2"):
        response = await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo=number))
        assert response.status == 200
    refused = await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo="3"))
    assert refused.status == 503
    assert refused.headers["Retry-After"] == str(settings.retry_after_s)
    assert (await refused.json())["ErrorCode"] == 9901
    assert permits_queue(redis).count == 2
    batch = await client.post(BATCH_PATH, json=[make_payload(apiToken=token, permitNo="4")])
    assert batch.status == 503  # never a 200 whose items look stored
    assert (await batch.json())["ErrorCode"] == 9901
    permits_queue(redis).empty()  # the workers caught up
    again = await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo="3"))
    assert again.status == 200


class RqClock:
    """Time as RQ sees it (``rq.utils.now``), moved by hand instead of waited for.

    Installed, it stands in for ``now`` in every module of rq and worker that imported
    it, and for the one wait of an idle worker: a BLMOVE on empty queues returns after
    its timeout, so that much time passes. Registry scores, heartbeats, maintenance
    times and job timestamps all follow it; nothing sleeps.
    """

    def __init__(self) -> None:
        self.at = datetime.fromtimestamp(int(time.time()), UTC)  # RQ scores whole seconds

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        real_now = rq.utils.now
        real_dequeue_any = Queue.dequeue_any.__func__

        def dequeue_any(
            cls: type[Queue], queues: list[Queue], timeout: int | None, **kw: Any
        ) -> Any:
            if timeout is not None and not any(queue.count for queue in queues):
                self.advance(timeout)
                raise DequeueTimeout(timeout, queues)
            return real_dequeue_any(cls, queues, timeout, **kw)

        with contextlib.ExitStack() as stack:
            for name, module in list(sys.modules.items()):
                if name.partition(".")[0] in ("rq", "worker") and (
                    getattr(module, "now", None) is real_now
                ):
                    stack.enter_context(mock.patch.object(module, "now", self.now))
            stack.enter_context(mock.patch.object(Queue, "dequeue_any", classmethod(dequeue_any)))
            yield


def runner_worker_arguments(settings: Settings, redis: Redis) -> Any:
    """The arguments worker.runner.run_worker builds its RQ worker with (its loop not run)."""
    with (
        mock.patch("worker.runner.make_worker_redis", return_value=redis),
        mock.patch("worker.runner.HeartbeatWorker") as build,
    ):
        build.return_value.work.return_value = True
        runner.run_worker(settings)
    return build.call_args


# Where the idle worker's maintenance timer stands when the other worker is killed: an
# idle worker checks every MAINTENANCE_INTERVAL_S (its BLMOVE timeout) and runs maintenance
# once more than that has passed, so at worst every second check (RQ's ">", and the BLMOVE
# here takes its timeout exactly): 0 to 20 s covers every phase.
@pytest.mark.parametrize("idle_worker_phase_s", [0.0, 4.5, 9.5, 10.0, 19.5])
def test_a_killed_workers_batch_is_rerun_within_50_s_with_the_default_settings(
    settings: Settings,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    idle_worker_phase_s: float,
) -> None:
    # docs/reliability.md: a worker SIGKILLed mid-batch has its batch re-run within
    # ABANDONED_JOB_S + 2 x MAINTENANCE_INTERVAL_S, "50 s by default".
    defaults = Settings()
    assert (settings.abandoned_job_s, settings.maintenance_interval_s) == (
        defaults.abandoned_job_s,
        defaults.maintenance_interval_s,
    )
    with sessions.begin() as session:
        create_client(session, "meters")
        client_id = session.scalars(select(ApiClient.id)).one()
    permit = make_permit_job(client_id)
    # The batch as the receiver enqueues it (its retry policy, timeout and TTLs).
    JobWriter(redis, settings, ack=NO_WAIT).write(
        PERSIST_PERMITS_JOB, {"permits": [permit]}, "1 permit", {}
    )
    args, kwargs = runner_worker_arguments(settings, redis)
    clock = RqClock()
    with clock.installed():
        # Worker A takes the batch and is killed: it does what SimpleWorker.execute_job and
        # perform_job do before calling the job, then nothing (no heartbeat, no write).
        killed = HeartbeatWorker(*args, **kwargs)
        taken = killed.dequeue_job_and_maintain_ttl(None)
        assert taken is not None
        job, _queue = taken
        killed.prepare_execution(job)
        killed.prepare_job_execution(job, remove_from_intermediate_queue=True)
        killed_job = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
        assert killed_job.last_heartbeat == clock.now()
        # Worker B, built as run_worker builds it, idles on the queue. RQ's scheduler is
        # not started (run_worker starts it): JOB_RETRY's first interval is 0, so the
        # re-run goes straight back on the queue; a scheduled retry would never run here.
        clock.advance(idle_worker_phase_s)
        survivor = HeartbeatWorker(*args, **kwargs)
        worked = survivor.work(max_jobs=1, max_idle_time=600)
    assert worked, "no worker re-ran the killed worker's batch within 600 s"
    job.refresh()
    assert job.get_status() == "finished"
    assert job.retries_left == JOB_RETRY.max - 1  # re-run as an abandoned job, once
    assert job.started_at is not None and killed_job.last_heartbeat is not None
    rerun_after_s = (job.started_at - killed_job.last_heartbeat).total_seconds()
    # Not before the heartbeat expired (a live worker's batch is not run twice), and in time.
    assert settings.abandoned_job_s <= rerun_after_s <= 50
    with sessions() as session:
        assert session.scalars(select(Permit.reference_id)).all() == [permit["reference_id"]]


def test_sql_is_only_built_from_bound_parameters() -> None:
    # No f-string, %-format or concatenation inside text(...) / execute(...) in the code.
    pattern = re.compile(r"(text|execute|exec_driver_sql)\(\s*(f[\"']|[\"'][^\"']*[\"']\s*(%|\+))")
    # Whole files, not lines: a call whose argument starts on the next line counts too.
    offenders = [
        f"{path.relative_to(REPO)}:{source.count(chr(10), 0, match.start()) + 1}"
        for package in ("ingest", "worker", "shared", "cli")
        for path in (REPO / package).rglob("*.py")
        for source in [path.read_text()]
        for match in pattern.finditer(source)
    ]
    assert offenders == []


# --- Bad input: no body, header or method yields a 5xx, a traceback or a non-JSON body.

_names = st.sampled_from(
    ["apiToken", "Amount", "amount", "CurrencyID", "currency", "startTime", "StartDateUtc",
     "endTime", "EndDateUtc", "LicencePlate", "plate", "permitNo", "TicketNumber", "zone",
     "ParkingZoneName", "x"]
)  # fmt: skip
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
_bodies = st.one_of(
    st.binary(max_size=300),
    st.just(b'{"apiToken": 123456789012345678901234567890, "Amount": 1e999}'),
    st.dictionaries(_names, _json, max_size=8).map(lambda d: orjson.dumps(d)),
    _json.map(lambda v: orjson.dumps(v)),
)
_headers = st.dictionaries(
    st.sampled_from(
        ["Content-Type", "Idempotency-Key", "X-Request-ID", "Accept", "Content-Encoding"]
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    max_size=4,
)


@hypothesis_settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    path=st.sampled_from([PUSH_PATH, PUSH_PATH + "/", "/", "/api/OC-TOMA/v1/permits/x"]),
    body=_bodies,
    headers=_headers,
)
def test_no_input_yields_a_5xx_or_a_non_json_body(
    settings: Settings, token: str, redis: fakeredis.FakeRedis, method: str, path: str,
    body: bytes, headers: dict[str, str],
) -> None:  # fmt: skip
    async def send() -> tuple[int, str, bytes]:
        from aiohttp.test_utils import TestServer

        server = TestServer(create_app(settings, redis=redis))
        async with TestClient(server) as http:
            reply = await http.request(method, path, data=body, headers=headers)
            return reply.status, reply.content_type, await reply.read()

    status, content_type, raw = asyncio.run(send())
    assert status < 500, raw
    if method != "HEAD":
        assert content_type == "application/json", raw
        assert b"Traceback" not in raw
