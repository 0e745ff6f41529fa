"""Resends after a crash, backpressure, durable acknowledgement, recovery settings, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import fakeredis
import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue

from ingest.app import create_app
from ingest.durability import AofSupport, resolve_wait_aof
from ingest.queue import JOB_RETRY, JobWriter
from ingest.routes import BATCH_PATH, PUSH_PATH
from shared.config import Settings
from shared.errors import ConfigError
from tests.factories import make_payload, permits_queue, queued_permits

REPO = Path(__file__).resolve().parents[2]


async def test_resend_after_a_crash_between_claim_and_enqueue_is_stored(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    # The first send claims its reference id, then "crashes" before the enqueue.
    with mock.patch.object(Queue, "enqueue_job", side_effect=RedisConnectionError("crash")):
        first = await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    assert first.status == 503
    assert permits_queue(redis).count == 0
    (claimed,) = [redis.get(key) for key in redis.scan_iter("ingest:dedup:*")]
    resend = await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    assert resend.status == 200
    assert (await resend.json())["reference_id"] == claimed.decode()
    assert [p["reference_id"] for p in queued_permits(redis)] == [claimed.decode()]


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


def test_waitaof_runs_after_each_batch_when_enabled(settings: Settings) -> None:
    redis = mock.MagicMock(spec=Redis)
    redis.execute_command.return_value = [1, 0]
    writer = JobWriter(redis, settings)
    writer.wait_aof = True
    writer._wait_for_fsync()
    redis.execute_command.assert_called_once_with("WAITAOF", 1, 0, 1000)
    redis.execute_command.return_value = [0, 0]  # not fsynced in time: refuse the batch
    with pytest.raises(Exception, match="fsync"):
        writer._wait_for_fsync()


@pytest.mark.parametrize(
    ("mode", "support", "expected"),
    [
        ("off", None, False),
        ("auto", AofSupport("7.2.4", True, True, "everysec"), True),
        ("auto", AofSupport("7.0.15", False, True, "always"), False),
        ("waitaof", AofSupport("7.2.4", True, True, "everysec"), True),
        ("waitaof", AofSupport("7.0.15", False, True, "everysec"), ConfigError),
        ("waitaof", AofSupport("7.2.4", True, False, "everysec"), ConfigError),
    ],
)
def test_durable_ack_setting(
    settings: Settings, mode: str, support: AofSupport | None, expected: object
) -> None:
    chosen = dataclasses.replace(settings, durable_ack=mode)
    with mock.patch("ingest.durability.probe", return_value=support) as probe:
        if expected is ConfigError:
            with pytest.raises(ConfigError, match="appendfsync always"):
                resolve_wait_aof(chosen, mock.MagicMock())
        else:
            assert resolve_wait_aof(chosen, mock.MagicMock()) is expected
    assert probe.called == (mode != "off")


def test_bad_durable_ack_value_fails_at_startup() -> None:
    with pytest.raises(ConfigError, match="DURABLE_ACK"):
        Settings.from_env({"DURABLE_ACK": "yes"})


def test_default_settings_rerun_a_killed_workers_batch_within_two_minutes() -> None:
    # recovery.py: the entry expires ABANDONED_JOB_S after the last heartbeat; an idle
    # worker wakes every MAINTENANCE_INTERVAL_S and runs maintenance once that is due;
    # JOB_RETRY's first interval is 0, so the re-run does not wait for the scheduler.
    defaults = Settings()
    assert JOB_RETRY.intervals[0] == 0
    bound_s = defaults.abandoned_job_s + 2 * defaults.maintenance_interval_s
    assert bound_s <= 60


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
