"""Typed application state: the aiohttp AppKeys of what create_app wires."""

from collections.abc import Callable
from typing import Any

from aiohttp import web
from redis import Redis

from ingest.metrics import ReceiverMetrics
from ingest.microbatch import MicroBatcher
from ingest.permit_enqueuer import PushItem
from ingest.ratelimit import RateLimiter
from ingest.read_store import ReadStore
from ingest.token_cache import TokenCache
from shared.config import Settings

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
TOKENS = web.AppKey("tokens", TokenCache)
PERMIT_BATCHER = web.AppKey("permit_batcher", MicroBatcher)  # pushes
# PermitEnqueuer.enqueue, timed for the metrics: the micro-batcher and the batch push.
ENQUEUE: web.AppKey[Callable[[list[PushItem]], list[str | Exception]]] = web.AppKey("enqueue")
OPERATION_BATCHER = web.AppKey("operation_batcher", MicroBatcher)  # updates, deletes
LIMITER = web.AppKey("limiter", RateLimiter)
READ_STORE = web.AppKey("read_store", ReadStore)
METRICS = web.AppKey("metrics", ReceiverMetrics)
# ingest.auth.AuthFailures (typed loosely: ingest.auth imports this module).
AUTH_FAILURES: web.AppKey[Any] = web.AppKey("auth_failures")
