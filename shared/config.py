"""Settings: one frozen dataclass, read from the environment once at process start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.errors import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///permit-push.sqlite3"


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
    batch_window_ms: float = 2.0
    batch_max_permits: int = 200
    enqueue_concurrency: int = 4
    redis_timeout_s: float = 1.0
    retry_after_s: int = 2
    token_cache_s: float = 5.0
    # Where several receiver processes on one port keep their metrics for /metrics to sum
    # (prometheus-client reads this variable itself, too); `serve --processes N` makes a
    # private one when it is unset.
    prometheus_multiproc_dir: str = ""
    # Times carry no offset; the contract says they are UTC unless configured otherwise.
    default_timezone: str = "UTC"
    # Worker.
    token_publish_s: float = 30.0
    stats_publish_s: float = 15.0  # disconnected / dead-letter counts for /metrics
    zone_cache_s: float = 5.0
    job_timeout_s: int = 300

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
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"REDIS_URL={self.redis_url!r} must start with redis://")
        try:
            urlsplit(self.redis_url).port  # noqa: B018 - parsing is the check
        except ValueError:
            raise ConfigError(f"REDIS_URL={self.redis_url!r} has an invalid port") from None
        if "://" not in self.database_url:
            raise ConfigError(f"DATABASE_URL={self.database_url!r} is not a database URL")
        if self.log_format not in ("json", "console"):
            raise ConfigError(f"LOG_FORMAT={self.log_format!r} must be json or console")
        if self.batch_max_permits < 1 or self.batch_window_ms < 0:
            raise ConfigError("BATCH_MAX_PERMITS must be >= 1 and BATCH_WINDOW_MS >= 0")
        try:
            ZoneInfo(self.default_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"DEFAULT_TIMEZONE={self.default_timezone!r} is unknown") from None

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.default_timezone)
