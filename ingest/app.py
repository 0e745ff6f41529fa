"""The receiver's application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from redis import Redis

from ingest.auth import TokenCache
from ingest.batcher import Batcher
from ingest.keys import BATCHER, METRICS, REDIS, SETTINGS, TOKENS
from ingest.metrics import ReceiverMetrics
from ingest.middlewares import error_middleware, request_id_middleware
from ingest.ops import metrics_middleware
from ingest.queue import PermitEnqueuer
from ingest.routes import setup_routes
from shared.config import Settings
from shared.redis import make_receiver_redis


def create_app(settings: Settings, *, redis: Redis | None = None) -> web.Application:
    """Wire the receiver; ``redis`` lets tests pass a fakeredis client."""
    # aiohttp 3.14 refuses a body larger than client_max_size (older releases refused one
    # of exactly that size; test_push_contract pins the exact limit).
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_id_middleware, metrics_middleware, error_middleware],
    )
    app[SETTINGS] = settings
    app[REDIS] = redis if redis is not None else make_receiver_redis(settings)
    app[METRICS] = ReceiverMetrics(settings, app[REDIS])
    app.cleanup_ctx.append(_lifecycle)
    setup_routes(app)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings, redis = app[SETTINGS], app[REDIS]
    app[TOKENS] = TokenCache(redis, ttl_s=settings.token_cache_s)
    enqueuer = PermitEnqueuer(redis, settings)
    app[BATCHER] = Batcher(
        app[METRICS].timed_flush(enqueuer.enqueue),
        window_s=settings.batch_window_ms / 1000,
        max_size=settings.batch_max_permits,
        concurrency=settings.enqueue_concurrency,
    )
    yield
    # aiohttp has stopped accepting requests; let the queued ones reach Redis.
    await app[BATCHER].close()
    redis.close()
