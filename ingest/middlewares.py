"""Every request: its id, its metrics and log line, and any failure as the JSON error body."""

from __future__ import annotations

import itertools
import os
import re
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from ingest.bodies import ERROR_CODE, ApiError, error_response
from ingest.state import METRICS, SETTINGS
from shared import codes
from shared.errors import (
    IdempotencyConflictError,
    QueueUnavailableError,
    RateLimitedError,
    ReadsUnavailableError,
    RecordNotFoundError,
    TokensNotLoadedError,
)
from shared.schemas import InvalidPermitError

log = structlog.get_logger(__name__)

# Any other method a client sends is counted as "other": labels must stay few.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Requests that read (probes, scrapes, browsers, scanners) are not pushes: an error reply
# to one of them is not a rejected push.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# HTTP errors aiohttp raises itself (routing, body size) and the message each gets.
_HTTP_MESSAGES = {
    404: "No such endpoint.",
    405: "That method is not allowed on this endpoint.",
    413: "The request body is too large.",
    # REQUEST_READ_TIMEOUT_S passed while the handler read the body (ingest/server.py).
    408: "The request was not received in time (Request Timeout).",
}


class _RequestIds:
    """Request ids, 32 hex digits: 8 random bytes drawn once per process, then a counter.

    Unique across processes and restarts like a uuid4, without an ``os.urandom`` system
    call per request (uuid4 per request and per permit was 7% of the receiver's CPU).
    """

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_request_ids = _RequestIds()


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id to every log line of the request and echo it to the client."""
    sent = request.headers.get("X-Request-ID", "")
    request_id = sent if sent and _REQUEST_ID.fullmatch(sent) else _request_ids.new()
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        response = await handler(request)
    response.headers["X-Request-ID"] = request_id
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map exceptions to JSON errors; never an HTML page or a traceback."""
    retry_after_s = request.app[SETTINGS].retry_after_s
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except InvalidPermitError as exc:
        log.info("push_rejected", error_code=exc.code, fields=sorted(exc.errors))
        return error_response(400, exc.code, errors=exc.errors)
    except IdempotencyConflictError:
        return error_response(
            422,
            codes.RECORD_EXISTS,
            message="The Idempotency-Key was already used with a different body.",
            errors={"Idempotency-Key": ["Was already used with a different body."]},
        )
    except RecordNotFoundError:
        return error_response(
            404, codes.RECORD_NOT_FOUND, errors={"referenceID": ["No permit of yours has it."]}
        )
    except RateLimitedError as exc:
        message = None
        if exc.most is not None:
            message = f"A batch may hold at most {exc.most} permits of this client (its burst)."
        return error_response(
            429, codes.RATE_LIMITED, message=message, retry_after_s=exc.retry_after_s
        )
    except (
        QueueUnavailableError,
        TokensNotLoadedError,
        ReadsUnavailableError,
        RedisError,
    ) as exc:
        # Our own errors carry a reason worth reading (no replica answered, ...); a
        # RedisError's text may hold an address, so only its type.
        reason = str(exc) if isinstance(exc, QueueUnavailableError) else None
        log.warning("push_unavailable", error=type(exc).__name__, reason=reason)
        return error_response(503, codes.UNAVAILABLE, retry_after_s=retry_after_s)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = _HTTP_MESSAGES.get(exc.status, exc.reason)
        response = error_response(exc.status, codes.NOT_PARSEABLE, message=message)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        if exc.status == 408:
            response.force_close()  # the rest of the body is not coming in time
        return response
    except Exception:
        log.exception("request_failed")
        return error_response(500, codes.INTERNAL)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by route, method and status; time it; count rejected pushes.

    Sits inside the request id middleware and outside the error middleware, so it sees
    the reply the client gets, and its log line (refused and failed requests only)
    carries the request id.
    """
    started = time.perf_counter()
    status, error_code = 500, None
    try:
        response = await handler(request)
        status, error_code = response.status, response.get(ERROR_CODE)
        return response
    except web.HTTPException as exc:  # redirects and the like, raised past the error body
        status = exc.status
        raise
    finally:
        elapsed_s = time.perf_counter() - started
        route = _route(request)
        method = request.method if request.method in _METHODS else "other"
        request.app[METRICS].request_done(
            route, method, status, error_code if method not in _READS else None, elapsed_s
        )
        # A push that succeeded is logged with its batch (``permits_enqueued``, with the
        # reference ids: ingest/permit_enqueuer.py), not here: a line per request was 15% of
        # the receiver's CPU at peak. Refusals and failures keep their line.
        if method not in _READS and status >= 400:
            log.info(
                "request_handled",
                route=route,
                method=method,
                status=status,
                error_code=error_code,
                duration_ms=round(elapsed_s * 1000, 2),
            )


def _route(request: web.Request) -> str:
    """The route's name, else its path pattern; "unmatched" for 404/405 (any path)."""
    route = request.match_info.route
    if route.name:
        return route.name
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"
