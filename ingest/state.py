"""Typed application state."""

from collections.abc import Callable

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
BATCHER = web.AppKey("batcher", MicroBatcher)
# PermitEnqueuer.enqueue, timed for the metrics: the micro-batcher and the batch push.
ENQUEUE: web.AppKey[Callable[[list[PushItem]], list[str | Exception]]] = web.AppKey("enqueue")
OPERATIONS = web.AppKey("operations", MicroBatcher)  # updates and deletes
LIMITER = web.AppKey("limiter", RateLimiter)
READS = web.AppKey("reads", ReadStore)
METRICS = web.AppKey("metrics", ReceiverMetrics)
