"""SQLAlchemy models: API clients, zones, permits and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    and_,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from shared.constants import PLATE_COLUMN, ZONE_COLUMN

# Explicit constraint names keep Alembic migrations stable across databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Money(TypeDecorator[Decimal]):
    """An exact decimal: NUMERIC(8, 2) in PostgreSQL, text in SQLite (whose numbers are floats)."""

    impl = Numeric(8, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(12))
        return dialect.type_descriptor(Numeric(8, 2))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ApiClient(Base):
    """A system that pushes permits (a meter vendor, a pay-station fleet)."""

    __tablename__ = "api_clients"
    __table_args__ = (
        CheckConstraint(
            "permit_type IN ('Validator', 'Temporary', 'Standard')", name="permit_type"
        ),
        CheckConstraint("scope IN ('push', 'enforcement')", name="scope"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    permit_type: Mapped[str] = mapped_column(String(20), default="Standard")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Only the SHA-256 of the token is kept; the token is shown once, at creation.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Token bucket; null: the deployment's RATE_LIMIT_PER_S / RATE_LIMIT_BURST.
    rate_per_s: Mapped[float | None] = mapped_column(Float)
    rate_burst: Mapped[int | None] = mapped_column(Integer)
    # push: pushes, updates, deletes and reads its own permits; enforcement: looks up any
    # plate, never pushes (shared/constants.py TOKEN_SCOPES).
    scope: Mapped[str] = mapped_column(String(20), default="push", server_default="push")


class Zone(Base):
    __tablename__ = "zones"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_normalized: Mapped[str] = mapped_column(String(200), unique=True)
    code: Mapped[str | None] = mapped_column(String(50), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ZoneAlias(Base):
    __tablename__ = "zone_aliases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alias: Mapped[str] = mapped_column(String(200))
    alias_normalized: Mapped[str] = mapped_column(String(200), unique=True)
    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ZoneCatalog(Base):
    """One row: a version number that every change to zones or aliases increments.

    Workers compare it with the version their cached zone map was loaded at; see
    shared/zones.py for how it and a lock close the race with reconciliation.
    """

    __tablename__ = "zone_catalog"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# Names a zone but is linked to none: the rows a reconcile looks at (Permit.unlinked).
UNLINKED = text("zone_id IS NULL AND zone_normalized IS NOT NULL")
NOT_DELETED = text("deleted_at IS NULL")
PARKED = text("state = 'parked'")


class Permit(Base):
    """A paid permit as pushed, with the zone it is linked to (null: disconnected)."""

    __tablename__ = "permits"
    __table_args__ = (
        # Enforcement lookups, "is this plate paid now?": deleted permits never answer.
        Index(
            "ix_permits_active_plate",
            "plate_normalized",
            "ends_at",
            postgresql_where=NOT_DELETED,
            sqlite_where=NOT_DELETED,
        ),
        # Reconciliation scans only the unlinked permits, name by name in id order
        # (keyset batches: each batch starts where the last one ended).
        Index(
            "ix_permits_disconnected_zone",
            "zone_normalized",
            "id",
            postgresql_where=UNLINKED,
            sqlite_where=UNLINKED,
        ),
        # What makes a permit unique (shared/fingerprint.py): stored once, ever, whatever
        # reference id each delivery carried. Null only for rows that duplicated an older
        # row before migration 0005 (kept as they were; see that migration).
        Index("uq_permits_client_fingerprint", "client_id", "fingerprint", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The id the client was given; one permit, one row, however often it is delivered.
    reference_id: Mapped[str] = mapped_column(String(36), unique=True)
    # Looked up through uq_permits_client_fingerprint, which leads with it (migration 0007).
    client_id: Mapped[int] = mapped_column(ForeignKey("api_clients.id"))
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    permit_type: Mapped[str] = mapped_column(String(20))
    plate: Mapped[str] = mapped_column(String(PLATE_COLUMN))
    plate_normalized: Mapped[str] = mapped_column(String(PLATE_COLUMN))
    zone_name: Mapped[str | None] = mapped_column(String(ZONE_COLUMN))
    zone_normalized: Mapped[str | None] = mapped_column(String(ZONE_COLUMN))
    zone_id: Mapped[int | None] = mapped_column(ForeignKey("zones.id"), index=True)
    permit_no: Mapped[str | None] = mapped_column(String(50))
    amount: Mapped[Decimal | None] = mapped_column(Money())
    currency: Mapped[str | None] = mapped_column(String(3))
    # As sent, and as instants in UTC.
    start_raw: Mapped[str] = mapped_column(String(20))
    end_raw: Mapped[str] = mapped_column(String(20))
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The highest operation sequence number folded into this row (0: as created).
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # The one definition of each, in Python and in SQL (hybrid properties).
    @hybrid_property
    def unlinked(self) -> bool:
        """It names a zone that matched no zone or alias yet: a reconcile may link it."""
        return self.zone_id is None and self.zone_normalized is not None

    @unlinked.inplace.expression
    @classmethod
    def _unlinked(cls) -> ColumnElement[bool]:
        return and_(cls.zone_id.is_(None), cls.zone_normalized.is_not(None))

    @hybrid_property
    def disconnected(self) -> bool:
        """Unlinked and still in force: what status, metrics and zone reports count.

        A deleted permit waits for nothing, so it is reported as deleted, never as
        disconnected (a reconcile still links it, to keep its history whole).
        """
        return self.unlinked and self.deleted_at is None

    @disconnected.inplace.expression
    @classmethod
    def _disconnected(cls) -> ColumnElement[bool]:
        return and_(cls.unlinked, cls.deleted_at.is_(None))


class PermitAlias(Base):
    """Another reference id for a stored permit.

    A resend the receiver could not match to its first delivery (Redis had forgotten it and
    the database was away) got a reference id of its own; the worker found the permit
    already stored under its fingerprint and recorded the second id here. Status, update
    and delete accept either id.
    """

    __tablename__ = "permit_aliases"

    reference_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    permit_reference_id: Mapped[str] = mapped_column(String(36), index=True)
    client_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PermitOperation(Base):
    """An update or delete as received, and what became of it.

    ``seq`` is the order of receipt (one Redis counter for all operations). Operations
    may reach the database in another order, or before their permit: they are parked,
    and the permit row is always the in-order fold of its create and its operations.
    Seq 0 (kind ``create``) snapshots the permit as created, taken when the first
    operation is applied, so a late operation can be folded in at its place.
    """

    __tablename__ = "permit_operations"
    __table_args__ = (
        UniqueConstraint("reference_id", "seq"),
        CheckConstraint("kind IN ('create', 'update', 'delete')", name="kind"),
        CheckConstraint("state IN ('parked', 'applied', 'rejected', 'not_found')", name="state"),
        # The worker storing a create looks for operations waiting for it.
        Index(
            "ix_permit_operations_parked",
            "reference_id",
            postgresql_where=PARKED,
            sqlite_where=PARKED,
        ),
        # The largest order number, which workers raise Redis's counter to.
        Index("ix_permit_operations_seq", "seq"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    reference_id: Mapped[str] = mapped_column(String(36))
    client_id: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(10))
    changes: Mapped[dict[str, object]] = mapped_column(JSON)
    # False: the receiver could not tell that the create was issued (outside Redis's
    # window, no database): a missing permit is then not found, not awaited.
    create_expected: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(10), default="parked")
    reason: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeadLetter(Base):
    """A permit that could not be stored, kept with its reason for an operator."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    reference_id: Mapped[str] = mapped_column(String(36), index=True)
    job_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, object]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    requeued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
