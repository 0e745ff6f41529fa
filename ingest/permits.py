"""Handlers for the rest of a permit's life: update, delete, status, enforcement lookup."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from aiohttp import web

from ingest.auth import authenticate, authenticate_bearer
from ingest.bodies import json_response, read_json, success_body
from ingest.operation_enqueuer import OperationItem
from ingest.read_store import ActiveQuery, ReadStore
from ingest.state import OPERATION_BATCHER, READ_STORE, REDIS, SETTINGS
from shared.codes import END_TIME_INVALID, INVALID
from shared.constants import ENFORCEMENT_SCOPE, REFERENCE_KEY_PREFIX
from shared.errors import RecordNotFoundError
from shared.local_time import local_time_problem
from shared.lookup import load_lookup
from shared.operations import OperationKind, is_reference_id, load_operation
from shared.schemas import (
    PERMIT_MAX_YEAR,
    PERMIT_MIN_YEAR,
    PERMIT_TIME_RANGE,
    InvalidPermitError,
    Problem,
    sent_name,
)
from shared.tokens import ClientInfo


async def update_permit(request: web.Request) -> web.Response:
    """POST /api/OC-TOMA/v1/permits/update: change plate, amount, currency or end time."""
    return await _operate(request, "update")


async def delete_permit(request: web.Request) -> web.Response:
    """POST /api/OC-TOMA/v1/permits/delete: cancel a permit (the row is kept, marked)."""
    return await _operate(request, "delete")


async def _operate(request: web.Request, kind: OperationKind) -> web.Response:
    received_at = datetime.now(UTC)
    body = await read_json(request)
    operation = load_operation(kind, body)
    if operation.end is not None:  # the new end time must name one instant too
        timezone = request.app[SETTINGS].timezone
        if (problem := local_time_problem(operation.end, timezone)) is not None:
            name = sent_name(body, "endTime")
            raise InvalidPermitError({name: [Problem(problem, END_TIME_INVALID)]})
    client = await authenticate(request, operation.api_token)
    if not is_reference_id(operation.reference_id):
        raise RecordNotFoundError(operation.reference_id)  # never one of ours
    item = OperationItem(client, operation, received_at)
    reference_id = await request.app[OPERATION_BATCHER].submit(item)
    return json_response(success_body(reference_id))


async def permit_status(request: web.Request) -> web.Response:
    """GET /api/OC-TOMA/v1/permits/{reference_id}: queued, stored, ... with the permit."""
    client = await authenticate_bearer(request)
    reference_id = request.match_info["reference_id"].lower()
    if not is_reference_id(reference_id):
        raise RecordNotFoundError(reference_id)
    found = await reads(request).status(client.id, reference_id)
    if found is None and await _queued_for(request, client, reference_id):
        body = {"status": "success", "reference_id": reference_id, "permit_status": "queued"}
        return json_response({**body, "permit": None, "operations": []})
    if found is None:
        raise RecordNotFoundError(reference_id)
    body = {"status": "success", "reference_id": reference_id, "permit_status": found.status}
    return json_response({**body, "permit": found.permit, "operations": found.operations})


async def active_permits(request: web.Request) -> web.Response:
    """GET /api/OC-TOMA/v1/permits/active?plate=P[&zone=Z][&at=T]: is this plate paid?"""
    client = await authenticate_bearer(request)
    settings = request.app[SETTINGS]
    query = load_lookup(request.query)
    at = query.at or datetime.now(UTC)
    at = (at if at.tzinfo is not None else at.replace(tzinfo=settings.timezone)).astimezone(UTC)
    # The range a permit's times may lie in: a lookup outside it can match nothing. A bound
    # fixed in the calendar, not relative to now, so what is valid today stays valid.
    if not PERMIT_MIN_YEAR <= at.year <= PERMIT_MAX_YEAR:
        raise InvalidPermitError({"at": [Problem(f"Must lie in {PERMIT_TIME_RANGE}.", INVALID)]})
    grace = timedelta(seconds=settings.lookup_grace_s)
    # A push token sees its own client's permits only; an enforcement token every client's.
    owner = None if client.scope == ENFORCEMENT_SCOPE else client.id
    limit = settings.lookup_max_permits
    lookup = ActiveQuery(query.plate_normalized, query.zone, at, grace, owner, limit + 1)
    permits = await reads(request).active(lookup)
    truncated = len(permits) > limit
    permits = permits[:limit]
    return json_response(
        {
            "status": "success",
            "plate": query.plate_normalized,
            "zone": query.zone,
            "at": at.isoformat(),
            "grace_s": settings.lookup_grace_s,
            "active": bool(permits),
            "permits": permits,
            "truncated": truncated,
        }
    )


def reads(request: web.Request) -> ReadStore:
    return request.app[READ_STORE]


async def _queued_for(request: web.Request, client: ClientInfo, reference_id: str) -> bool:
    """Redis knows the owner of every id issued in the last day: one not stored is queued."""
    owner = await asyncio.to_thread(request.app[REDIS].get, REFERENCE_KEY_PREFIX + reference_id)
    return owner is not None and int(owner) == client.id
