"""Alembic environment: runs on the connection that `shared.db.upgrade_database` passes."""

from alembic import context

from shared.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    # One transaction each: a data migration may commit in chunks (see 0004).
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
