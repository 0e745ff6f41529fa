"""Typed application state."""

from aiohttp import web
from redis import Redis

from ingest.auth import TokenCache
from ingest.batcher import Batcher
from ingest.metrics import ReceiverMetrics
from shared.config import Settings

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
TOKENS = web.AppKey("tokens", TokenCache)
BATCHER = web.AppKey("batcher", Batcher)
METRICS = web.AppKey("metrics", ReceiverMetrics)
