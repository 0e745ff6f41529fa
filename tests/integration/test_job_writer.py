"""`JobWriter.write` on real Redis: the job and the owners of its reference ids, together."""

from __future__ import annotations

from uuid import uuid4

from redis import Redis

from shared.config import Settings
from shared.constants import PERSIST_PERMITS_JOB, REFERENCE_KEY_PREFIX, REFERENCE_TTL_S
from shared.queue import JobWriter


def _writer(redis_url: str, redis: Redis) -> JobWriter:
    return JobWriter(redis, Settings(redis_url=redis_url), wait_aof=False)


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
