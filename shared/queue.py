"""The permits queue, and the one way a job is put on it.

The receiver's batches (creates and operations), the zone reconcile and the requeue of a
dead letter all go through `JobWriter.write`, so every job gets the same queue, the same
serializer, the owner of each reference id it carries, and the durable acknowledgement.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any, cast

import orjson
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError, TimeoutError
from rq import Queue, Retry
from rq.job import Job

from shared.config import Settings
from shared.constants import (
    JOB_FAILURE_TTL_S,
    REFERENCE_KEY_PREFIX,
    REFERENCE_TTL_S,
)
from shared.durability import DurableAck, resolve_durable_ack
from shared.errors import QueueUnavailableError

# Backoff for a batch whose worker died or whose database stayed away past DB_RETRY_S: RQ
# re-runs it (the last interval repeats), about 4.5 h in all before the batch lands in the
# failed registry (`permit-push failed requeue`). The first re-run is immediate: it does
# not wait for RQ's scheduler, whose lock a killed worker may have held for a minute.
# It is attached at enqueue, not returned by the job, because RQ re-runs an abandoned job
# (SIGKILLed worker) only if the job has retries left. Bad rows never fail the job (they
# are dead-lettered), so bad input is not retried.
JOB_RETRY = Retry(max=24, interval=[0, 5, 15, 30, 60, 120, 300, 600, 900])


class OrjsonSerializer:
    """RQ's serializer protocol (``dumps``, ``loads``) with orjson instead of the stdlib's
    ``json`` (RQ's JSONSerializer): the same JSON text, so each reads what the other
    wrote (jobs queued by an older receiver, ``rq`` tools given JSONSerializer), at a
    fraction of the CPU. tests/unit/test_rq_pins.py pins what this relies on in RQ."""

    @staticmethod
    def dumps(obj: Any, *_args: Any, **_kwargs: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)

    @staticmethod
    def loads(data: bytes | str, *_args: Any, **_kwargs: Any) -> Any:
        return orjson.loads(data)


# What every job payload, result and meta on the permits queue is written with.
JOB_SERIALIZER = OrjsonSerializer

# zlib's level for a job's arguments: half the CPU of zlib's default (6) for 6-10% more
# bytes on the receivers' batches (docs/performance.md, "The receiver's cost per push").
JOB_DATA_ZLIB_LEVEL = 1


class LeanJob(Job):
    """An RQ job whose arguments are compressed once, at zlib level 1.

    RQ compresses a job's arguments (a batch's permits) at zlib's default level every time
    it saves the job's hash: when the job is enqueued, and again when it succeeds though
    they have not changed (a tenth of a worker's CPU at 200 permits a job). This job
    compresses them the first time at JOB_DATA_ZLIB_LEVEL and writes those bytes on every
    later save; a job read from Redis writes back the bytes it was read with. RQ reads any
    level. tests/unit/test_rq_pins.py pins what this relies on in RQ.
    """

    # The serialized arguments and their compressed bytes; None until first saved or read.
    _stored_data: tuple[bytes, bytes] | None = None

    def restore(self, raw_data: Any) -> Any:
        result = super().restore(raw_data)
        stored = raw_data.get(b"data") if isinstance(raw_data, dict) else None
        if isinstance(stored, bytes) and stored is not self._data:  # it was compressed
            self._stored_data = (cast(bytes, self._data), stored)
        return result

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict[str, Any]:
        data = self.data  # serializes the call once its parts are set or changed
        stored = self._stored_data
        if stored is None or stored[0] is not data:
            stored = self._stored_data = (data, zlib.compress(data, JOB_DATA_ZLIB_LEVEL))
        self._data = b""  # what RQ compresses for the 'data' field: nothing, here
        try:
            fields = super().to_dict(include_meta, include_result)
        finally:
            self._data = data
        fields["data"] = stored[1]
        return fields


# The owner of each reference id of a job, one key each, as ONE command of the job's MULTI:
# redis-py packed and parsed a SET per id, 12-18% of a 16-permit enqueue's CPU. EVAL, not
# EVALSHA: a Redis that lost the script cache fails EVALSHA inside EXEC, after the job's
# own commands have run. KEYS: the owner keys; ARGV[1]: their TTL in seconds; ARGV[i + 1]:
# the client id of KEYS[i].
OWNERS_SCRIPT = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""


def permits_queue(redis: Redis, settings: Settings) -> Queue:
    """The RQ queue that receivers fill and workers drain: JSON payloads, LeanJobs."""
    return Queue(
        settings.queue_name, connection=redis, serializer=JOB_SERIALIZER, job_class=LeanJob
    )


class AckedPipeline(Pipeline):
    """A MULTI/EXEC pipeline that then, on the same connection, waits for the durable
    acknowledgement: WAIT and WAITAOF count what their own connection wrote.

    redis-py runs a transaction in ``_execute_transaction(connection, commands,
    raise_on_error)``; tests/integration/test_job_writer.py fails if this override is
    no longer called (a refused batch would be acknowledged).
    """

    def __init__(self, redis: Redis, ack: DurableAck) -> None:
        super().__init__(redis.connection_pool, redis.response_callbacks, True, None)
        self.ack = ack

    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: Any) -> Any:
        response = super()._execute_transaction(connection, commands, raise_on_error)
        try:
            connection.send_command(*self.ack.command)
            reply = self.parse_response(connection, self.ack.name)  # type: ignore[no-untyped-call]
        except (ConnectionError, TimeoutError) as exc:
            # Not redis-py's to retry: a retry would run the transaction again, and the
            # job with it. Refused; the client's resend maps to the same reference id.
            connection.disconnect()
            raise QueueUnavailableError(f"no answer to {self.ack.name}") from exc
        self.ack.check(reply)
        return response


class JobWriter:
    """Writes one RQ job and the owners of its reference ids in one MULTI, then waits for
    the durable acknowledgement (DURABLE_ACK) when there is one."""

    def __init__(self, redis: Redis, settings: Settings, *, ack: DurableAck) -> None:
        self.redis = redis
        self.queue = permits_queue(redis, settings)
        self.ack = ack
        self._job_timeout_s = settings.job_timeout_s
        self._result_ttl_s = settings.job_result_ttl_s

    @classmethod
    def connect(cls, redis: Redis, settings: Settings) -> JobWriter:
        """A writer whose durable acknowledgement follows DURABLE_ACK (asks the server)."""
        return cls(redis, settings, ack=resolve_durable_ack(settings, redis))

    def write(
        self,
        function: str,
        kwargs: dict[str, Any],
        description: str,
        owners: Mapping[str, int],
        *,
        retry: Retry = JOB_RETRY,
        timeout_s: int | None = None,
        at_front: bool = False,
    ) -> str:
        """Enqueue ``function(**kwargs)``; return the job id.

        ``owners`` maps each reference id the job carries to its client: an update or
        delete for an id this client was given is then accepted without the database.
        Raises QueueUnavailableError when the durable acknowledgement does not come in
        time (the job may still be stored; the client's resend maps to the same id).
        """
        job = self.queue.create_job(
            function,
            kwargs=kwargs,
            # RQ's default description is the call with its arguments: plates would show
            # in rq-dashboard and logs.
            description=description,
            timeout=timeout_s or self._job_timeout_s,
            result_ttl=self._result_ttl_s,
            failure_ttl=JOB_FAILURE_TTL_S,
            retry=retry,
        )
        pipeline = AckedPipeline(self.redis, self.ack) if self.ack.waits else self.redis.pipeline()
        with pipeline as pipe:
            self.queue.enqueue_job(job, pipeline=pipe, at_front=at_front)  # RQ opens the MULTI
            if owners:
                keys = [REFERENCE_KEY_PREFIX + reference_id for reference_id in owners]
                pipe.eval(OWNERS_SCRIPT, len(keys), *keys, REFERENCE_TTL_S, *owners.values())
            pipe.execute()
        return str(job.id)
