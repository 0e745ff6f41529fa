"""Stored once, ever, on the real services: Redis flushed under a real serve + worker, on
PostgreSQL and SQLite; migration 0005 on PostgreSQL."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from redis import Redis
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from ingest.permit_enqueuer import PushItem
from ingest.read_store_sql import _FIRST_IDS_PG, SqlReadStore
from ingest.routes import PUSH_PATH
from shared.config import Settings
from shared.db import alembic_config, make_engine, make_sessionmaker, upgrade_database
from shared.models import Permit
from shared.ports import free_port, wait_for_port
from shared.schemas import load_permit
from shared.tokens import ClientInfo
from tests.factories import make_payload
from tests.support.processes import cli, running


@dataclass
class Stack:
    port: int
    token: str
    sessions: sessionmaker[Session]


def _stack(env: dict[str, str], sessions: sessionmaker[Session], logs: Path) -> Iterator[Stack]:
    token = cli("tokens", "create", "--name", "meters", env=env).stdout.strip().splitlines()[-1]
    port = free_port()
    with (
        running("serve", "--port", str(port), env=env, log=logs / "serve.log"),
        running("worker", env=env, log=logs / "worker.log"),
    ):
        wait_for_port(port)
        yield Stack(port, token, sessions)


@pytest.fixture(params=["postgresql", "sqlite"])
def stack(
    request: pytest.FixtureRequest,
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    tmp_path: Path,
) -> Iterator[Stack]:
    env = {"REDIS_URL": pg_settings.redis_url, "TOKEN_PUBLISH_S": "1", "LOG_FORMAT": "console"}
    if request.param == "postgresql":
        env["DATABASE_URL"] = pg_settings.database_url
        yield from _stack(env, pg_sessions, tmp_path)
        return
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'permits.sqlite3'}"
    engine = make_engine(Settings(database_url=env["DATABASE_URL"]))
    upgrade_database(engine)
    try:
        yield from _stack(env, make_sessionmaker(engine), tmp_path)
    finally:
        engine.dispose()


def post(port: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{PUSH_PATH}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - http://127.0.0.1
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        time.sleep(0.05)


def rows(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(Permit.reference_id)))


def push_accepted(stack: Stack, payload: dict[str, Any], headers: dict[str, str]) -> Any:
    """Push until 200 (after FLUSHDB the tokens are back within TOKEN_PUBLISH_S)."""

    def attempt() -> Any:
        status, body = post(stack.port, payload, headers)
        return body if status == 200 else None

    return wait_until(attempt, 15, "pushes accepted again")


@pytest.mark.parametrize("first_headers", [{}, {"Idempotency-Key": "meter-7-sale-991"}])
def test_resend_after_flushdb_gets_the_first_id_and_one_row(
    stack: Stack, real_redis: Redis, first_headers: dict[str, str]
) -> None:
    payload = make_payload(apiToken=stack.token)
    status, first = post(stack.port, payload, first_headers)
    assert status == 200, first
    wait_until(lambda: rows(stack.sessions), 10, "P stored")
    real_redis.flushdb()
    again = push_accepted(stack, payload, {})  # the resend carries no key
    assert again["reference_id"] == first["reference_id"]
    time.sleep(1.0)  # a wrongly enqueued second copy would be stored meanwhile
    assert rows(stack.sessions) == [first["reference_id"]]


def test_migration_0005_fingerprints_rows_with_the_current_normal_forms(
    pg_engine: Engine, pg_sessions: sessionmaker[Session], pg_settings: Settings
) -> None:
    from alembic import command

    with pg_engine.connect() as connection:
        command.downgrade(alembic_config(connection), "0004")
        connection.commit()
    refs = [str(uuid4()) for _ in range(4)]
    insert = text(
        "INSERT INTO permits (reference_id, client_id, permit_type, plate, plate_normalized,"
        " zone_name, zone_normalized, permit_no, amount, currency, start_raw, end_raw,"
        " starts_at, ends_at, received_at, stored_at, last_seq) VALUES (:ref, 1, 'Standard',"
        " :plate, 'ignored', 'Lot\u200b  4', 'ignored', :no, :amount, 'CAD',"
        " '2018-07-02T09:00:00', :end, now(), now(), now(), now(), :seq)"
    )
    try:
        with pg_engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO api_clients (id, name, permit_type, active, token_sha256,"
                    " created_at) VALUES (1, 'm', 'Standard', true, 'x', now())"
                )
            )
            base = {"amount": "14.50", "end": "2018-07-02T09:30:00", "seq": 0}
            connection.execute(
                insert,
                [
                    {**base, "ref": refs[0], "plate": "pl8\u2013rdr", "no": "A"},
                    {**base, "ref": refs[1], "plate": "PL8RDR", "no": "A"},  # stored twice
                    # Updated since: its fingerprint is the permit as first sent.
                    {**base, "ref": refs[2], "plate": "NEW", "no": "B", "amount": "20.00"},
                    {**base, "ref": refs[3], "plate": "PL8RDR", "no": "C"},
                ],
            )
            connection.execute(
                text("UPDATE permits SET last_seq = 7 WHERE reference_id = :r"), {"r": refs[2]}
            )
            connection.execute(
                text(
                    "INSERT INTO permit_operations (reference_id, client_id, seq, kind, changes,"
                    " create_expected, state, received_at) VALUES (:r, 1, 0, 'create', :c,"
                    " true, 'applied', now())"
                ),
                {
                    "r": refs[2],
                    "c": json.dumps(
                        {
                            "plate": "PL8 RDR",
                            "plate_normalized": "PL8RDR",
                            "amount": "14.50",
                            "currency": "CAD",
                            "end_raw": "2018-07-02T09:30:00",
                            "ends_at": "2018-07-02T09:30:00+00:00",
                        }
                    ),
                },
            )
    finally:
        upgrade_database(pg_engine)
    with pg_sessions() as session:
        stored = dict(session.execute(select(Permit.reference_id, Permit.fingerprint)).all())
        valid = session.execute(
            text(
                "SELECT i.indisvalid, i.indisunique FROM pg_index i JOIN pg_class c"
                " ON c.oid = i.indexrelid WHERE c.relname = 'uq_permits_client_fingerprint'"
            )
        ).one()
    assert tuple(valid) == (True, True)
    client = ClientInfo(id=1, name="m", permit_type="Standard")

    def expected(no: str) -> str:
        body = make_payload(apiToken="t", permitNo=no, zone="Lot 4")
        return PushItem(client, load_permit(body), datetime.now(UTC)).fingerprint()

    assert stored[refs[0]] == expected("A")
    assert stored[refs[1]] is None  # duplicated refs[0] before 0005: kept, without a key
    assert stored[refs[2]] == expected("B")
    assert stored[refs[3]] == expected("C")
    # The receiver finds the first id of each in ONE read.
    reads = SqlReadStore(pg_settings, pg_settings.database_url)
    try:
        found = reads.start_first_ids([(1, expected(no)) for no in "ABC"]).answer()
    finally:
        reads.close()
    assert found == {
        (1, expected("A")): refs[0],
        (1, expected("B")): refs[2],
        (1, expected("C")): refs[3],
    }
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Permit)) == 4


# A table of a new deployment (100 rows, before autovacuum's first ANALYZE) and a small
# analysed one (2,000 rows; a table of one page is scanned whatever the plan).
@pytest.mark.parametrize(("rows", "analysed"), [(100, False), (2000, True)])
def test_the_first_id_read_probes_the_unique_index_on_a_small_table(
    pg_engine: Engine, pg_settings: Settings, pg_token: str, rows: int, analysed: bool
) -> None:
    """PostgreSQL planned the plain join as a full scan of permits on both tables, and the
    LATERAL form, beside ix_permits_client_id (dropped by 0007) on the new one, as a scan of
    every row of the client per key. Checked as planned for the values (a custom plan)
    and as a prepared statement keeps it (the generic plan)."""
    with pg_engine.begin() as connection:
        client_id = connection.execute(text("SELECT id FROM api_clients")).scalar_one()
        connection.execute(
            text(
                "INSERT INTO permits (reference_id, client_id, permit_type, plate,"
                " plate_normalized, start_raw, end_raw, starts_at, ends_at, received_at,"
                " stored_at, last_seq, fingerprint) SELECT 'ref-' || g, :client, 'Standard',"
                " 'P' || g, 'P' || g, '2018-07-02T09:00:00', '2018-07-02T09:30:00', now(),"
                " now(), now(), now(), 0, md5(g::text) || md5(g::text)"
                " FROM generate_series(1, :rows) g"
            ),
            {"client": client_id, "rows": rows},
        )
        if analysed:
            connection.execute(text("ANALYZE permits"))
        stored = connection.execute(
            text("SELECT fingerprint FROM permits WHERE reference_id = 'ref-42'")
        ).scalar_one()
    keys = [(client_id, stored), (client_id, "0" * 64), (client_id + 1, stored)]
    reads = SqlReadStore(pg_settings, pg_settings.database_url)
    try:
        assert reads.start_first_ids(keys).answer() == {(client_id, stored): "ref-42"}
    finally:
        reads.close()
    document = json.dumps([{"client_id": c, "fingerprint": f} for c, f in keys])
    with pg_engine.connect() as connection:
        custom = connection.exec_driver_sql("EXPLAIN " + _FIRST_IDS_PG, {"keys": document})
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        prepared = _FIRST_IDS_PG.replace("%(keys)s", "$1")
        connection.exec_driver_sql(f"PREPARE first_ids (text) AS {prepared}")
        # EXECUTE takes no bound parameter; the document holds digits and hex only.
        generic = connection.exec_driver_sql(f"EXPLAIN EXECUTE first_ids ('{document}')")
        for plan in (custom.all(), generic.all()):
            lines = "\n".join(line for (line,) in plan)
            assert "Index Scan using uq_permits_client_fingerprint on permits" in lines, lines
            assert "Seq Scan" not in lines, lines
