"""The probes: /healthz (alive), /readyz (able to take pushes), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from prometheus_client.exposition import choose_encoder
from redis.exceptions import RedisError

from ingest.bodies import json_response
from ingest.state import METRICS, TOKENS

log = structlog.get_logger(__name__)


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
