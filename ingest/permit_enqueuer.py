"""Turns a micro-batch of accepted pushes into ONE RQ job, in two Redis round trips.

Runs in a worker thread: RQ and this Redis client are synchronous and must stay off the
event loop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import uuid4
from zoneinfo import ZoneInfo

from shared.config import Settings
from shared.constants import (
    DEDUP_KEY_PREFIX,
    DEDUP_TTL_S,
    IDEMPOTENCY_KEY_PREFIX,
    PERSIST_PERMITS_JOB,
)
from shared.errors import IdempotencyConflictError, QueueFullError
from shared.queue import JobWriter
from shared.schemas import PermitIn, PermitJob
from shared.tokens import ClientInfo


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
        canonical = "\x1f".join(
            str(part)
            for part in (
                self.client.id,
                p.plate_normalized,
                p.start_raw,
                p.end_raw,
                p.amount,
                p.currency,
                p.permit_no,
                p.zone_normalized,
            )
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class PermitEnqueuer:
    """Claims reference ids (de-duplicating resends) and enqueues a batch as one job."""

    def __init__(self, writer: JobWriter, settings: Settings) -> None:
        self.writer = writer
        self.redis = writer.redis
        self._timezone = settings.timezone
        self._max_depth = settings.max_queue_depth
        self._depth_keys = (writer.queue.key, writer.queue.scheduled_job_registry.key)

    def enqueue(self, items: list[PushItem]) -> list[str | Exception]:
        """Enqueue ``items``; return each one's reference id, or the error that refused it.

        A resend gets the first reference id and is enqueued again under it: if the first
        send died between claiming its id and enqueuing, the resend still stores it, and
        the worker's insert on the reference id keeps it to one row.
        """
        outcomes = self._claim_reference_ids(items)
        permits: dict[str, PermitJob] = {}
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, str):
                permits[outcome] = to_job_permit(item, outcome, self._timezone)
        if permits:
            self.writer.write(
                PERSIST_PERMITS_JOB,
                {"permits": list(permits.values())},
                f"persist_permits({len(permits)} permits)",
                {ref: permit["client_id"] for ref, permit in permits.items()},
            )
        return outcomes

    def _claim_reference_ids(self, items: list[PushItem]) -> list[str | Exception]:
        """One round trip of SET NX GET: a new id for a new permit, the first id for a resend.

        With an Idempotency-Key, the key alone decides (a client sending the same permit
        twice on purpose uses two keys); without one, the permit's fingerprint does.
        """
        fingerprints = [item.fingerprint() for item in items]
        candidates = [str(uuid4()) for _ in items]
        with self.redis.pipeline(transaction=False) as pipe:
            if self._max_depth:
                # The queue depth rides in the same round trip: backpressure costs nothing.
                pipe.llen(self._depth_keys[0])
                pipe.zcard(self._depth_keys[1])
            for item, fingerprint, candidate in zip(items, fingerprints, candidates, strict=True):
                if item.idempotency_key is None:
                    key, value = f"{DEDUP_KEY_PREFIX}{item.client.id}:{fingerprint}", candidate
                else:
                    digest = hashlib.sha256(item.idempotency_key.encode()).hexdigest()
                    key = f"{IDEMPOTENCY_KEY_PREFIX}{item.client.id}:{digest}"
                    value = f"{candidate} {fingerprint}"
                pipe.set(key, value, nx=True, get=True, ex=DEDUP_TTL_S)
            previous = pipe.execute()
        if self._max_depth:
            queued, scheduled, *previous = previous
            if queued + scheduled >= self._max_depth:
                # The claims just made are harmless: a resend finds them and is enqueued
                # under the same id, exactly as after a crash between claim and enqueue.
                # Raised, not returned per item: every push of the batch gets 503.
                raise QueueFullError(f"{queued + scheduled} batches waiting")
        outcomes: list[str | Exception] = []
        for item, fingerprint, candidate, prior in zip(
            items, fingerprints, candidates, previous, strict=True
        ):
            if prior is None:
                outcomes.append(candidate)
            elif item.idempotency_key is None:
                outcomes.append(prior.decode())
            else:
                reference_id, _, first_fingerprint = prior.decode().partition(" ")
                if first_fingerprint == fingerprint:
                    outcomes.append(reference_id)
                else:
                    outcomes.append(
                        IdempotencyConflictError("the Idempotency-Key was used with another body")
                    )
        return outcomes


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


def utc_instant(local: datetime, timezone: ZoneInfo) -> str:
    """A naive time of the deployment's zone as an ISO 8601 instant in UTC."""
    return local.replace(tzinfo=timezone).astimezone(UTC).isoformat()
