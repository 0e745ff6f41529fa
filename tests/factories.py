"""Test data: the seed's raw request, jobs as the worker sees them, and the queue.

The seed's body and `make_payload` are in harness/payloads.py (bench/ uses them too).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast
from uuid import uuid4

from redis import Redis
from rq import Queue, SimpleWorker

import shared.queue
from harness.payloads import SEED_TOKEN
from harness.payloads import make_payload as make_payload  # the tests' one import place
from shared.config import Settings
from shared.normalize import normalize_zone
from shared.schemas import PermitJob

# The seed's raw request byte for byte (its Host line, headers and body layout).
SEED_RAW_BODY = (
    b"{\n"
    b'    "apiToken": "YOUR-API-TOKEN",\n'
    b'    "Amount": "14.50",\n'
    b'    "CurrencyID": "CAD",\n'
    b'    "LicencePlate": "PL8RDR",\n'
    b'    "zone": "Lot 4",\n'
    b'    "permitNo": "L4-1138",\n'
    b'    "startTime": "2018-07-02T09:00:00",\n'
    b'    "endTime": "2018-07-02T09:30:00"\n'
    b"}"
)


def seed_raw_request(
    token: str = SEED_TOKEN, host: str = "controller.operationscommander.io"
) -> bytes:
    body = SEED_RAW_BODY.replace(SEED_TOKEN.encode(), token.encode())
    head = (
        "POST /api/OC-TOMA/v1/permits/push HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Accept: application/json\r\n"
        "Content-Type: application/json\r\n"
        "Cache-Control: no-cache\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def permits_queue(redis: Redis) -> Queue:
    """The receiver's queue (default settings), as a worker sees it."""
    return shared.queue.permits_queue(redis, Settings())


def queued_permits(redis: Redis) -> list[dict[str, Any]]:
    """Every permit waiting in the queue, in order, across its batch jobs."""
    return [permit for job in permits_queue(redis).get_jobs() for permit in job.kwargs["permits"]]


def make_permit_job(client_id: int, zone: str | None = "Lot 4", **overrides: Any) -> PermitJob:
    """A permit as the worker receives it (a fresh reference id), for ``client_id``.

    Each call is another permit (its own permit number): the worker stores a permit once,
    so two calls must differ in more than their reference ids.
    """
    reference_id = str(uuid4())
    permit = PermitJob(
        reference_id=reference_id,
        client_id=client_id,
        permit_type="Standard",
        plate="PL8RDR",
        plate_normalized="PL8RDR",
        zone=zone,
        zone_normalized=normalize_zone(zone) if zone is not None else None,
        permit_no=f"L4-{reference_id[:8]}",
        amount="14.50",
        currency="CAD",
        start_raw="2018-07-02T09:00:00",
        end_raw="2018-07-02T09:30:00",
        starts_at="2018-07-02T09:00:00+00:00",
        ends_at="2018-07-02T09:30:00+00:00",
        received_at=datetime.now(UTC).isoformat(),
    )
    return cast(PermitJob, {**permit, **overrides})


def run_worker(redis: Redis) -> None:
    """Run the queue dry in-process, as a burst SimpleWorker (rq's testing advice)."""
    SimpleWorker(
        [permits_queue(redis)], connection=redis, serializer=shared.queue.JOB_SERIALIZER
    ).work(burst=True)
