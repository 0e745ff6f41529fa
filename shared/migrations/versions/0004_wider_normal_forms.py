"""normal forms fold look-alikes: NFKC, no format characters, every dash and space

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 17:00:00

Rewrites permits.plate_normalized / zone_normalized, zones.name_normalized and
zone_aliases.alias_normalized with shared/normalize.py's forms ("PL8\\u200bRDR" and
full-width plates become "PL8RDR"). Keyset chunks in autocommit: a large permits table
is never one long transaction. The values are recomputed from the names as sent, so a run
cut short is simply run again (the revision is stamped only at the end). Two zones (or
aliases) whose names now fold to one form make the unique index refuse the migration:
rename one first. Downgrade leaves the new forms (the old ones cannot be told apart).
"""

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from shared.normalize import normalize_plate, normalize_zone

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CHUNK = 1000

Normalizer = Callable[[str], str]


def upgrade() -> None:
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        renormalize(
            bind,
            "permits",
            {
                "plate": ("plate_normalized", normalize_plate),
                "zone_name": ("zone_normalized", normalize_zone),
            },
        )
        renormalize(bind, "zones", {"name": ("name_normalized", normalize_zone)})
        renormalize(bind, "zone_aliases", {"alias": ("alias_normalized", normalize_zone)})


def downgrade() -> None:
    pass


def renormalize(
    bind: sa.Connection, table: str, columns: dict[str, tuple[str, Normalizer]], chunk: int = CHUNK
) -> int:
    """Rewrite each ``source -> (target, normalizer)`` of ``table``; return rows changed."""
    names = [name for pair in columns.items() for name in (pair[0], pair[1][0])]
    rows_of = sa.table(table, sa.column("id"), *(sa.column(name) for name in names))
    key = rows_of.c.id
    read = sa.select(key, *(rows_of.c[name] for name in names))
    write = (
        sa.update(rows_of)
        .where(key == sa.bindparam("row_id"))
        .values({target: sa.bindparam(target) for target, _ in columns.values()})
    )
    last, changed = 0, 0
    while rows := bind.execute(read.where(key > last).order_by(key).limit(chunk)).mappings().all():
        last = rows[-1]["id"]
        updates = []
        for row in rows:
            new = {
                target: None if row[source] is None else normalize(row[source])
                for source, (target, normalize) in columns.items()
            }
            if any(new[target] != row[target] for target in new):
                updates.append({"row_id": row["id"], **new})
        if updates:
            bind.execute(write, updates)
            changed += len(updates)
    return changed
