"""Turns a micro-batch of accepted pushes into ONE RQ job, in two Redis round trips.

Runs in a worker thread: RQ and this Redis client are synchronous and must stay off the
event loop.

The first reference id of a resend comes from Redis while the first send may still be
queued or was just stored (DEDUP_WINDOW_S), and from the database after that: one read per
micro-batch, started before the claim's Redis round trip so that the two overlap (a lone
push waits for the slower of them, not for both), and used for the permits Redis did not
know. Redis keeps the window in small hash
buckets (``ingest:seen:<slot>:<bucket>``), each entry a 16-byte digest and a 16-byte id:
one slot per window, two slots alive, so an entry is found for one to two windows.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import structlog
from redis.exceptions import NoScriptError

from ingest.read_store import FirstIds
from shared.config import Settings
from shared.constants import PERSIST_PERMITS_JOB, SEEN_BUCKETS, SEEN_KEY_PREFIX
from shared.errors import IdempotencyConflictError, QueueFullError
from shared.fingerprint import permit_fingerprint
from shared.local_time import utc_instant
from shared.queue import JobWriter
from shared.schemas import PermitIn, PermitJob
from shared.tokens import ClientInfo

log = structlog.get_logger(__name__)

# Starts the read of the reference id stored for each (client id, fingerprint) pair
# (SqlReadStore.start_first_ids); the enqueue takes its answer after its claim round trip.
StartFirstIds = Callable[[list[tuple[int, str]]], FirstIds]
# Is Redis past its memory share? Raises QueueFullError if so (ingest.memory.RedisMemory).
MemoryCheck = Callable[[], None]

# After a failed (or timed-out) first-id read, batches skip the database this long.
DATABASE_RETRY_S = 5.0

# One call per batch. Per item, ARGV holds: kind (1: with an Idempotency-Key), the
# fingerprint's field, the key's field (or ""), the candidate id, the short fingerprint;
# KEYS holds the current and previous slot's bucket of the fingerprint, then of the key.
# Replies per item: "" (new: the candidate is claimed), 16 bytes (the first id), "C"
# (the key was used with another body).
CLAIM_SCRIPT = """
local expire_at = tonumber(ARGV[1])
local out = {}
local k, a = 1, 2
local function find(cur, prev, field)
  local v = redis.call('HGET', cur, field)
  if not v then v = redis.call('HGET', prev, field) end
  return v
end
local function put(key, field, value)
  redis.call('HSET', key, field, value)
  redis.call('EXPIREAT', key, expire_at)
end
for i = 1, tonumber(ARGV[2]) do
  local kind, fp, idem, candidate, short = ARGV[a+1], ARGV[a+2], ARGV[a+3], ARGV[a+4], ARGV[a+5]
  a = a + 5
  local fcur, fprev = KEYS[k], KEYS[k+1]
  k = k + 2
  local reply = nil
  local ref = nil
  if kind == '1' then
    local icur, iprev = KEYS[k], KEYS[k+1]
    k = k + 2
    local used = find(icur, iprev, idem)
    if used then
      if string.sub(used, 17) ~= short then
        reply = 'C'
      else
        ref = string.sub(used, 1, 16)
      end
    end
    if not reply then
      if not ref then ref = find(fcur, fprev, fp) end
      if ref then reply = ref else reply = '' ; ref = candidate end
      put(icur, idem, ref .. short)
      put(fcur, fp, ref)
    end
  else
    ref = find(fcur, fprev, fp)
    if ref then reply = ref else reply = '' ; put(fcur, fp, candidate) end
  end
  out[i] = reply
end
return out
"""


@dataclass(frozen=True, slots=True)
class PushItem:
    """One accepted push, waiting for its batch."""

    client: ClientInfo
    permit: PermitIn
    received_at: datetime
    idempotency_key: str | None = None

    def fingerprint(self) -> str:
        """The same permit from the same client gives the same fingerprint (plate normalised)."""
        p = self.permit
        return permit_fingerprint(
            self.client.id,
            p.plate_normalized,
            p.start_raw,
            p.end_raw,
            p.amount,
            p.currency,
            p.permit_no,
            p.zone_normalized,
        )


@dataclass(frozen=True, slots=True)
class _Claim:
    """Where one push's fingerprint (and Idempotency-Key) live in the Redis window."""

    fingerprint: str
    field: bytes  # 16 bytes of the fingerprint
    key_field: bytes | None  # 16 bytes of the client and Idempotency-Key

    def keys(self, slot: int) -> list[str]:
        keys = _bucket_keys(self.field, slot)
        if self.key_field is not None:
            keys += _bucket_keys(self.key_field, slot)
        return keys


