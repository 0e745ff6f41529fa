"""Storing a batch on PostgreSQL: every column arrives as the worker built it, and the
create's drain finds what was parked for it.

The insert sends the whole batch as one JSON document (`jsonb_to_recordset`), so
PostgreSQL, not psycopg, turns each value into its column's type: this checks that NULLs,
decimals, offsets, non-ASCII text and the zone link come through unchanged. The drain
after it looks for parked operations outside a transaction (worker/operations.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shared.clients import create_client
from shared.config import Settings
from shared.models import DeadLetter, Permit, PermitOperation, Zone
from shared.normalize import normalize_plate
from shared.operations import OperationJob
from tests.factories import make_permit_job
from worker.context import get_context, init_context
from worker.jobs import persist_permits
from worker.operations import _any_parked_autocommit, apply_batch
from worker.persist import store_permits, to_row
from worker.zones import ZoneIndex


def test_every_column_is_stored_as_the_worker_built_it(
    pg_sessions: sessionmaker[Session],
) -> None:
    with pg_sessions.begin() as session:
        create_client(session, "meters")
        session.add(Zone(name="Lot 4", name_normalized="lot 4"))
    plate = "\uff30\uff2c\uff18-\u00d6\u00df"  # full-width, a dash, umlaut, sharp s
    permits = [
        make_permit_job(1),  # a known zone: linked
        make_permit_job(1, zone=None, amount=None, currency=None, permit_no=None),
        make_permit_job(
            1,
            zone="Nowhere \u00e9t\u00e9",  # unknown: disconnected
            plate=plate,
            plate_normalized=normalize_plate(plate),
            amount="999999.99",
            start_raw="2099-12-31T22:00:00",
            end_raw="2099-12-31T23:59:59",
            starts_at="2099-12-31T22:00:00+00:00",
            ends_at="2099-12-31T23:59:59+00:00",
            received_at="2026-12-01T18:30:00.123456+05:30",
        ),
    ]
    zones = ZoneIndex(pg_sessions, ttl_s=60)
    with pg_sessions() as session:
        result = store_permits(session, permits, zones)
    assert (result.stored, result.duplicates, result.dead_lettered) == (3, 0, 0)
    with pg_sessions() as session:
        lot4 = session.scalars(select(Zone.id)).one()
        stored = {p.reference_id: p for p in session.scalars(select(Permit))}
    for permit in permits:
        expected = to_row(permit, zones.zone_id)
        row = stored[permit["reference_id"]]
        for name, value in expected.items():
            assert getattr(row, name) == value, (name, getattr(row, name), value)
    # Columns the insert fills from their defaults, not from the batch.
    assert {row.last_seq for row in stored.values()} == {0}
    first, bare, far = (stored[p["reference_id"]] for p in permits)
    assert first.zone_id == lot4 and far.zone_id is None
    assert (bare.amount, bare.currency, bare.zone_name, bare.permit_no) == (None,) * 4
    assert far.amount == Decimal("999999.99")
    assert far.received_at == datetime.fromisoformat("2026-12-01T13:00:00.123456+00:00")
    assert far.plate == plate and far.plate_normalized == "PL8\u00d6SS"


def test_rows_that_are_no_utf8_are_dead_lettered_and_the_rest_stored(
    pg_sessions: sessionmaker[Session],
) -> None:
    """Lone surrogates (a job from a receiver before that check) are the rows' fault: the
    fingerprint cannot hash one, the batch's JSON document cannot hold one. Each row is
    found by halving and dead-lettered; the others are stored."""
    with pg_sessions.begin() as session:
        create_client(session, "meters")
    permits = [make_permit_job(1) for _ in range(8)]
    permits[2] = make_permit_job(1, plate="PL8\ud800")  # not in the fingerprint
    permits[5] = make_permit_job(1, permit_no="L4-\ud800")  # in the fingerprint
    with pg_sessions() as session:
        result = store_permits(session, permits, ZoneIndex(pg_sessions, ttl_s=60))
    assert (result.stored, result.dead_lettered) == (6, 2)
    with pg_sessions() as session:
        letters = {d.reference_id: d.reason for d in session.scalars(select(DeadLetter))}
    assert letters[permits[2]["reference_id"]].startswith("ValueError: a value is not UTF-8")
    assert "surrogates not allowed" in letters[permits[5]["reference_id"]]


@pytest.fixture
def worker_context(pg_settings: Settings) -> Iterator[None]:
    context = init_context(pg_settings)
    yield
    context.engine.dispose()


def test_a_create_applies_the_update_parked_before_it_and_leaves_its_connection_transactional(
    pg_sessions: sessionmaker[Session],
    worker_context: None,
) -> None:
    """The create's drain first looks for parked operations outside a transaction (one
    round trip); finding one, it applies it under the row lock, in a real transaction."""
    with pg_sessions.begin() as session:
        create_client(session, "meters")
    permit = make_permit_job(1, amount="1.00")
    update = OperationJob(
        reference_id=permit["reference_id"],
        client_id=1,
        seq=1,
        kind="update",
        changes={"amount": "9.50"},
        received_at=datetime.now(UTC).isoformat(),
        create_expected=True,
    )
    with pg_sessions() as session:
        assert apply_batch(session, [update]).parked == 1  # its create is still queued
    assert persist_permits([permit])["stored"] == 1  # on one connection, as a job runs
    with pg_sessions() as session:
        stored = session.scalars(select(Permit)).one()
        state = session.scalar(select(PermitOperation.state))
    assert (stored.amount, state) == (Decimal("9.50"), "applied")

    with get_context().engine.connect() as connection:
        assert _any_parked_autocommit(connection, [permit["reference_id"]]) is False
        # Back as it was: no transaction open, the driver out of autocommit, so the job's
        # next transaction on this connection is one (and its FOR UPDATE holds).
        assert not connection.in_transaction()
        assert connection.connection.driver_connection.autocommit is False
        assert connection.get_isolation_level() == connection.default_isolation_level


def test_a_failed_parked_check_leaves_its_connection_as_it_was(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement error (not a lost connection) in the autocommit check: the error
    reaches the caller, and the connection is out of autocommit, in no transaction."""
    monkeypatch.setattr(
        "worker.operations._ANY_PARKED_PG", "SELECT 1 / 0 WHERE CAST(%(ids)s AS text) IS NOT NULL"
    )
    with pg_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="division by zero"):
            _any_parked_autocommit(connection, ["a"])
        assert not connection.in_transaction()
        assert connection.connection.driver_connection.autocommit is False
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1  # usable, and now in a
        assert connection.in_transaction()  # transaction of its own again
