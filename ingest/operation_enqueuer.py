"""Updates and deletes: numbered in order of receipt, checked for ownership, enqueued.

Runs in the batcher's worker thread (RQ and this Redis client are synchronous). A flush
is two Redis round trips however many operations it carries:

1. one pipeline that takes a block of sequence numbers from the shared counter and reads
   each reference id's owner (``ingest:ref:<id>``, written with the create's enqueue);
2. one MULTI that enqueues the operations as ONE RQ job.

What the receiver can know without the database: Redis holds the owner of every
reference id whose create is still queued (the worker deletes it once stored). An id owned
by another client is refused at once (9009). An id Redis does not know is checked in the
database when the receiver has one (``SqlReadStore``); without one it is enqueued with
``create_expected=False`` and the worker decides, recording "not found" for the status
endpoint. Ordering is the worker's job: see worker/operations.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from shared import opseq
from shared.config import Settings
from shared.constants import APPLY_OPERATIONS_JOB, REFERENCE_KEY_PREFIX
from shared.errors import RecordNotFoundError
from shared.local_time import utc_instant
from shared.operations import OperationChanges, OperationIn, OperationJob
from shared.queue import JobWriter
from shared.tokens import ClientInfo

log = structlog.get_logger(__name__)

# reference ids -> {reference id: owning client id} for the ids the database holds;
# raises when the database cannot answer.
OwnerLookup = Callable[[list[str]], dict[str, int]]


@dataclass(frozen=True, slots=True)
class OperationItem:
    """One accepted update or delete, waiting for its batch."""

    client: ClientInfo
    operation: OperationIn
    received_at: datetime


class OperationEnqueuer:
    """Numbers, checks and enqueues a micro-batch of operations as one job."""

    def __init__(self, writer: JobWriter, settings: Settings, owners: OwnerLookup | None) -> None:
        self.writer = writer
        self.redis = writer.redis
        self._owners = owners
        self._timezone = settings.timezone

    def enqueue(self, items: list[OperationItem]) -> list[str | Exception]:
        """Enqueue ``items``; return each one's reference id, or the error refusing it."""
        seqs, owners = self._number_and_read_owners(items)
        unknown = sorted(
            {i.operation.reference_id for i, o in zip(items, owners, strict=True) if o is None}
        )
        in_database = self._database_owners(unknown)
        outcomes: list[str | Exception] = []
        jobs: list[OperationJob] = []
        for item, seq, owner in zip(items, seqs, owners, strict=True):
            reference_id = item.operation.reference_id
            if owner is None and in_database is not None:
                owner = in_database.get(reference_id)
            if owner is not None and owner != item.client.id:
                outcomes.append(RecordNotFoundError(reference_id))  # not this client's
            elif owner is None and in_database is not None:
                outcomes.append(RecordNotFoundError(reference_id))  # issued to nobody
            else:
                # owner None here: neither Redis nor a database could tell; the worker will.
                jobs.append(self._to_job(item, seq, create_expected=owner is not None))
                outcomes.append(reference_id)
        if jobs:
            # Owners found in the database are NOT written back to Redis: the database
            # answers for stored permits (an owner key per update, kept a day, would cost
            # Redis what the create no longer does).
            self.writer.write(
                APPLY_OPERATIONS_JOB,
                {"operations": jobs},
                f"apply_operations({len(jobs)} operations)",
                {},
            )
        return outcomes

    def _number_and_read_owners(
        self, items: list[OperationItem]
    ) -> tuple[list[int], list[int | None]]:
        """Round trip 1: a block of sequence numbers, and each reference id's owner."""
        with self.redis.pipeline(transaction=False) as pipe:
            # Never backwards, whether Redis lost the counter or brought an old one back
            # (shared/opseq.py): at least the clock in microseconds.
            opseq.take(self.redis, pipe, len(items))
            for item in items:
                pipe.get(REFERENCE_KEY_PREFIX + item.operation.reference_id)
            last, *raw_owners = pipe.execute()
        first = int(last) - len(items) + 1
        owners = [int(raw) if raw is not None else None for raw in raw_owners]
        return list(range(first, first + len(items))), owners

    def _database_owners(self, reference_ids: list[str]) -> dict[str, int] | None:
        """Owners from the database for ids Redis no longer knows; None: cannot tell."""
        if not reference_ids:
            return {}
        if self._owners is None:
            return None
        try:
            return self._owners(reference_ids)
        except Exception as exc:  # the database is away: the worker decides instead
            log.warning("owner_lookup_failed", error=type(exc).__name__)
            return None

    def _to_job(self, item: OperationItem, seq: int, create_expected: bool) -> OperationJob:
        op = item.operation
        changes = OperationChanges()
        if op.plate is not None and op.plate_normalized is not None:
            changes["plate"], changes["plate_normalized"] = op.plate, op.plate_normalized
        if op.amount is not None:
            changes["amount"] = op.amount
        if op.currency is not None:
            changes["currency"] = op.currency
        if op.end_raw is not None and op.end is not None:
            changes["end_raw"], changes["ends_at"] = op.end_raw, utc_instant(op.end, self._timezone)
        return OperationJob(
            reference_id=op.reference_id,
            client_id=item.client.id,
            seq=seq,
            kind=op.kind,
            changes=changes,
            received_at=item.received_at.isoformat(),
            create_expected=create_expected,
        )
