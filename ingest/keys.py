"""Typed application state."""

from collections.abc import Callable

from aiohttp import web
from redis import Redis

from ingest.auth import TokenCache
from ingest.batcher import Batcher
from ingest.metrics import ReceiverMetrics
from ingest.queue import PushItem
from ingest.ratelimit import RateLimiter
from ingest.reading import PermitReads
from shared.config import Settings

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
TOKENS = web.AppKey("tokens", TokenCache)
BATCHER = web.AppKey("batcher", Batcher)
# PermitEnqueuer.enqueue, timed for the metrics: the micro-batcher and the batch push.
ENQUEUE: web.AppKey[Callable[[list[PushItem]], list[str | Exception]]] = web.AppKey("enqueue")
OPERATIONS = web.AppKey("operations", Batcher)  # updates and deletes
LIMITER = web.AppKey("limiter", RateLimiter)
READS = web.AppKey("reads", PermitReads)
METRICS = web.AppKey("metrics", ReceiverMetrics)
