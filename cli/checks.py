"""Fail early, in one line, when a service a command needs is away."""

from __future__ import annotations

from redis import Redis
from sqlalchemy import Engine, text

from shared.errors import PermitPushError


class ServiceUnavailableError(PermitPushError):
    """Redis or the database cannot be reached."""


def require_redis(redis: Redis, url: str) -> None:
    try:
        redis.ping()
    except Exception as exc:
        raise ServiceUnavailableError(f"cannot reach Redis at {_safe(url)}: {exc}") from None


def require_database(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        url = engine.url.render_as_string(hide_password=True)
        raise ServiceUnavailableError(f"cannot reach the database at {url}: {reason}") from None


def _safe(url: str) -> str:
    """The URL without its password, fit for an error message."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest
