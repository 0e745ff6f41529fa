"""Engines and sessions for PostgreSQL (production) and SQLite (embedded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Insert, create_engine, event, insert, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from shared.config import Settings, redact_url
from shared.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(settings: Settings, **kwargs: Any) -> Engine:
    """An engine for DATABASE_URL; SQLite gets WAL and a busy timeout for its writers.

    ``hide_parameters``: a database error's text would otherwise carry the statement's
    parameters, i.e. whole permits, into tracebacks, logs and RQ's failed job registry.
    """
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        raise ConfigError(
            f"DATABASE_URL={redact_url(settings.database_url)!r} is not a database URL"
        ) from None
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the receiver's CLI and the worker read while a batch is written.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def insert_ignoring_duplicates(
    session: Session, model: type[DeclarativeBase], keys: list[str]
) -> Insert:
    """INSERT that skips rows whose ``keys`` are already stored (PostgreSQL, SQLite).

    On other databases a duplicate fails; callers split the batch down to the failing rows.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing(index_elements=keys)
    if dialect == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing(index_elements=keys)
    return insert(model)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` on ``engine``.

    One transaction per migration (env.py), so a data migration may commit in chunks
    (0004's autocommit block) instead of holding one transaction over a whole table.
    """
    from alembic import command

    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), revision)
        connection.commit()


def alembic_config(connection: Connection) -> Any:
    """The Alembic configuration that runs the migrations on ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config
