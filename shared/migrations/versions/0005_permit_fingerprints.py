"""durable de-dup: permits.fingerprint unique per client, permit_aliases

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 18:00:00

Adds permits.fingerprint (shared/fingerprint.py) and fills it for the rows stored before,
from the plate and zone as sent put in the CURRENT normal forms (shared/normalize.py, the
forms 0004 wrote) and, for a permit changed by an update, from its state as created (the
seq-0 snapshot in permit_operations): the fingerprint the receiver computes for a resend of
the permit as first sent. Keyset chunks in autocommit, as 0004; a run cut short is run
again (only rows without a fingerprint are filled).

Rows that already duplicate an older row of the same client and fingerprint (stored twice
before this migration) keep a null fingerprint: the older row carries it, and no row is
deleted. The count is printed.

The unique index (client_id, fingerprint) is built on PostgreSQL with CREATE INDEX
CONCURRENTLY, outside any transaction, so a large permits table stays writable meanwhile;
an invalid index left by an interrupted build is dropped and built again.
"""

import sqlalchemy as sa
from alembic import op

from shared.fingerprint import permit_fingerprint
from shared.normalize import normalize_plate, normalize_zone

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CHUNK = 1000
INDEX = "uq_permits_client_fingerprint"


def upgrade() -> None:
    op.add_column("permits", sa.Column("fingerprint", sa.String(length=64), nullable=True))
    op.create_table(
        "permit_aliases",
        sa.Column("reference_id", sa.String(length=36), nullable=False),
        sa.Column("permit_reference_id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("reference_id", name=op.f("pk_permit_aliases")),
    )
    op.create_index(
        op.f("ix_permit_aliases_permit_reference_id"),
        "permit_aliases",
        ["permit_reference_id"],
        unique=False,
    )
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        backfill(bind)
        duplicates = clear_duplicates(bind)
        if duplicates:
            print(f"0005: {duplicates} permits duplicated an older row; kept without fingerprint")
        build_index(bind)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="permits")
    op.drop_index(op.f("ix_permit_aliases_permit_reference_id"), table_name="permit_aliases")
    op.drop_table("permit_aliases")
    with op.batch_alter_table("permits") as batch:
        batch.drop_column("fingerprint")


_permits = sa.table(
    "permits",
    *(
        sa.column(name)
        for name in (
            "id",
            "reference_id",
            "client_id",
            "plate",
            "zone_name",
            "start_raw",
            "end_raw",
            "amount",
            "currency",
            "permit_no",
            "last_seq",
            "fingerprint",
        )
    ),
)
_operations = sa.table(
    "permit_operations", sa.column("reference_id"), sa.column("kind"), sa.column("changes")
)


def backfill(bind: sa.Connection, chunk: int = CHUNK) -> int:
    """Fill the fingerprint of every row without one; return how many were filled."""
    p = _permits.c
    read = sa.select(_permits).where(p.fingerprint.is_(None))
    write = (
        sa.update(_permits)
        .where(p.id == sa.bindparam("row_id"))
        .values(fingerprint=sa.bindparam("new_fingerprint"))
    )
    snapshots = sa.select(_operations.c.reference_id, _operations.c.changes).where(
        _operations.c.kind == "create"
    )
    last, filled = 0, 0
    while (
        rows := bind.execute(read.where(p.id > last).order_by(p.id).limit(chunk)).mappings().all()
    ):
        last = rows[-1]["id"]
        changed = [row["reference_id"] for row in rows if row["last_seq"]]
        created = {}
        if changed:
            found = bind.execute(snapshots.where(_operations.c.reference_id.in_(changed)))
            created = {reference_id: changes for reference_id, changes in found}
        updates = [
            {"row_id": row["id"], "new_fingerprint": row_fingerprint(row, created)} for row in rows
        ]
        bind.execute(write, updates)
        filled += len(updates)
    return filled


def row_fingerprint(row: sa.RowMapping, created: dict[str, dict[str, object]]) -> str:
    """The fingerprint of the permit as it was first sent (before any update)."""
    snapshot = created.get(row["reference_id"])
    plate, amount, currency, end_raw = row["plate"], row["amount"], row["currency"], row["end_raw"]
    if snapshot is not None:
        plate = str(snapshot["plate"])
        amount = snapshot["amount"]
        currency = snapshot["currency"]
        end_raw = str(snapshot["end_raw"])
    return permit_fingerprint(
        row["client_id"],
        normalize_plate(plate),
        row["start_raw"],
        end_raw,
        None if amount is None else str(amount),
        currency,
        row["permit_no"],
        None if row["zone_name"] is None else normalize_zone(row["zone_name"]),
    )


def clear_duplicates(bind: sa.Connection) -> int:
    """Null the fingerprint of rows repeating an older row's (client, fingerprint)."""
    p = _permits.c
    first = (
        sa.select(p.client_id, p.fingerprint, sa.func.min(p.id).label("first_id"))
        .where(p.fingerprint.is_not(None))
        .group_by(p.client_id, p.fingerprint)
        .having(sa.func.count() > 1)
    )
    cleared = 0
    for client_id, fingerprint, first_id in bind.execute(first).all():
        result = bind.execute(
            sa.update(_permits)
            .where(p.client_id == client_id, p.fingerprint == fingerprint, p.id != first_id)
            .values(fingerprint=None)
        )
        cleared += result.rowcount
    return cleared


def build_index(bind: sa.Connection) -> None:
    if bind.dialect.name != "postgresql":
        op.create_index(INDEX, "permits", ["client_id", "fingerprint"], unique=True)
        return
    invalid = bind.execute(
        sa.text(
            "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = :name AND NOT i.indisvalid"
        ),
        {"name": INDEX},
    ).first()
    if invalid is not None:  # an interrupted CONCURRENTLY build
        bind.execute(sa.text("DROP INDEX CONCURRENTLY IF EXISTS uq_permits_client_fingerprint"))
    bind.execute(
        sa.text(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS uq_permits_client_fingerprint "
            "ON permits (client_id, fingerprint)"
        )
    )
