"""permit lifecycle: operations, sequence on permits, per-client rate limits, lookup index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

NOT_DELETED = sa.text("deleted_at IS NULL")
PARKED = sa.text("state = 'parked'")

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_clients") as batch:
        batch.add_column(sa.Column("rate_per_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("rate_burst", sa.Integer(), nullable=True))
    with op.batch_alter_table("permits") as batch:
        batch.add_column(sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    # The lookup index skips deleted permits: they never answer "is this plate paid".
    op.drop_index("ix_permits_plate_normalized_ends_at", table_name="permits")
    op.create_index(
        "ix_permits_active_plate",
        "permits",
        ["plate_normalized", "ends_at"],
        unique=False,
        postgresql_where=NOT_DELETED,
        sqlite_where=NOT_DELETED,
    )
    op.create_table(
        "permit_operations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("reference_id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("create_expected", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('create', 'update', 'delete')", name=op.f("ck_permit_operations_kind")
        ),
        sa.CheckConstraint(
            "state IN ('parked', 'applied', 'rejected', 'not_found')",
            name=op.f("ck_permit_operations_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_permit_operations")),
        sa.UniqueConstraint("reference_id", "seq", name=op.f("uq_permit_operations_reference_id")),
    )
    op.create_index(
        "ix_permit_operations_parked",
        "permit_operations",
        ["reference_id"],
        unique=False,
        postgresql_where=PARKED,
        sqlite_where=PARKED,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_permit_operations_parked",
        table_name="permit_operations",
        postgresql_where=PARKED,
        sqlite_where=PARKED,
    )
    op.drop_table("permit_operations")
    op.drop_index(
        "ix_permits_active_plate",
        table_name="permits",
        postgresql_where=NOT_DELETED,
        sqlite_where=NOT_DELETED,
    )
    op.create_index(
        "ix_permits_plate_normalized_ends_at",
        "permits",
        ["plate_normalized", "ends_at"],
        unique=False,
    )
    with op.batch_alter_table("permits") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("last_seq")
    with op.batch_alter_table("api_clients") as batch:
        batch.drop_column("rate_burst")
        batch.drop_column("rate_per_s")
