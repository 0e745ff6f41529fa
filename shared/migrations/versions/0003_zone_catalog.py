"""zone catalog version; disconnected index ordered by id

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00

`zone_catalog` holds one row whose version every change to zones or aliases increments
(workers reload their zone map when it moves). The partial index on disconnected permits
gains `id` so that reconciliation walks one name's permits in keyset batches.
"""

import sqlalchemy as sa
from alembic import op

DISCONNECTED = sa.text("zone_id IS NULL AND zone_normalized IS NOT NULL")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zone_catalog",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zone_catalog")),
    )
    op.execute(
        "INSERT INTO zone_catalog (id, version, changed_at) VALUES (1, 0, CURRENT_TIMESTAMP)"
    )
    _replace_disconnected_index(["zone_normalized", "id"])


def downgrade() -> None:
    _replace_disconnected_index(["zone_normalized"])
    op.drop_table("zone_catalog")


def _replace_disconnected_index(columns: list[str]) -> None:
    op.drop_index(
        "ix_permits_disconnected_zone",
        table_name="permits",
        postgresql_where=DISCONNECTED,
        sqlite_where=DISCONNECTED,
    )
    op.create_index(
        "ix_permits_disconnected_zone",
        "permits",
        columns,
        unique=False,
        postgresql_where=DISCONNECTED,
        sqlite_where=DISCONNECTED,
    )
