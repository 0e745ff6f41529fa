"""Redis connections for the receiver, the workers and the commands.

REDIS_URL is either a plain server (redis://, rediss://, unix://) or the Sentinel form
(redis+sentinel://, shared/redis_url.py). In the Sentinel form each client is redis-py's
own ``Sentinel.master_for``: every new connection asks the Sentinels for the primary,
and a connection to a primary that was demoted (READONLY) or is gone is dropped, so the
next call reaches the new one. Nothing here discovers anything by hand.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from redis import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.connection import ConnectionInterface
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from shared.config import Settings
from shared.redis_url import SentinelUrl, is_sentinel_url, parse_sentinel_url

KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 5, 2, 3
# Linux's names; elsewhere the system's keepalive defaults apply.
KEEPALIVE_OPTIONS: dict[int, int] = {
    getattr(socket, name): value
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    )
    if hasattr(socket, name)
}


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool, waiting at most ``timeout`` s for a free connection.

    redis-py has no blocking Sentinel pool; this mixes its own two: the Sentinel pool's
    connection class, master discovery and ownership checks, the blocking pool's queue.
    (The MRO is SentinelConnectionPool, BlockingConnectionPool, ConnectionPool.)
    """

    def release(self, connection: ConnectionInterface) -> None:
        # A connection this pool does not own (it never reached the primary, or reached a
        # demoted one) goes back as an empty slot; redis-py's blocking pool also keeps the
        # object in its list of every connection made, so with no primary each failed call
        # left one behind for good.
        if not self.owns_connection(connection):  # type: ignore[no-untyped-call]
            with contextlib.suppress(ValueError):
                self._connections.remove(connection)
        super().release(connection)  # type: ignore[no-untyped-call]


def make_receiver_redis(settings: Settings, max_connections: int = 32) -> Redis:
    """A client whose calls fail within the timeout when Redis is away, never hang.

    BlockingConnectionPool waits for a free connection instead of raising past the
    limit (redis-py 8's default pool raises MaxConnectionsError).
    """
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": settings.redis_timeout_s,
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
        "health_check_interval": 30,
    }
    if is_sentinel_url(settings.redis_url):
        return _sentinel_master(
            parse_sentinel_url(settings.redis_url),
            settings.redis_timeout_s,
            connection_pool_class=BlockingSentinelConnectionPool,
            **options,
        )
    return Redis(connection_pool=BlockingConnectionPool.from_url(settings.redis_url, **options))


def make_worker_redis(settings: Settings) -> Redis:
    """A client for RQ workers: no read timeout, since RQ blocks on BLMOVE/BLPOP itself.

    TCP keepalive instead: a primary whose machine vanished (no reset, no answer) is found
    dead within about KEEPALIVE_IDLE_S + KEEPALIVE_COUNT x KEEPALIVE_INTERVAL_S, and the
    worker goes on to the next primary, rather than blocking in BLMOVE for ever.
    """
    return connect(
        settings.redis_url,
        socket_connect_timeout=5,
        health_check_interval=30,
        socket_keepalive=True,
        socket_keepalive_options=KEEPALIVE_OPTIONS,
    )


def connect(url: str, sentinel_timeout_s: float = 1.0, **options: Any) -> Redis:
    """A client for ``url`` in either form (what ``Redis.from_url`` is for a plain URL).

    ``options`` are redis-py's connection options (socket_timeout, ...); with Sentinel
    they apply to the primary's connections, and the Sentinels themselves get
    ``sentinel_timeout_s`` in all.
    """
    if is_sentinel_url(url):
        return _sentinel_master(parse_sentinel_url(url), sentinel_timeout_s, **options)
    return Redis.from_url(url, **options)


def _sentinel_master(
    config: SentinelUrl,
    timeout_s: float,
    connection_pool_class: type[SentinelConnectionPool] = SentinelConnectionPool,
    **options: Any,
) -> Redis:
    # discover_master asks the Sentinels one after another: each gets a share of the
    # timeout, so asking them all (every one away) still fails within it. No retries:
    # redis-py's Redis() would otherwise retry each Sentinel 3 times with backoff
    # (8 s measured with two Sentinels away), the next Sentinel is the retry.
    share_s = timeout_s / len(config.sentinels)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(config.sentinels),
        sentinel_kwargs={
            "socket_timeout": share_s,
            "socket_connect_timeout": share_s,
            "username": config.sentinel_username,
            "password": config.sentinel_password,
            "retry": Retry(NoBackoff(), 0),
        },
    )
    return sentinel.master_for(  # type: ignore[no-any-return, no-untyped-call]
        config.service_name,
        connection_pool_class=connection_pool_class,
        db=config.db,
        username=config.username,
        password=config.password,
        **options,
    )
