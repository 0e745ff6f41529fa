"""Settings: one frozen dataclass, read from the environment once at process start."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.constants import JOB_FAILURE_TTL_S
from shared.errors import ConfigError
from shared.redis_url import is_sentinel_url, parse_sentinel_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///permit-push.sqlite3"
DURABLE_ACK_MODES = ("off", "waitaof", "replica", "replica+waitaof", "auto")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SENTINEL_PASSWORD = re.compile(r"([?&]sentinel_password=)[^&]*")
# What a browser sends in its Origin header: scheme://host[:port].
_ORIGIN = re.compile(r"https?://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:[0-9]{1,5})?")


def redact_url(url: str) -> str:
    """``url`` with the password of its user part (scheme://user:PASSWORD@host) and a
    ``sentinel_password=`` option as ***, for error messages and logs; a URL without
    either is returned as it is."""
    url = _SENTINEL_PASSWORD.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process needs to know about its deployment.

    Each field is read from the environment variable of the same name in upper case
    (``redis_url`` from ``REDIS_URL``); tests build ``Settings(...)`` directly.
    """

    redis_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_DATABASE_URL
    queue_name: str = "permits"
    log_format: str = "json"  # json | console
    log_level: str = "INFO"
    # Receiver.
    max_body_bytes: int = 64 * 1024
    # How long a push waits for others to share its batch while no batch is in flight.
    # 0: it goes at once, and pushes arriving meanwhile gather behind it (group commit);
    # a wait bought no throughput and cost every lone push its length (docs/performance.md).
    batch_window_ms: float = 0.0
    # While pushes wait behind a batch in flight (a busy receiver), the next batch waits up
    # to this long for more to join: from 0.125 ms, doubling with each busy batch; a push
    # that finds the receiver idle resets it. Larger batches cost less CPU a push
    # (docs/performance.md); this bounds what the wait adds to a push's latency.
    batch_window_max_ms: float = 1.0
    batch_max_permits: int = 200
    # Batches in flight to Redis per receiver process. One measured best on 2 cores: while it
    # is in flight the next batch gathers (group commit), so batches grow with load.
    enqueue_concurrency: int = 1
    redis_timeout_s: float = 1.0
    retry_after_s: int = 2
    token_cache_s: float = 5.0
    # Backpressure: above this many batch jobs waiting (queued plus scheduled retries) the
    # receiver answers 503; 0 turns the limit off. docs/reliability.md has the sizing.
    max_queue_depth: int = 20_000
    # Redis answers resends with their first reference id this long (the first may still be
    # queued or just stored); past it the database does, one read per micro-batch.
    dedup_window_s: int = 15 * 60
    # The enqueue waits this long at most for that read (a hung database must not stall
    # pushes: the push is accepted with a new id, which the worker makes an alias).
    dedup_read_timeout_s: float = 0.5
    # Above this share of Redis's maxmemory the receiver answers 503 (0: off; no maxmemory
    # set: off too). Read every REDIS_MEMORY_CHECK_S, never per request.
    redis_memory_share: float = 0.9
    redis_memory_check_s: float = 1.0
    # What Redis must confirm before a push's 200 (shared/durability.py): off | waitaof
    # (fsynced) | replica (held by DURABLE_ACK_REPLICAS replicas) | replica+waitaof | auto.
    durable_ack: str = "off"
    durable_ack_replicas: int = 1
    # How long a batch waits for that confirmation before its pushes get 503; less than
    # REDIS_TIMEOUT_S, so Redis answers before the socket gives up.
    durable_ack_timeout_s: float = 0.5
    # Where several receiver processes on one port keep their metrics for /metrics to sum
    # (prometheus-client reads this variable itself, too); `serve --processes N` makes a
    # private one when it is unset.
    prometheus_multiproc_dir: str = ""
    # Times carry no offset; the contract says they are UTC unless configured otherwise.
    # A local time in a DST gap or overlap of this zone is refused (9007/9005).
    default_timezone: str = "UTC"
    # The longest permit: an end time more than this many days after the start gets 9005.
    max_permit_days: int = 366
    # A batch push (1..1000 permits) may be this large; single pushes keep max_body_bytes.
    max_batch_body_bytes: int = 2 * 1024 * 1024
    # Per-client token bucket (a client's own setting wins); 0 turns the limit off.
    rate_limit_per_s: float = 1000.0
    rate_limit_burst: int = 2000
    # Status and enforcement reads: "" reads DATABASE_URL, "none" never opens a database
    # (pushes, updates and deletes still work; the read endpoints answer 503).
    read_database_url: str = ""
    read_threads: int = 4
    # Enforcement lookup: a permit still counts this many seconds after its end time.
    lookup_grace_s: int = 0
    # Enforcement lookup: at most this many permits in one reply ("truncated": true beyond).
    lookup_max_permits: int = 100
    # Browser pages allowed to call the API (CORS): "*" (any origin) or a comma-separated
    # list of origins such as "https://kiosk.example.net". Any origin is safe by default:
    # the token travels in the body or the Authorization header, never in a cookie, and
    # credentials are never allowed.
    cors_allow_origins: str = "*"
    # Slow clients: a request's headers and body must arrive within this many seconds of
    # its first byte, else 408 and the connection closes; 0 turns the deadline off. A
    # connection with no request begun (new, or between requests) closes quietly after
    # keepalive_timeout_s.
    request_read_timeout_s: float = 10.0
    keepalive_timeout_s: float = 75.0
    # A second port of the receiver for /readyz and /metrics (and /healthz) only; the main
    # port then answers 404 for /readyz and /metrics. 0: both on the main port.
    probes_port: int = 0
    # Worker.
    token_publish_s: float = 30.0
    stats_publish_s: float = 15.0  # disconnected / dead-letter counts for /metrics
    zone_cache_s: float = 5.0
    job_timeout_s: int = 300
    # A worker runs up to this many permit batches already waiting in the queue as one,
    # their permits in one database transaction (each batch keeps its own RQ job, result
    # and retry); 1 runs each alone. docs/performance.md has the measurement behind it.
    worker_jobs_per_txn: int = 16
    # A finished batch job (and its result) is kept this long for `rq info` and the
    # dashboard; docs/performance.md has the measurement behind the default (0 costs more
    # Redis commands per job: RQ then deletes the job field by field).
    job_result_ttl_s: int = 60
    # A batch whose worker stopped heart-beating this long ago is run again (RQ's
    # StartedJobRegistry clean-up); workers look for such batches this often.
    abandoned_job_s: int = 30
    maintenance_interval_s: int = 10
    # A batch keeps retrying an unreachable database this long before RQ's Retry backoff
    # takes it over.
    db_retry_s: float = 30.0
    # A failed batch is moved into dead_letters this long after it failed, before RQ's
    # failed registry drops it (JOB_FAILURE_TTL_S, 30 days) with its permits.
    failed_dead_letter_s: int = 7 * 24 * 60 * 60

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Self:
        """Build settings from environment variables, failing loudly on a bad value."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(field.name.upper())
            if raw is None or raw == "":
                continue
            kind: type = type(field.default)  # every field has a default of its type
            try:
                values[field.name] = kind(raw)
            except ValueError:
                raise ConfigError(
                    f"{field.name.upper()}={raw!r} is not a valid {kind.__name__}"
                ) from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject settings that would only fail later, far from their cause."""
        if is_sentinel_url(self.redis_url):
            parse_sentinel_url(self.redis_url)  # raises ConfigError, naming what is wrong
        elif not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"REDIS_URL={redact_url(self.redis_url)!r} must start with redis://, "
                "rediss://, unix:// or redis+sentinel://"
            )
        else:
            self._validate_port()
        if "://" not in self.database_url:
            # No scheme, so no user part to find: say nothing of the value itself.
            raise ConfigError("DATABASE_URL is not a database URL (scheme://...)")
        if self.log_format not in ("json", "console"):
            raise ConfigError(f"LOG_FORMAT={self.log_format!r} must be json or console")
        if not self.queue_name:
            raise ConfigError("QUEUE_NAME must not be empty")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(
                f"LOG_LEVEL={self.log_level!r} must be one of {', '.join(LOG_LEVELS)}"
            )
        if self.durable_ack not in DURABLE_ACK_MODES:
            raise ConfigError(
                f"DURABLE_ACK={self.durable_ack!r} must be one of {', '.join(DURABLE_ACK_MODES)}"
            )
        for name, minimum in _AT_LEAST.items():
            if getattr(self, name) < minimum:
                raise ConfigError(f"{name.upper()}={getattr(self, name)!r} must be >= {minimum}")
        for name in _ABOVE_ZERO:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.upper()}={getattr(self, name)!r} must be > 0")
        if self.durable_ack != "off" and self.durable_ack_timeout_s >= self.redis_timeout_s:
            raise ConfigError(
                f"DURABLE_ACK_TIMEOUT_S={self.durable_ack_timeout_s!r} must be less than "
                f"REDIS_TIMEOUT_S={self.redis_timeout_s!r}"
            )
        for origin in self.cors_origins:
            # A browser sends its origin as scheme://host[:port], nothing more: a path, a
            # trailing slash or a pattern would silently never match.
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ConfigError(
                    f"CORS_ALLOW_ORIGINS={self.cors_allow_origins!r}: {origin!r} is not * "
                    "or an origin like https://kiosk.example.net"
                )
        if "*" in self.cors_origins and len(self.cors_origins) > 1:
            raise ConfigError(
                f"CORS_ALLOW_ORIGINS={self.cors_allow_origins!r}: * already allows any origin"
            )
        if not 60 <= self.failed_dead_letter_s < JOB_FAILURE_TTL_S - 24 * 60 * 60:
            raise ConfigError(
                f"FAILED_DEAD_LETTER_S={self.failed_dead_letter_s!r} must be from 60 to a day"
                f" less than RQ's failed-job lifetime ({JOB_FAILURE_TTL_S} s)"
            )
        try:
            ZoneInfo(self.default_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"DEFAULT_TIMEZONE={self.default_timezone!r} is unknown") from None

    def _validate_port(self) -> None:
        try:
            urlsplit(self.redis_url).port  # noqa: B018 - parsing is the check
        except ValueError:
            raise ConfigError(
                f"REDIS_URL={redact_url(self.redis_url)!r} has an invalid port"
            ) from None

    @property
    def cors_origins(self) -> tuple[str, ...]:
        """CORS_ALLOW_ORIGINS as a tuple: ("*",) or the listed origins, in lower case.

        Browsers send the scheme and host in lower case, and origins are compared as
        strings, so ``https://Kiosk.example.net`` is kept as ``https://kiosk.example.net``.
        """
        return tuple(origin.strip().lower() for origin in self.cors_allow_origins.split(","))

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.default_timezone)

    @property
    def max_permit_duration(self) -> timedelta:
        return timedelta(days=self.max_permit_days)

    @property
    def reads_database_url(self) -> str | None:
        """The database the receiver's read endpoints use, or None when they have none."""
        if self.read_database_url.lower() == "none":
            return None
        return self.read_database_url or self.database_url


