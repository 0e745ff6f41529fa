"""drop ix_permits_client_id: uq_permits_client_fingerprint leads with client_id

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 02:10:00

The unique index (client_id, fingerprint) of 0005 serves every look-up by client_id alone
as well (its leading column), so the older single-column index only cost every insert an
index entry. It also misled PostgreSQL: on a small table not yet analysed (a new
deployment, before autovacuum's first ANALYZE), the receiver's first-id read probed it for
the client and filtered the fingerprints, reading every row of that client for each key,
in a plan its prepared statement then kept while the table grew.

On PostgreSQL the index is dropped and rebuilt (downgrade) CONCURRENTLY, outside any
transaction, so the permits table stays writable meanwhile.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_permits_client_id"


def upgrade() -> None:
    with op.get_context().autocommit_block():  # CONCURRENTLY runs outside a transaction
        op.drop_index(INDEX, table_name="permits", postgresql_concurrently=True, if_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        # An interrupted CONCURRENTLY build leaves an invalid index of that name behind.
        op.drop_index(INDEX, table_name="permits", postgresql_concurrently=True, if_exists=True)
        op.create_index(INDEX, "permits", ["client_id"], postgresql_concurrently=True)
