"""The push endpoints: one permit (OPS-COM's Permit Create) or a batch of them.

POST /api/OC-TOMA/v1/permits/push takes one permit and answers once its micro-batch is
queued. POST /api/OC-TOMA/v1/permits/push/batch takes 1 to 1000 permits, each judged on
its own: its reply lists, per index, what the single push would have answered for that permit
(its reference id, or its error body). Valid permits are queued even when others fail.
The whole batch costs Redis two round trips, whatever its size: one claims every
reference id (the de-duplication of resends, as for single pushes), one enqueues the
single RQ job that carries every valid permit. A client over its rate limit (a permit
costs one token) or Redis away refuses the whole batch, so a retry resends all of it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ingest.auth import BODY_TOKEN, authenticate, may_not_push, not_permitted, unknown_token
from ingest.bodies import ApiError, error_body, json_response, read_json, success_body
from ingest.permit_enqueuer import PushItem
from ingest.state import AUTH_FAILURES, ENQUEUE, LIMITER, PERMIT_BATCHER, SETTINGS, TOKENS
from shared import codes
from shared.config import Settings
from shared.constants import BATCH_PUSH_MAX
from shared.errors import IdempotencyConflictError
from shared.schemas import InvalidPermitError, PermitIn, load_permit, sent_token
from shared.tokens import ClientInfo

IDEMPOTENCY_HEADER = "Idempotency-Key"


async def push_permit(request: web.Request) -> web.Response:
    """POST /api/OC-TOMA/v1/permits/push: one permit, answered once it is queued."""
    received_at = datetime.now(UTC)
    settings = request.app[SETTINGS]
    permit = load_permit(
        await read_json(request),
        timezone=settings.timezone,
        max_duration=settings.max_permit_duration,
    )
    client = await authenticate(request, permit.api_token)
    item = PushItem(client, permit, received_at, request.headers.get(IDEMPOTENCY_HEADER))
    reference_id = await request.app[PERMIT_BATCHER].submit(item)
    return json_response(success_body(reference_id))


async def push_batch(request: web.Request) -> web.Response:
    """Validate each permit alone, enqueue the valid ones as one job, reply per index."""
    received_at = datetime.now(UTC)
    limit = request.app[SETTINGS].max_batch_body_bytes
    entries = _entries(await read_json(request, max_bytes=limit))
    # Tokens first, before any validation: an unknown token costs a dict look-up.
    tokens = [sent_token(entry) for entry in entries]
    clients = await _clients(request, tokens)
    if not clients:  # no entry carries a well-formed token: nothing is validated
        raise ApiError(400, codes.TOKEN_MISSING, errors={BODY_TOKEN: ["Is required."]})
    if not any(clients.values()):
        raise unknown_token(request)  # no entry of a known client: nothing is validated
    # A batch carrying an enforcement token is refused whole (403): that token may not push.
    if (refused := next((c for c in clients.values() if c and not c.may_push), None)) is not None:
        raise may_not_push(refused)
    if None in clients.values():
        request.app[AUTH_FAILURES].failed(request.remote or "")  # one per batch; may be 429
    results: list[dict[str, Any] | None] = [None] * len(entries)
    unknown = error_body(codes.TOKEN_NOT_PERMITTED, errors=not_permitted(BODY_TOKEN))
    checked = []  # entries of known clients, and those without a well-formed token (9001...)
    for position, token in enumerate(tokens):
        if token is not None and clients[token] is None:
            results[position] = unknown
        else:
            checked.append(position)
    # ~60 µs a permit: off the event loop, so a 1000-permit batch does not stall it.
    validated = await asyncio.to_thread(
        _validate, [entries[i] for i in checked], request.app[SETTINGS]
    )
    permits: dict[int, PermitIn | InvalidPermitError] = dict(zip(checked, validated, strict=True))
    items, positions = await _authenticated(request, permits, clients, results, received_at)
    if items:
        # One job for the whole batch (not the micro-batcher, which would split it), timed
        # and counted like the micro-batches.
        outcomes = await asyncio.to_thread(request.app[ENQUEUE], items)
        # A full queue or Redis away raises: the whole batch gets 503 + Retry-After.
        for position, outcome in zip(positions, outcomes, strict=True):
            if isinstance(outcome, IdempotencyConflictError):
                results[position] = error_body(
                    codes.RECORD_EXISTS, errors={"Idempotency-Key": [str(outcome)]}
                )
            elif isinstance(outcome, Exception):
                raise outcome
            else:
                results[position] = success_body(outcome)
    return json_response(_reply([result or {} for result in results]))


def _entries(body: Any) -> list[Any]:
    if not isinstance(body, list) or not 1 <= len(body) <= BATCH_PUSH_MAX:
        raise ApiError(
            400,
            codes.NOT_PARSEABLE,
            f"The body must be a JSON array of 1 to {BATCH_PUSH_MAX} permits.",
            {"body": [f"Must be a JSON array of 1 to {BATCH_PUSH_MAX} permits."]},
        )
    return body


async def _clients(request: web.Request, tokens: list[str | None]) -> dict[str, ClientInfo | None]:
    """The client of each well-formed token the entries carry (None: unknown)."""
    cache = request.app[TOKENS]
    clients: dict[str, ClientInfo | None] = {}
    for token in tokens:
        if token is not None and token not in clients:
            clients[token] = await cache.authenticate(token)
    return clients


def _validate(entries: list[Any], settings: Settings) -> list[PermitIn | InvalidPermitError]:
    permits: list[PermitIn | InvalidPermitError] = []
    timezone, longest = settings.timezone, settings.max_permit_duration
    for entry in entries:
        try:
            permits.append(load_permit(entry, timezone=timezone, max_duration=longest))
        except InvalidPermitError as exc:
            permits.append(exc)
    return permits


async def _authenticated(
    request: web.Request,
    permits: dict[int, PermitIn | InvalidPermitError],
    clients: dict[str, ClientInfo | None],
    results: list[dict[str, Any] | None],
    received_at: datetime,
) -> tuple[list[PushItem], list[int]]:
    """The valid permits with known tokens, after each client's rate check; errors noted."""
    items: list[PushItem] = []
    positions: list[int] = []
    for position, permit in permits.items():
        if isinstance(permit, InvalidPermitError):
            results[position] = error_body(permit.code, errors=permit.errors)
        elif (client := clients.get(permit.api_token)) is None:
            results[position] = error_body(
                codes.TOKEN_NOT_PERMITTED, errors=not_permitted(BODY_TOKEN)
            )
        else:
            items.append(PushItem(client, permit, received_at))
            positions.append(position)
    limiter = request.app[LIMITER]
    costs = Counter(item.client for item in items)
    await asyncio.gather(*(limiter.check(client, cost) for client, cost in costs.items()))
    return items, positions


def _reply(results: list[dict[str, Any]]) -> dict[str, Any]:
    accepted = sum(result["status"] == "success" for result in results)
    rejected = len(results) - accepted
    status = "success" if not rejected else "partial" if accepted else "error"
    return {
        "status": status,
        "accepted": accepted,
        "rejected": rejected,
        "results": [{"index": i, **result} for i, result in enumerate(results)],
    }
