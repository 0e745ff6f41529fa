"""The migrations build the models' schema, on PostgreSQL and SQLite; migration 0007 both ways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from shared.config import Settings
from shared.db import alembic_config, make_engine, upgrade_database
from shared.models import Base


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def _client_index(engine: Engine) -> bool:
    """Whether ix_permits_client_id exists (on PostgreSQL: and is valid, as a CONCURRENTLY
    build that was cut short leaves it invalid)."""
    names = {index["name"] for index in inspect(engine).get_indexes("permits")}
    if engine.dialect.name != "postgresql":
        return "ix_permits_client_id" in names
    with engine.connect() as connection:
        valid = connection.execute(
            text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relname = 'ix_permits_client_id'"
            )
        ).scalar_one_or_none()
    return bool(valid)


@pytest.fixture(params=["postgresql", "sqlite"])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database at the head revision."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_engine")
        return
    engine = make_engine(Settings(database_url=f"sqlite:///{tmp_path / 'schema.sqlite3'}"))
    upgrade_database(engine)
    yield engine
    engine.dispose()


def test_the_migrations_build_the_models_schema(migrated: Engine) -> None:
    assert _differences(migrated) == []


def test_migration_0007_drops_the_client_index_and_its_downgrade_builds_it_again(
    migrated: Engine,
) -> None:
    assert not _client_index(migrated)
    try:
        with migrated.connect() as connection:
            command.downgrade(alembic_config(connection), "0006")
            connection.commit()
        assert _client_index(migrated)
    finally:
        upgrade_database(migrated)
    assert not _client_index(migrated)
