"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 11:20:58.225634
"""

import sqlalchemy as sa
from alembic import op

from shared.models import Money

DISCONNECTED = sa.text("zone_id IS NULL AND zone_normalized IS NOT NULL")


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_clients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("permit_type", sa.String(length=20), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "permit_type IN ('Validator', 'Temporary', 'Standard')",
            name=op.f("ck_api_clients_permit_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_clients")),
        sa.UniqueConstraint("name", name=op.f("uq_api_clients_name")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_api_clients_token_sha256")),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("reference_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requeued_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(
        op.f("ix_dead_letters_reference_id"), "dead_letters", ["reference_id"], unique=False
    )
    op.create_table(
        "zones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_normalized", sa.String(length=200), nullable=False),
        sa.Column("code", sa.String(length=50), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zones")),
        sa.UniqueConstraint("code", name=op.f("uq_zones_code")),
        sa.UniqueConstraint("name_normalized", name=op.f("uq_zones_name_normalized")),
    )
    op.create_table(
        "permits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("reference_id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("permit_type", sa.String(length=20), nullable=False),
        sa.Column("plate", sa.String(length=64), nullable=False),
        sa.Column("plate_normalized", sa.String(length=64), nullable=False),
        sa.Column("zone_name", sa.String(length=200), nullable=True),
        sa.Column("zone_normalized", sa.String(length=200), nullable=True),
        sa.Column("zone_id", sa.Integer(), nullable=True),
        sa.Column("permit_no", sa.String(length=50), nullable=True),
        sa.Column("amount", Money(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("start_raw", sa.String(length=20), nullable=False),
        sa.Column("end_raw", sa.String(length=20), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"], ["api_clients.id"], name=op.f("fk_permits_client_id_api_clients")
        ),
        sa.ForeignKeyConstraint(["zone_id"], ["zones.id"], name=op.f("fk_permits_zone_id_zones")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_permits")),
        sa.UniqueConstraint("reference_id", name=op.f("uq_permits_reference_id")),
    )
    op.create_index(op.f("ix_permits_client_id"), "permits", ["client_id"], unique=False)
    op.create_index(
        "ix_permits_disconnected_zone",
        "permits",
        ["zone_normalized"],
        unique=False,
        postgresql_where=DISCONNECTED,
        sqlite_where=DISCONNECTED,
    )
    op.create_index(
        "ix_permits_plate_normalized_ends_at",
        "permits",
        ["plate_normalized", "ends_at"],
        unique=False,
    )
    op.create_index(op.f("ix_permits_zone_id"), "permits", ["zone_id"], unique=False)
    op.create_table(
        "zone_aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=200), nullable=False),
        sa.Column("alias_normalized", sa.String(length=200), nullable=False),
        sa.Column("zone_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["zone_id"],
            ["zones.id"],
            name=op.f("fk_zone_aliases_zone_id_zones"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zone_aliases")),
        sa.UniqueConstraint("alias_normalized", name=op.f("uq_zone_aliases_alias_normalized")),
    )
    op.create_index(op.f("ix_zone_aliases_zone_id"), "zone_aliases", ["zone_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_zone_aliases_zone_id"), table_name="zone_aliases")
    op.drop_table("zone_aliases")
    op.drop_index(op.f("ix_permits_zone_id"), table_name="permits")
    op.drop_index("ix_permits_plate_normalized_ends_at", table_name="permits")
    op.drop_index(
        "ix_permits_disconnected_zone",
        table_name="permits",
        postgresql_where=DISCONNECTED,
        sqlite_where=DISCONNECTED,
    )
    op.drop_index(op.f("ix_permits_client_id"), table_name="permits")
    op.drop_table("permits")
    op.drop_table("zones")
    op.drop_index(op.f("ix_dead_letters_reference_id"), table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_table("api_clients")
