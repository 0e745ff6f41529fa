"""The receiver's application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from redis import Redis

from ingest.auth import AuthFailures
from ingest.cors import setup_cors
from ingest.memory import RedisMemory
from ingest.metrics import ReceiverMetrics
from ingest.microbatch import MicroBatcher
from ingest.middlewares import error_middleware, metrics_middleware, request_id_middleware
from ingest.operation_enqueuer import OperationEnqueuer
from ingest.permit_enqueuer import PermitEnqueuer, PushItem
from ingest.ratelimit import RateLimiter
from ingest.read_store import NoDatabase, ReadStore
from ingest.routes import setup_routes
from ingest.state import (
    AUTH_FAILURES,
    ENQUEUE,
    LIMITER,
    METRICS,
    OPERATION_BATCHER,
    PERMIT_BATCHER,
    READ_STORE,
    REDIS,
    SETTINGS,
    TOKENS,
)
from ingest.token_cache import TokenCache
from shared.config import Settings
from shared.queue import JobWriter
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
    app.cleanup_ctx.append(_start_and_stop)
    setup_routes(app)
    setup_cors(app, settings)
    return app


def permit_batcher(
    flush: Callable[[list[PushItem]], list[str | Exception]], settings: Settings
) -> MicroBatcher[PushItem, str]:
    """The micro-batcher of single pushes: BATCH_WINDOW_MS, BATCH_WINDOW_MAX_MS,
    BATCH_MAX_PERMITS and ENQUEUE_CONCURRENCY (the bench's floor receiver uses it too)."""
    return MicroBatcher(
        "enqueue-permits",
        flush,
        window_s=settings.batch_window_ms / 1000,
        busy_window_s=settings.batch_window_max_ms / 1000,
        max_size=settings.batch_max_permits,
        concurrency=settings.enqueue_concurrency,
    )


async def _start_and_stop(app: web.Application) -> AsyncIterator[None]:
    """Open what the handlers use once the loop runs; at shutdown, flush and close it."""
    settings, redis = app[SETTINGS], app[REDIS]
    reads = _open_read_store(settings)
    app[READ_STORE] = reads if reads is not None else NoDatabase()
    app[TOKENS] = TokenCache(
        redis,
        ttl_s=settings.token_cache_s,
        read_clients=app[READ_STORE].clients,
        # A database read that may hold pushes waits no longer than the de-dup read does.
        read_timeout_s=settings.dedup_read_timeout_s,
    )
    app[AUTH_FAILURES] = AuthFailures()
    writer = await asyncio.to_thread(JobWriter.connect, redis, settings)
    memory = RedisMemory(redis, settings)
    await memory.start()
    enqueuer = PermitEnqueuer(
        writer,
        settings,
        first_ids=reads.start_first_ids if reads is not None else None,
        memory=memory.check,
    )
    app[ENQUEUE] = app[METRICS].timed_flush(enqueuer.enqueue)
    app[PERMIT_BATCHER] = permit_batcher(app[ENQUEUE], settings)
    app[LIMITER] = RateLimiter(redis, settings)
    operations = OperationEnqueuer(writer, settings, reads.owners if reads is not None else None)
    # Updates and deletes share the micro-batching machinery (their own batches and job).
    app[OPERATION_BATCHER] = MicroBatcher(
        "enqueue-operations",
        operations.enqueue,
        window_s=settings.batch_window_ms / 1000,
        max_size=settings.batch_max_permits,
        # One flush at a time: sequence numbers are taken in the flush, so two at once
        # could number consecutive windows out of their order of receipt.
        concurrency=1,
    )
    yield
    # aiohttp has stopped accepting requests; let the queued ones reach Redis.
    await app[PERMIT_BATCHER].close()
    await app[OPERATION_BATCHER].close()
    await app[LIMITER].close()
    await memory.stop()
    app[READ_STORE].close()
    redis.close()


def _open_read_store(settings: Settings) -> ReadStore | None:
    """The status and lookup reads, or None for a receiver without a database."""
    url = settings.reads_database_url
    if url is None:
        return None
    # Imported here: a receiver without a database never loads SQLAlchemy.
    from ingest.read_store_sql import SqlReadStore

    return SqlReadStore(settings, url)
