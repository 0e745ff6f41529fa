"""token scopes: api_clients.scope (push | enforcement); index on permit_operations.seq

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 17:30:00

Every existing client keeps what it could do before the scopes (push), so the column is
added with a server default; enforcement tokens (handhelds, cameras) are made with
``permit-push tokens create --scope enforcement``. Downgrade drops the column: enforcement
tokens would become push tokens, so revoke them first.

The index on permit_operations.seq lets workers read the largest order number cheaply:
they raise Redis's counter to it (shared/opseq.py).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_clients") as batch:
        batch.add_column(sa.Column("scope", sa.String(20), nullable=False, server_default="push"))
        batch.create_check_constraint(
            op.f("ck_api_clients_scope"), "scope IN ('push', 'enforcement')"
        )
    op.create_index("ix_permit_operations_seq", "permit_operations", ["seq"])


def downgrade() -> None:
    op.drop_index("ix_permit_operations_seq", table_name="permit_operations")
    with op.batch_alter_table("api_clients") as batch:
        batch.drop_constraint(op.f("ck_api_clients_scope"), type_="check")
        batch.drop_column("scope")
