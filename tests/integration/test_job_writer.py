"""`JobWriter.write` on real Redis: the job and the owners of its reference ids, together;
with DURABLE_ACK=replica, acknowledged only once a replica (a real redis-server) holds them."""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest
from aiohttp.test_utils import TestClient
from redis import Redis
from rq.job import Job

from harness.services import RedisServer, primary_with_replica
from ingest.app import create_app
from ingest.routes import PUSH_PATH
from shared.config import Settings
from shared.constants import PERSIST_PERMITS_JOB, REFERENCE_KEY_PREFIX, REFERENCE_TTL_S
from shared.durability import NO_WAIT, DurableAck
from shared.errors import QueueUnavailableError
from shared.queue import JOB_DATA_ZLIB_LEVEL, JOB_SERIALIZER, JobWriter
from tests.factories import make_payload


def _writer(redis_url: str, redis: Redis) -> JobWriter:
    return JobWriter(redis, Settings(redis_url=redis_url), ack=NO_WAIT)


def test_the_owner_of_each_reference_id_is_written_with_the_job(
    redis_url: str, real_redis: Redis
) -> None:
    owners = {str(uuid4()): client_id for client_id in (3, 3, 8)}
    writer = _writer(redis_url, real_redis)
    job_id = writer.write(PERSIST_PERMITS_JOB, {"permits": []}, "persist_permits(3)", owners)
    assert writer.queue.job_ids == [job_id]
    for reference_id, client_id in owners.items():
        key = REFERENCE_KEY_PREFIX + reference_id
        assert real_redis.get(key) == str(client_id).encode()
        assert REFERENCE_TTL_S - 5 <= real_redis.ttl(key) <= REFERENCE_TTL_S


def test_owners_are_written_after_redis_lost_its_script_cache(
    redis_url: str, real_redis: Redis
) -> None:
    writer = _writer(redis_url, real_redis)
    writer.write(PERSIST_PERMITS_JOB, {"permits": []}, "persist_permits(1)", {str(uuid4()): 1})
    real_redis.script_flush()  # as after a restart: the script is sent whole, not by its SHA
    reference_id = str(uuid4())
    writer.write(PERSIST_PERMITS_JOB, {"permits": []}, "persist_permits(1)", {reference_id: 5})
    assert real_redis.get(REFERENCE_KEY_PREFIX + reference_id) == b"5"
    assert writer.queue.count == 2


def test_a_job_without_reference_ids_writes_no_owner(redis_url: str, real_redis: Redis) -> None:
    _writer(redis_url, real_redis).write(
        PERSIST_PERMITS_JOB, {"permits": []}, "persist_permits(0)", {}
    )
    assert real_redis.keys(REFERENCE_KEY_PREFIX + "*") == []


@pytest.fixture(scope="module")
def primary_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A private primary with one replica (real redis-server processes, loopback)."""
    with primary_with_replica() as servers:
        yield servers


def test_a_job_is_written_compressed_once_at_level_1_and_reads_back_whole(
    redis_url: str, real_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    compressed: list[int] = []  # zlib levels of the compressions the write made
    compress = zlib.compress

    def counting(data: bytes, /, level: int = -1) -> bytes:
        compressed.append(level)
        return compress(data, level)

    monkeypatch.setattr(zlib, "compress", counting)
    permits = [{"reference_id": str(uuid4()), "plate": f"PL8{i}"} for i in range(16)]
    writer = _writer(redis_url, real_redis)
    job_id = writer.write(PERSIST_PERMITS_JOB, {"permits": permits}, "persist_permits(16)", {})
    data = real_redis.hget(f"rq:job:{job_id}", "data")
    assert isinstance(data, bytes) and data[:2] == b"\x78\x01"  # zlib's header for level 1
    assert compressed.count(JOB_DATA_ZLIB_LEVEL) == 1  # the arguments; the rest is empty
    assert all(level == -1 for level in compressed if level != JOB_DATA_ZLIB_LEVEL)
    job = Job.fetch(job_id, connection=real_redis, serializer=JOB_SERIALIZER)  # RQ's own
    assert (job.func_name, job.kwargs) == (PERSIST_PERMITS_JOB, {"permits": permits})


def _acked_writer(redis: Redis, replicas: int = 1, timeout_ms: int = 1000) -> JobWriter:
    return JobWriter(redis, Settings(), ack=DurableAck(replicas=replicas, timeout_ms=timeout_ms))


def test_a_batch_is_acknowledged_once_a_replica_holds_it(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = primary_and_replica
    writer = _acked_writer(primary.client())
    on_replica = replica.client()
    for _ in range(20):
        reference_id = str(uuid4())
        job_id = writer.write(PERSIST_PERMITS_JOB, {"permits": []}, "p(1)", {reference_id: 1})
        # Already there when write returns, the job and its owner alike: WAIT went on the
        # connection that wrote them.
        assert on_replica.exists(f"rq:job:{job_id}", REFERENCE_KEY_PREFIX + reference_id) == 2


def test_a_batch_no_replica_acknowledged_in_time_is_refused(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = primary_and_replica
    writer = _acked_writer(primary.client(), timeout_ms=150)
    replica.pause()  # connected, answering nothing
    try:
        started = time.monotonic()
        with pytest.raises(QueueUnavailableError, match="0 of 1 replicas"):
            writer.write(PERSIST_PERMITS_JOB, {"permits": []}, "p(0)", {})
        assert time.monotonic() - started >= 0.15  # Redis waited out the timeout
    finally:
        replica.resume()
    # Refused, not undone: the primary holds the job, and a resend maps to the same ids.
    assert writer.queue.count >= 1


def test_two_replicas_asked_of_a_primary_with_one_is_refused(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    writer = _acked_writer(primary_and_replica[0].client(), replicas=2, timeout_ms=50)
    with pytest.raises(QueueUnavailableError, match="of 2 replicas"):
        writer.write(PERSIST_PERMITS_JOB, {"permits": []}, "p(0)", {})


async def test_a_push_no_replica_acknowledged_gets_503_and_retry_after(
    aiohttp_client: Callable[..., Any], pg_settings: Settings, real_redis: Redis, pg_token: str
) -> None:
    # TEST_REDIS_URL's server has no replica: with DURABLE_ACK=replica no push is a 200.
    settings = dataclasses.replace(pg_settings, durable_ack="replica", durable_ack_timeout_s=0.05)
    client: TestClient = await aiohttp_client(create_app(settings, redis=real_redis))
    response = await client.post(PUSH_PATH, json=make_payload(apiToken=pg_token))
    assert response.status == 503
    assert response.headers["Retry-After"] == str(settings.retry_after_s)
    assert (await response.json())["ErrorCode"] == 9901
