"""Connections for commands, failing early, in one line, when a service is away."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit

from redis import Redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings, redact_url
from shared.db import make_engine, make_sessionmaker
from shared.errors import PermitPushError
from shared.redis import make_receiver_redis


class ServiceUnavailableError(PermitPushError):
    """Redis or the database cannot be reached."""


def connect_redis(settings: Settings) -> Redis:
    """A Redis client for a command, known to answer."""
    redis = make_receiver_redis(settings)
    require_redis(redis, settings.redis_url)
    return redis


@contextlib.contextmanager
def database_sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions for a command; the engine's connections are closed when it is done."""
    engine = make_engine(settings)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def require_redis(redis: Redis, url: str) -> None:
    try:
        redis.ping()
    except Exception as exc:
        raise ServiceUnavailableError(
            f"cannot reach Redis at {redact_url(url)}: {_no_password(exc, url)}"
        ) from None


def require_database(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        reason = _no_password(getattr(exc, "orig", exc), str(engine.url.password or ""))
        reason = reason.strip().splitlines()[0] if reason.strip() else type(exc).__name__
        url = engine.url.render_as_string(hide_password=True)
        raise ServiceUnavailableError(f"cannot reach the database at {url}: {reason}") from None


def _no_password(exc: BaseException, url_or_password: str) -> str:
    """The error's text, with the URL's password (if it somehow appears) as ***."""
    text = str(exc)
    password = url_or_password
    if "://" in url_or_password:
        password = urlsplit(url_or_password).password or ""
    return text.replace(password, "***") if password else text
