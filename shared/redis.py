"""Redis connections for the receiver and the workers."""

from __future__ import annotations

from redis import BlockingConnectionPool, Redis

from shared.config import Settings


def make_receiver_redis(settings: Settings, max_connections: int = 32) -> Redis:
    """A client whose calls fail within the timeout when Redis is away, never hang.

    BlockingConnectionPool waits for a free connection instead of raising past the
    limit (redis-py 8's default pool raises MaxConnectionsError).
    """
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)


def make_worker_redis(settings: Settings) -> Redis:
    """A client for RQ workers: no read timeout, since RQ blocks on BLMOVE/BLPOP itself."""
    return Redis.from_url(settings.redis_url, socket_connect_timeout=5, health_check_interval=30)