def _bucket_keys(field: bytes, slot: int) -> list[str]:
    bucket = int.from_bytes(field[:4], "big") % SEEN_BUCKETS
    return [f"{SEEN_KEY_PREFIX}{slot}:{bucket}", f"{SEEN_KEY_PREFIX}{slot - 1}:{bucket}"]


def _claim_of(item: PushItem) -> _Claim:
    fingerprint = item.fingerprint()
    key_field = None
    if item.idempotency_key is not None:
        raw = f"{item.client.id}\x1f{item.idempotency_key}".encode()
        key_field = hashlib.sha256(raw).digest()[:16]
    return _Claim(fingerprint, bytes.fromhex(fingerprint)[:16], key_field)


class PermitEnqueuer:
    """Claims reference ids (de-duplicating resends) and enqueues a batch as one job."""

    def __init__(
        self,
        writer: JobWriter,
        settings: Settings,
        first_ids: StartFirstIds | None = None,
        memory: MemoryCheck | None = None,
    ) -> None:
        self.writer = writer
        self.redis = writer.redis
        self._timezone = settings.timezone
        self._max_depth = settings.max_queue_depth
        self._window_s = settings.dedup_window_s
        self._depth_keys = (writer.queue.key, writer.queue.scheduled_job_registry.key)
        self._claim_sha = hashlib.sha1(CLAIM_SCRIPT.encode(), usedforsecurity=False).hexdigest()
        self._first_ids = first_ids
        self._database_back_at = 0.0  # monotonic time before which the read is skipped
        self._memory = memory

    def enqueue(self, items: list[PushItem]) -> list[str | Exception]:
        """Enqueue ``items``; return each one's reference id, or the error that refused it.

        A resend Redis still knows gets the first reference id and is enqueued again under
        it: if the first send died between claiming its id and enqueuing, the resend still
        stores it, and the worker's insert on the reference id keeps it to one row. A
        resend only the database knows gets the stored id and is not enqueued again.
        """
        if self._memory is not None:
            self._memory()  # before any write: a refused batch leaves nothing behind
        claims = [_claim_of(item) for item in items]
        reading = self._start_first_ids(items, claims)
        try:
            outcomes, new = self._claim_reference_ids(items, claims)
            stored = self._from_database(items, claims, outcomes, new, reading) if new else set()
        finally:
            if reading is not None:
                # Unanswered (the claim failed, or Redis knew every permit): a read still
                # waiting for a read thread is dropped, not left for the status reads to
                # queue behind.
                reading.cancel()
        permits: dict[str, PermitJob] = {}
        for position, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
            if isinstance(outcome, str) and position not in stored:
                permits[outcome] = to_job_permit(item, outcome, self._timezone)
        if permits:
            job_id = self.writer.write(
                PERSIST_PERMITS_JOB,
                {"permits": list(permits.values())},
                f"persist_permits({len(permits)} permits)",
                {ref: permit["client_id"] for ref, permit in permits.items()},
            )
            # The accepted pushes' one line: per batch, not per request (the request's own
            # line is for refusals only, ingest/middlewares.py).
            log.info(
                "permits_enqueued",
                job_id=job_id,
                size=len(items),
                enqueued=len(permits),
                reference_ids=list(permits),
            )
        return outcomes

    def _claim_reference_ids(
        self, items: list[PushItem], claims: list[_Claim]
    ) -> tuple[list[str | Exception], list[int]]:
        """One round trip (a script): a new id for a permit Redis does not know, the first id
        for a resend within the window; the positions of the new ones.

        An Idempotency-Key and the fingerprint name one permit: a key used before answers
        with its id if the body is the same (422 otherwise), and a permit sent before
        without the key (or with another key) answers with its first id.
        """
        candidates = new_reference_ids(len(items))
        now = time.time()
        slot = int(now // self._window_s)
        keys: list[str] = []
        args: list[bytes | str | int] = [(slot + 2) * self._window_s, len(items)]
        for claim, candidate in zip(claims, candidates, strict=True):
            keys += claim.keys(slot)
            has_key = claim.key_field is not None
            args += [
                "1" if has_key else "0",
                claim.field,
                claim.key_field or b"",
                candidate.bytes,
                claim.field,
            ]
        replies = self._run_claim(keys, args)
        if self._max_depth:
            queued, scheduled, previous = replies
            if queued + scheduled >= self._max_depth:
                # The claims just made are harmless: a resend finds them and is enqueued
                # under the same id, exactly as after a crash between claim and enqueue.
                # Raised, not returned per item: every push of the batch gets 503.
                raise QueueFullError(f"{queued + scheduled} batches waiting")
        else:
            (previous,) = replies
        outcomes: list[str | Exception] = []
        new: list[int] = []
        for position, (candidate, prior) in enumerate(zip(candidates, previous, strict=True)):
            if prior == b"":
                outcomes.append(str(candidate))
                new.append(position)
            elif prior == b"C":
                outcomes.append(
                    IdempotencyConflictError("the Idempotency-Key was used with another body")
                )
            else:
                outcomes.append(str(UUID(bytes=prior)))
        return outcomes, new

    def _run_claim(self, keys: list[str], args: list[bytes | str | int]) -> list[Any]:
        """The queue depth and the claim script in ONE round trip (EVALSHA; redis-py's
        Script in a pipeline would add a SCRIPT EXISTS round trip to every batch). A Redis
        that does not know the script (restarted, flushed with SCRIPT FLUSH) refuses it
        before running anything: load it and run the round trip again."""
        for attempt in (1, 2):
            with self.redis.pipeline(transaction=False) as pipe:
                if self._max_depth:
                    # The queue depth rides in the same round trip: backpressure costs nothing.
                    pipe.llen(self._depth_keys[0])
                    pipe.zcard(self._depth_keys[1])
                pipe.evalsha(self._claim_sha, len(keys), *keys, *args)
                try:
                    return list(pipe.execute())
                except NoScriptError:
                    if attempt == 2:
                        raise
            self.redis.script_load(CLAIM_SCRIPT)
        raise AssertionError("unreachable")

    def _start_first_ids(self, items: list[PushItem], claims: list[_Claim]) -> FirstIds | None:
        """The batch's first-id read, started; None while the database is taken as away."""
        if self._first_ids is None or time.monotonic() < self._database_back_at:
            return None  # it failed a moment ago: do not make every batch wait for it
        pairs = zip(items, claims, strict=True)
        wanted = {(item.client.id, claim.fingerprint) for item, claim in pairs}
        try:
            return self._first_ids(sorted(wanted))
        except Exception as exc:
            self._database_away(exc)
            return None

    def _database_away(self, exc: Exception) -> None:
        log.warning("first_id_lookup_failed", error=type(exc).__name__)
        self._database_back_at = time.monotonic() + DATABASE_RETRY_S

    def _from_database(
        self,
        items: list[PushItem],
        claims: list[_Claim],
        outcomes: list[str | Exception],
        new: list[int],
        reading: FirstIds | None,
    ) -> set[int]:
        """Past Redis's window the first id is the database's: the batch's ONE read, for the
        permits Redis did not know. Found: that id is the answer, nothing is enqueued, and
        Redis learns it for the next resend. Database away: the new id stands, and the
        worker records it as another name of the stored permit. Returns the positions
        found stored."""
        stored: set[int] = set()
        if reading is None:
            return stored
        try:
            found = reading.answer()
        except Exception as exc:
            self._database_away(exc)
            return stored
        if not found:
            return stored
        slot = int(time.time() // self._window_s)
        expire_at = (slot + 2) * self._window_s
        with self.redis.pipeline(transaction=False) as pipe:
            for position in new:
                claim = claims[position]
                first = found.get((items[position].client.id, claim.fingerprint))
                if first is None:
                    continue
                outcomes[position] = first
                stored.add(position)
                ref = UUID(first).bytes
                fields = [(claim.field, ref)]
                if claim.key_field is not None:
                    fields.append((claim.key_field, ref + claim.field))
                for field, value in fields:
                    key = _bucket_keys(field, slot)[0]
                    pipe.hset(key, field, value)
                    pipe.expireat(key, expire_at)
            pipe.execute()
        return stored


def new_reference_ids(count: int) -> list[UUID]:
    """``count`` random (version 4) UUIDs, as ``uuid4`` makes them, from ONE ``os.urandom``
    call for the whole batch instead of one system call per permit."""
    raw = os.urandom(16 * count)
    return [UUID(bytes=raw[i : i + 16], version=4) for i in range(0, 16 * count, 16)]


def to_job_permit(item: PushItem, reference_id: str, timezone: ZoneInfo) -> PermitJob:
    p = item.permit
    return PermitJob(
        reference_id=reference_id,
        client_id=item.client.id,
        permit_type=item.client.permit_type,
        plate=p.plate,
        plate_normalized=p.plate_normalized,
        zone=p.zone,
        zone_normalized=p.zone_normalized,
        permit_no=p.permit_no,
        amount=p.amount,
        currency=p.currency,
        start_raw=p.start_raw,
        end_raw=p.end_raw,
        starts_at=utc_instant(p.start, timezone),
        ends_at=utc_instant(p.end, timezone),
        received_at=item.received_at.isoformat(),
    )
