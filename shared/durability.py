"""Durable acknowledgement: reply only once Redis has fsynced the batch (WAITAOF).

WAITAOF exists from Redis 7.2 (and in Valkey); it needs `appendonly yes`. On an older
server the same guarantee comes from the server's own `appendfsync always` (every write
is fsynced before Redis replies), at the cost docs/reliability.md measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from redis import Redis
from redis.exceptions import ResponseError

from shared.config import Settings
from shared.errors import ConfigError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AofSupport:
    """What the Redis server can do for durability, as it says itself."""

    version: str
    has_waitaof: bool
    aof_enabled: bool
    appendfsync: str | None  # None when CONFIG GET is refused (managed Redis)

    @property
    def waitaof_usable(self) -> bool:
        return self.has_waitaof and self.aof_enabled


def probe(redis: Redis) -> AofSupport:
    """Ask the server for its version, WAITAOF and AOF settings (four cheap commands)."""
    server = redis.info("server")
    persistence = redis.info("persistence")
    # WAITAOF 0 0 asks for nothing and returns at once where the command exists.
    try:
        redis.execute_command("WAITAOF", 0, 0, 1)  # type: ignore[no-untyped-call]
        has_waitaof = True
    except ResponseError:
        has_waitaof = False
    try:
        appendfsync: str | None = str(redis.config_get("appendfsync").get("appendfsync"))
    except ResponseError:
        appendfsync = None
    version = str(server.get("valkey_version") or server.get("redis_version", "?"))
    aof_enabled = str(persistence.get("aof_enabled", "0")) == "1"
    return AofSupport(version, has_waitaof, aof_enabled, appendfsync)


def resolve_wait_aof(settings: Settings, redis: Redis) -> bool:
    """Whether the receiver should WAITAOF after each batch; fail or warn if it cannot.

    DURABLE_ACK=waitaof refuses to start on a server that cannot do it (a silent
    downgrade of a durability promise is worse than a failed start); auto logs why it
    falls back and what the server does instead.
    """
    if settings.durable_ack == "off":
        return False
    support = probe(redis)
    if support.waitaof_usable:
        log.info("durable_ack", mode="waitaof", redis_version=support.version)
        return True
    reason = (
        f"Redis {support.version} has no WAITAOF (needs 7.2+)"
        if not support.has_waitaof
        else "Redis runs with appendonly no"
    )
    if settings.durable_ack == "waitaof":
        raise ConfigError(
            f"DURABLE_ACK=waitaof: {reason}; use a server that supports it, or set "
            "DURABLE_ACK=off and run Redis with appendonly yes and appendfsync always"
        )
    log.warning(
        "durable_ack_unavailable",
        reason=reason,
        appendfsync=support.appendfsync,
        aof_enabled=support.aof_enabled,
        fallback=(
            "Redis fsyncs every write itself"
            if support.aof_enabled and support.appendfsync == "always"
            else "a 200 means Redis acknowledged the batch; set appendfsync always to fsync"
        ),
    )
    return False
