"""Operations endpoints (/healthz, /readyz, /metrics) and the request-metrics middleware."""

from __future__ import annotations

import asyncio
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.exposition import choose_encoder
from redis.exceptions import RedisError

from ingest.bodies import ERROR_CODE, json_response
from ingest.state import METRICS, TOKENS

log = structlog.get_logger(__name__)

# Any other method a client sends is counted as "other": labels must stay few.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Requests that read (probes, scrapes, browsers, scanners) are not pushes: an error reply
# to one of them is not a rejected push.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process runs and its event loop answers."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: Redis answers and this receiver has the token set; 503 otherwise.

    Reloads the token set, which is the readiness check itself: it reads Redis, and it
    tells whether a worker has published the tokens (until then nobody can push).
    """
    tokens = request.app[TOKENS]
    try:
        await tokens.refresh()
    except RedisError as exc:
        body = {"status": "unready", "redis": f"unreachable ({type(exc).__name__})"}
        return json_response({**body, "tokens": "unknown"}, status=503)
    if not tokens.loaded:
        body = {"status": "unready", "redis": "ok", "tokens": "not published yet"}
        return json_response(body, status=503)
    return json_response({"status": "ready", "redis": "ok", "tokens": "loaded"})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text (or OpenMetrics, if asked for)."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    # Reading the queue figures is a blocking Redis call: keep it off the event loop.
    body = await asyncio.to_thread(encode, request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": content_type})


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by route, method and status; time it; count rejected pushes.

    Sits inside the request id middleware and outside the error middleware, so it sees
    the reply the client gets, and its one log line carries the request id.
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
        instruments = request.app[METRICS]
        instruments.requests.labels(route, method, str(status)).inc()
        instruments.request_duration.labels(route).observe(elapsed_s)
        if error_code is not None and method not in _READS:
            instruments.rejected.labels(str(error_code)).inc()
        if method not in _READS:
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
