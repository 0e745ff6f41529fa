"""The migrations build the models' schema, on PostgreSQL and SQLite; migration 0007 both ways."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from shared.config import Settings
from shared.db import alembic_config, make_engine, upgrade_database
from shared.models import Base


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def test_the_migrations_build_the_models_schema_on_postgresql(pg_engine: Engine) -> None:
    assert _differences(pg_engine) == []


def test_the_migrations_build_the_models_schema_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(Settings(database_url=f"sqlite:///{tmp_path / 'schema.sqlite3'}"))
    try:
        upgrade_database(engine)
        assert _differences(engine) == []
    finally:
        engine.dispose()


def _client_index(engine: Engine) -> tuple[bool, ...] | None:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relname = 'ix_permits_client_id'"
            )
        ).one_or_none()
    return None if row is None else tuple(row)


def test_migration_0007_drops_the_client_index_and_its_downgrade_builds_it_again(
    pg_engine: Engine,
) -> None:
    assert _client_index(pg_engine) is None
    try:
        with pg_engine.connect() as connection:
            command.downgrade(alembic_config(connection), "0006")
            connection.commit()
        assert _client_index(pg_engine) == (True,)  # built, and valid
    finally:
        upgrade_database(pg_engine)
    assert _client_index(pg_engine) is None
