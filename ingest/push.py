"""Thin handlers: read, validate, authenticate, enqueue, reply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiohttp import web

from ingest.bodies import ApiError, json_response, success_body
from ingest.permit_enqueuer import PushItem
from ingest.state import BATCHER, LIMITER, TOKENS
from shared import codes
from shared.schemas import load_permit
from shared.tokens import ClientInfo

IDEMPOTENCY_HEADER = "Idempotency-Key"


async def push_permit(request: web.Request) -> web.Response:
    """POST /api/OC-TOMA/v1/permits/push: one permit, answered once it is queued."""
    received_at = datetime.now(UTC)
    permit = load_permit(await read_json(request))
    client = await authenticate(request, permit.api_token)
    item = PushItem(client, permit, received_at, request.headers.get(IDEMPOTENCY_HEADER))
    reference_id = await request.app[BATCHER].submit(item)
    structlog.contextvars.bind_contextvars(reference_id=reference_id)  # on the request's line
    return json_response(success_body(reference_id))


async def read_json(request: web.Request) -> Any:
    """The decoded body: 415 unless it is declared JSON, 400 (9003) unless it parses."""
    if request.content_type != "application/json":
        raise ApiError(415, codes.NOT_PARSEABLE, "The Content-Type must be application/json.")
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ApiError(400, codes.NOT_PARSEABLE, "The body is not valid JSON.") from None


async def authenticate(request: web.Request, token: str) -> ClientInfo:
    """The client owning ``token`` (401 if none), within its rate limit (429 if not)."""
    client = await request.app[TOKENS].authenticate(token)
    if client is None:
        raise ApiError(401, codes.TOKEN_NOT_PERMITTED, errors={"apiToken": ["Is not permitted."]})
    await request.app[LIMITER].check(client)
    return client
