"""CORS: pages on other origins may call the push, update, delete and read endpoints.

aiohttp-cors answers the preflight ``OPTIONS`` of each endpoint and adds
``Access-Control-Allow-Origin`` to every reply of an allowed origin from an
``on_response_prepare`` hook, so the error middleware's JSON errors (400, 401, 429, 503,
...) carry it too and a page can read them. Credentials are never allowed: no endpoint
reads a cookie, the token travels in the body or the ``Authorization`` header.
"""

from __future__ import annotations

import aiohttp_cors
from aiohttp import web

from shared.config import Settings

# The endpoints a browser page calls, by route name (ingest/routes.py). Probes, metrics and
# the OpenAPI document are for operators and tools, not pages.
CORS_ROUTES = ("push", "push_batch", "update", "delete", "status", "active")
# Request headers a page may send: the seed's three, the two optional ones of the contract
# and the reads' bearer token.
ALLOW_HEADERS = (
    "Content-Type",
    "Accept",
    "Cache-Control",
    "Idempotency-Key",
    "X-Request-ID",
    "Authorization",
)
# Reply headers a page may read besides the simple ones (Content-Type, ...).
EXPOSE_HEADERS = ("Retry-After", "X-Request-ID")
# How long a browser may reuse a preflight's answer (Chromium caps it at 7200 s).
MAX_AGE_S = 3600


def setup_cors(app: web.Application, settings: Settings) -> None:
    """Answer CORS on ``CORS_ROUTES`` for the origins of ``CORS_ALLOW_ORIGINS``."""
    # ResourceOptions.__new__ has no annotations in aiohttp-cors 0.8.1.
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=MAX_AGE_S,
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(settings.cors_origins, options))
    resources = app.router.named_resources()
    for name in CORS_ROUTES:
        # A copy: cors.add adds the resource's OPTIONS route. Each method is enabled on its
        # own (GET brings HEAD), so a preflight for any other method is refused.
        for route in list(resources[name]):
            cors.add(route)