# The smallest value each numeric setting may take: anything less fails later, far from
# its cause (an executor of 0 threads, a bucket that never fills, a negative TTL). 0 turns
# MAX_QUEUE_DEPTH and RATE_LIMIT_PER_S off. A killed worker's batch is found only after
# ABANDONED_JOB_S, which must outlast a few heartbeats.
_AT_LEAST: dict[str, float] = {
    "max_body_bytes": 1,
    "max_batch_body_bytes": 1,
    "batch_window_ms": 0,
    "batch_window_max_ms": 0,
    "batch_max_permits": 1,
    "enqueue_concurrency": 1,
    "durable_ack_replicas": 1,
    "retry_after_s": 1,
    "token_cache_s": 0,
    "max_queue_depth": 0,
    "dedup_window_s": 60,
    "redis_memory_share": 0,
    "rate_limit_per_s": 0,
    "rate_limit_burst": 1,
    "read_threads": 1,
    "lookup_grace_s": 0,
    "lookup_max_permits": 1,
    "max_permit_days": 1,
    "zone_cache_s": 0,
    "job_timeout_s": 1,
    "worker_jobs_per_txn": 1,
    "job_result_ttl_s": 0,
    "abandoned_job_s": 3,
    "maintenance_interval_s": 1,
    "db_retry_s": 0,
    "request_read_timeout_s": 0,
    "probes_port": 0,
}
# Timeouts and intervals: 0 would mean "never wait" or a busy loop.
_ABOVE_ZERO = (
    "redis_timeout_s",
    "token_publish_s",
    "stats_publish_s",
    "redis_memory_check_s",
    "dedup_read_timeout_s",
    "durable_ack_timeout_s",
    "keepalive_timeout_s",
)
