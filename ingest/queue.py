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

from redis import Redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from shared.config import Settings
from shared.constants import (
    DEDUP_KEY_PREFIX,
    DEDUP_TTL_S,
    IDEMPOTENCY_KEY_PREFIX,
    JOB_FAILURE_TTL_S,
    JOB_RESULT_TTL_S,
    PERSIST_PERMITS_JOB,
    REFERENCE_KEY_PREFIX,
    REFERENCE_TTL_S,
)
from shared.errors import IdempotencyConflictError
from shared.schemas import PermitIn, PermitJob
from shared.tokens import ClientInfo

# Backoff for a batch whose worker died or whose database was away: RQ re-runs it.
JOB_RETRY = Retry(max=10, interval=[5, 15, 30, 60, 120, 300, 600, 600, 600, 600])


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

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.queue = Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)
        self._timezone = settings.timezone
        self._job_timeout_s = settings.job_timeout_s

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
            job = self.queue.create_job(
                PERSIST_PERMITS_JOB,
                kwargs={"permits": list(permits.values())},
                # RQ's default description is the call with its arguments: plates would
                # show in rq-dashboard and logs.
                description=f"persist_permits({len(permits)} permits)",
                timeout=self._job_timeout_s,
                result_ttl=JOB_RESULT_TTL_S,
                failure_ttl=JOB_FAILURE_TTL_S,
                retry=JOB_RETRY,
            )
            with self.redis.pipeline() as pipe:
                self.queue.enqueue_job(job, pipeline=pipe)  # RQ opens the MULTI
                # Who owns each reference id, in the same MULTI as the job: an update or
                # delete for an id this client was given is accepted without the database.
                for reference_id, permit in permits.items():
                    owner_key = REFERENCE_KEY_PREFIX + reference_id
                    pipe.set(owner_key, permit["client_id"], ex=REFERENCE_TTL_S)
                pipe.execute()
        return outcomes

    def _claim_reference_ids(self, items: list[PushItem]) -> list[str | Exception]:
        """One round trip of SET NX GET: a new id for a new permit, the first id for a resend.

        With an Idempotency-Key, the key alone decides (a client sending the same permit
        twice on purpose uses two keys); without one, the permit's fingerprint does.
        """
        fingerprints = [item.fingerprint() for item in items]
        candidates = [str(uuid4()) for _ in items]
        with self.redis.pipeline(transaction=False) as pipe:
            for item, fingerprint, candidate in zip(items, fingerprints, candidates, strict=True):
                if item.idempotency_key is None:
                    key, value = f"{DEDUP_KEY_PREFIX}{item.client.id}:{fingerprint}", candidate
                else:
                    digest = hashlib.sha256(item.idempotency_key.encode()).hexdigest()
                    key = f"{IDEMPOTENCY_KEY_PREFIX}{item.client.id}:{digest}"
                    value = f"{candidate} {fingerprint}"
                pipe.set(key, value, nx=True, get=True, ex=DEDUP_TTL_S)
            previous = pipe.execute()
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
        starts_at=_instant(p.start, timezone),
        ends_at=_instant(p.end, timezone),
        received_at=item.received_at.isoformat(),
    )


def _instant(local: datetime, timezone: ZoneInfo) -> str:
    return local.replace(tzinfo=timezone).astimezone(UTC).isoformat()
