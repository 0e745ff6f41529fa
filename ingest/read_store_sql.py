"""The receiver's database reads: permit status, enforcement lookup, owners of old ids.

Pushes never come here: the receiver takes permits with Redis alone. These reads need
the database (it is the system of record; Redis holds only what is queued). They run on
a small thread pool with a synchronous engine, so a slow query never blocks the event
loop, and they are optional: with READ_DATABASE_URL=none the receiver never opens a
database, and the read endpoints answer 503 while pushes go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Engine,
    Row,
    String,
    and_,
    bindparam,
    create_engine,
    make_url,
    or_,
    select,
    tuple_,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ingest.read_store import ActiveQuery, FirstIds, PermitStatus
from shared.clients import active_clients
from shared.config import Settings
from shared.db import make_engine
from shared.errors import ReadsUnavailableError
from shared.models import DeadLetter, Permit, PermitAlias, PermitOperation, Zone, ZoneAlias
from shared.normalize import normalize_zone
from shared.tokens import ClientInfo

T = TypeVar("T")


class SqlReadStore:
    """Synchronous queries on their own threads, awaited by the handlers."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        threads = settings.read_threads
        self._engine = _read_engine(settings, database_url, threads)
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="reads")
        self._first_id_timeout_s = settings.dedup_read_timeout_s
        # Each read thread keeps its own connection: checking one out of the pool and
        # back for every lookup cost more than the indexed query itself (measured).
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._lock = threading.Lock()

    async def _run(self, query: Callable[[Session], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.run_sync, query
        )

    def run_sync(self, query: Callable[[Session], T]) -> T:
        """Run ``query`` on this thread's connection; a database fault is a 503."""
        try:
            with Session(bind=self._connection()) as session:
                return query(session)
        except SQLAlchemyError as exc:
            self._discard_connection()  # reconnect on the next read
            raise ReadsUnavailableError(type(exc).__name__) from exc

    def _connection(self) -> Connection:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.closed or connection.invalidated:
            connection = self._engine.connect()
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _discard_connection(self) -> None:
        connection: Connection | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock:
                self._connections.remove(connection)
            connection.invalidate()

    async def status(self, client_id: int, reference_id: str) -> PermitStatus | None:
        """The permit as stored (or failed), if it is ``client_id``'s; None otherwise."""
        return await self._run(lambda session: status_of(session, client_id, reference_id))

    async def active(self, query: ActiveQuery) -> list[dict[str, Any]]:
        return await self._run(lambda session: active_permits(session, query))

    async def clients(self) -> dict[str, ClientInfo]:
        """The active clients by token hash: only while Redis has lost the token set."""
        return await self._run(active_clients)

    def owners(self, reference_ids: list[str]) -> dict[str, int]:
        """Owning client of each stored id or alias (synchronous: the enqueue thread calls it)."""
        rows = self.run_sync(
            lambda session: session.execute(
                select(Permit.reference_id, Permit.client_id)
                .where(Permit.reference_id.in_(reference_ids))
                .union_all(
                    select(PermitAlias.reference_id, PermitAlias.client_id).where(
                        PermitAlias.reference_id.in_(reference_ids)
                    )
                )
            ).all()
        )
        return {reference_id: client_id for reference_id, client_id in rows}

    def start_first_ids(self, keys: list[tuple[int, str]]) -> FirstIds:
        """Start reading the reference id stored for each (client id, fingerprint): ONE
        query for a micro-batch, on the read pool, while the caller does its Redis round
        trip. Its answer waits at most DEDUP_READ_TIMEOUT_S: a hung database must not
        hold up pushes (TimeoutError; the new ids stand and the worker aliases them)."""
        future = self._executor.submit(self._first_ids_sync, keys)
        return _FirstIdRead(future, self._first_id_timeout_s)

    def _first_ids_sync(self, keys: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
        """On this read thread's connection, without an ORM session (per batch it counts)."""
        try:
            connection = self._connection()
            if connection.dialect.name == "postgresql":
                document = orjson.dumps([{"client_id": c, "fingerprint": f} for c, f in keys])
                found = connection.exec_driver_sql(_FIRST_IDS_PG, {"keys": document.decode()}).all()
            else:
                with Session(bind=connection) as session:
                    found = session.execute(
                        select(Permit.client_id, Permit.fingerprint, Permit.reference_id).where(
                            tuple_(Permit.client_id, Permit.fingerprint).in_(keys)
                        )
                    ).all()
        except SQLAlchemyError as exc:
            self._discard_connection()
            raise ReadsUnavailableError(type(exc).__name__) from exc
        return [(int(c), str(f), str(r)) for c, f, r in found]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._engine.dispose()


@dataclasses.dataclass(frozen=True, slots=True)
class _FirstIdRead:
    future: Future[list[tuple[int, str, str]]]
    timeout_s: float

    def answer(self) -> dict[tuple[int, str], str]:
        rows = self.future.result(timeout=self.timeout_s)
        return {(client_id, fingerprint): ref for client_id, fingerprint, ref in rows}

    def cancel(self) -> None:
        self.future.cancel()


def _read_engine(settings: Settings, database_url: str, threads: int) -> Engine:
    if make_url(database_url).get_backend_name() == "sqlite":
        return make_engine(dataclasses.replace(settings, database_url=database_url))
    # One round trip per query: autocommit (each read stands alone, so no BEGIN/ROLLBACK
    # around it) and no pre-ping. A connection the server dropped fails one request with
    # a 503 and the pool replaces it.
    # The read threads keep one connection each; the operations batcher's thread asks
    # for owners (OperationEnqueuer) on a connection of its own.
    return create_engine(
        database_url,
        pool_size=threads + 1,
        max_overflow=0,
        isolation_level="AUTOCOMMIT",
        hide_parameters=True,  # permits never reach logs or tracebacks
    )


# PostgreSQL: one fixed statement whatever the batch size (prepared by psycopg after a few
# uses), the keys bound as one JSON document (psycopg dumps arrays in Python: 350-380 us
# of CPU a 32-key read here, against 120-130 as JSON by orjson). Each key is one probe of
# uq_permits_client_fingerprint: LIMIT 1 (the pair is unique) keeps the subquery from
# being flattened into a join, which PostgreSQL, counting 100 keys for any document,
# planned as a hash join over a full scan of permits on a small table: 2.9 ms a read at
# 8,000 rows (1.9 ms analysed), against 0.07 ms probed.
_FIRST_IDS_PG = (
    "SELECT p.client_id, p.fingerprint, p.reference_id"
    " FROM jsonb_to_recordset(CAST(%(keys)s AS jsonb)) AS k(client_id integer, fingerprint text)"
    " CROSS JOIN LATERAL (SELECT q.client_id, q.fingerprint, q.reference_id FROM permits q"
    " WHERE q.client_id = k.client_id AND q.fingerprint = k.fingerprint LIMIT 1) AS p"
)


def status_of(session: Session, client_id: int, reference_id: str) -> PermitStatus | None:
    permit = session.scalar(select(Permit).where(Permit.reference_id == reference_id))
    if permit is None:  # a second reference id of a stored permit names it too
        first = session.scalar(
            select(PermitAlias.permit_reference_id).where(PermitAlias.reference_id == reference_id)
        )
        if first is not None:
            reference_id = first
            permit = session.scalar(select(Permit).where(Permit.reference_id == first))
    if permit is not None:
        if permit.client_id != client_id:
            return None  # another client's permit: as if it did not exist
        operations = session.scalars(
            select(PermitOperation)
            .where(
                PermitOperation.reference_id == reference_id,
                PermitOperation.kind != "create",
                PermitOperation.client_id == client_id,
            )
            .order_by(PermitOperation.seq)
        )
        return PermitStatus(
            _permit_status(permit), permit_body(permit), [_operation_body(o) for o in operations]
        )
    letter = session.scalar(
        select(DeadLetter).where(DeadLetter.reference_id == reference_id).limit(1)
    )
    if letter is not None and letter.payload.get("client_id") == client_id:
        return PermitStatus("failed", None, [])
    return None


def _permit_status(permit: Permit) -> str:
    if permit.deleted_at is not None:
        return "deleted"
    if permit.disconnected:
        return "disconnected"
    return "stored"


def active_permits(session: Session, query: ActiveQuery) -> list[dict[str, Any]]:
    """The enforcement query: one prepared statement on ix_permits_active_plate."""
    at, zone, client_id = query.at, query.zone, query.client_id
    params: dict[str, Any] = {
        "plate": query.plate_normalized,
        "since": at - query.grace,
        "at": at,
        "limit": query.limit,
    }
    if client_id is not None:
        params["client"] = client_id
    if zone is not None:
        params["zone"] = normalize_zone(zone)
    rows = session.execute(_STATEMENTS[(zone is not None, client_id is not None)], params)
    return [{**permit_body(row), "in_grace": _aware(row.ends_at) < at} for row in rows]


def _zone_matches(name: BindParameter[str]) -> ColumnElement[bool]:
    """The zone named ``name`` or aliased so; unknown names match disconnected permits."""
    zone_ids = (
        select(Zone.id)
        .where(Zone.name_normalized == name)
        .union(select(ZoneAlias.zone_id).where(ZoneAlias.alias_normalized == name))
    )
    # Permits not linked yet (pushed before the zone or alias was added) match by name.
    spellings = (
        select(Zone.name_normalized)
        .where(Zone.id.in_(zone_ids))
        .union(select(ZoneAlias.alias_normalized).where(ZoneAlias.zone_id.in_(zone_ids)))
    )
    return or_(
        Permit.zone_id.in_(zone_ids),
        and_(
            Permit.zone_id.is_(None),
            or_(Permit.zone_normalized == name, Permit.zone_normalized.in_(spellings)),
        ),
    )


# Built once: a lookup binds values into a cached, compiled (and, on PostgreSQL,
# server-prepared) statement instead of building a new one (measured: half its time).
_ACTIVE = (
    select(*Permit.__table__.columns)
    .where(
        Permit.plate_normalized == bindparam("plate"),
        Permit.deleted_at.is_(None),
        Permit.ends_at >= bindparam("since"),
        Permit.starts_at <= bindparam("at"),
    )
    .order_by(Permit.ends_at.desc())
    .limit(bindparam("limit"))
)
_ACTIVE_IN_ZONE = _ACTIVE.where(_zone_matches(bindparam("zone", type_=String)))
_OWN = Permit.client_id == bindparam("client")
# By (zone given, one client's only).
_STATEMENTS = {
    (False, False): _ACTIVE,
    (True, False): _ACTIVE_IN_ZONE,
    (False, True): _ACTIVE.where(_OWN),
    (True, True): _ACTIVE_IN_ZONE.where(_OWN),
}


def permit_body(permit: Permit | Row[Any]) -> dict[str, Any]:
    """A stored permit (ORM object or row of the permits table) as the reads show it."""
    return {
        "reference_id": permit.reference_id,
        "permit_type": permit.permit_type,
        "plate": permit.plate,
        "zone": permit.zone_name,
        "zone_id": permit.zone_id,
        "permitNo": permit.permit_no,
        "Amount": str(permit.amount) if permit.amount is not None else None,
        "CurrencyID": permit.currency,
        "startTime": permit.start_raw,
        "endTime": permit.end_raw,
        "starts_at": _iso(permit.starts_at),
        "ends_at": _iso(permit.ends_at),
        "received_at": _iso(permit.received_at),
        "stored_at": _iso(permit.stored_at),
        "updated_at": _iso(permit.updated_at),
        "deleted_at": _iso(permit.deleted_at),
    }


def _operation_body(operation: PermitOperation) -> dict[str, Any]:
    return {
        "kind": operation.kind,
        "state": operation.state,
        "reason": operation.reason,
        "received_at": _iso(operation.received_at),
    }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return _aware(value).isoformat() if value is not None else None
