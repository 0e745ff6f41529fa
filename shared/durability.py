"""Durable acknowledgement: what Redis must confirm about a batch before its 200.

DURABLE_ACK picks it (docs/reliability.md, "Durable acknowledgement"):

- ``off``: Redis's reply to the batch's transaction, nothing more.
- ``waitaof``: ``WAITAOF 1 0``: Redis fsynced the batch to its AOF. Redis 7.2+ or Valkey,
  with ``appendonly yes``.
- ``replica``: ``WAIT N``: N replicas (DURABLE_ACK_REPLICAS) hold the batch, so it
  survives the loss of the primary's machine (a Sentinel failover). Any Redis with
  replication.
- ``replica+waitaof``: ``WAITAOF 1 N``: fsynced by the primary and by N replicas. Redis
  7.2+ or Valkey, with AOF on the primary and on the replicas (a replica without AOF never
  counts, and the primary cannot say at start whether its replicas have it).
- ``auto``: ``waitaof`` where the server can do it, else ``off`` (logged, with why).

WAIT and WAITAOF count what their own connection wrote, so they go on the connection of
the batch's transaction, right after its EXEC (shared/queue.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from redis import Redis
from redis.exceptions import ResponseError

from shared.config import Settings
from shared.errors import ConfigError, QueueUnavailableError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DurableAck:
    """What the writer waits for after each batch's transaction (nothing when ``waits`` is
    false)."""

    local_fsync: bool = False
    replicas: int = 0
    timeout_ms: int = 0

    @property
    def waits(self) -> bool:
        return self.local_fsync or self.replicas > 0

    @property
    def name(self) -> str:
        return "WAITAOF" if self.local_fsync else "WAIT"

    @property
    def command(self) -> tuple[str | int, ...]:
        if self.local_fsync:
            return (self.name, 1, self.replicas, self.timeout_ms)
        return (self.name, self.replicas, self.timeout_ms)

    def check(self, reply: Any) -> None:
        """Raise QueueUnavailableError (503 for a push) unless ``reply`` to ``command`` says
        the batch is as durable as asked. A refused batch may still be stored: the
        client's resend maps to the same reference id."""
        if self.local_fsync:
            local, replicas = (int(count) for count in reply)
            if local < 1:
                raise QueueUnavailableError("Redis did not fsync the batch in time")
        else:
            replicas = int(reply)
        if replicas < self.replicas:
            raise QueueUnavailableError(
                f"{replicas} of {self.replicas} replicas acknowledged the batch in time"
            )


NO_WAIT = DurableAck()


@dataclass(frozen=True, slots=True)
class ServerSupport:
    """What the Redis server can do for durability, as it says itself."""

    version: str
    has_waitaof: bool
    aof_enabled: bool
    appendfsync: str | None  # None when CONFIG GET is refused (managed Redis)
    is_primary: bool
    replicas: int  # replicas connected now

    @property
    def waitaof_usable(self) -> bool:
        return self.has_waitaof and self.aof_enabled


def probe(redis: Redis) -> ServerSupport:
    """Ask the server for its version, role, replicas, WAITAOF and AOF settings."""
    server = redis.info("server")
    persistence = redis.info("persistence")
    replication = redis.info("replication")
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
    return ServerSupport(
        version=str(server.get("valkey_version") or server.get("redis_version", "?")),
        has_waitaof=has_waitaof,
        aof_enabled=str(persistence.get("aof_enabled", "0")) == "1",
        appendfsync=appendfsync,
        is_primary=replication.get("role") == "master",
        replicas=int(replication.get("connected_slaves", 0)),
    )


def resolve_durable_ack(settings: Settings, redis: Redis) -> DurableAck:
    """What the writer should wait for after each batch; fail or warn if the server cannot.

    A mode the server cannot do refuses to start (a silent downgrade of a durability
    promise is worse than a failed start), except ``auto``, which logs why it falls back
    and what the server does instead. Fewer replicas than asked for is not refused: they
    may connect later (after a failover, say); until then every push gets 503.
    """
    mode = settings.durable_ack
    if mode == "off":
        return NO_WAIT
    support = probe(redis)
    timeout_ms = max(1, round(settings.durable_ack_timeout_s * 1000))
    wants_fsync = mode in ("waitaof", "replica+waitaof", "auto")
    replicas = settings.durable_ack_replicas if mode.startswith("replica") else 0
    if wants_fsync and not support.waitaof_usable:
        reason = (
            f"Redis {support.version} has no WAITAOF (needs 7.2+, or Valkey)"
            if not support.has_waitaof
            else "Redis runs with appendonly no"
        )
        if mode != "auto":
            raise ConfigError(
                f"DURABLE_ACK={mode}: {reason}; use a server that supports it"
                + (
                    ", or DURABLE_ACK=replica"
                    if replicas
                    else ", or set DURABLE_ACK=off and run Redis with appendonly yes and "
                    "appendfsync always"
                )
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
        return NO_WAIT
    if replicas and not support.is_primary:
        raise ConfigError(
            f"DURABLE_ACK={mode}: REDIS_URL points at a replica; point it at the primary "
            "(or at the Sentinels, redis+sentinel://)"
        )
    if replicas and support.replicas < replicas:
        log.warning(
            "durable_ack_replicas_missing",
            wanted=replicas,
            connected=support.replicas,
            consequence="pushes get 503 until enough replicas connect",
        )
    ack = DurableAck(local_fsync=wants_fsync, replicas=replicas, timeout_ms=timeout_ms)
    log.info("durable_ack", mode=mode, redis_version=support.version, command=ack.command)
    return ack
