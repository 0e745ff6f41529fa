"""Hostile and broken clients, on the real Redis and PostgreSQL (docs/reliability.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest
from aiohttp.test_utils import TestClient
from redis import Redis
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from ingest.routes import ACTIVE_PATH, BATCH_PATH, PUSH_PATH, UPDATE_PATH
from shared.clients import create_client, publish_tokens, set_rate_limit
from shared.config import Settings
from shared.constants import BATCH_PUSH_MAX
from shared.db import alembic_config, upgrade_database
from shared.models import DeadLetter, Permit, Zone
from shared.schemas import load_permit
from tests.factories import make_payload, make_permit_job, queued_permits, run_worker
from worker.context import init_context
from worker.persist import store_permits
from worker.zones import ZoneIndex

DEEP = 1000


@pytest.fixture
def worker_context(pg_settings: Settings) -> Iterator[None]:
    context = init_context(pg_settings)
    yield
    context.engine.dispose()


def deep_array(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


async def make_client(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    sessions: sessionmaker[Session],
    redis: Redis,
    name: str = "meters",
) -> tuple[TestClient, str]:
    with sessions.begin() as session:
        token = create_client(session, name)
        session.flush()
        publish_tokens(session, redis)
    client: TestClient = await aiohttp_client(create_app(settings, redis=redis))
    return client, token


async def test_two_aliases_holding_deep_arrays_get_400_not_500(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
) -> None:
    client, token = await make_client(aiohttp_client, pg_settings, pg_sessions, real_redis)
    body = {**make_payload(apiToken=token, Amount=None), "referenceID": str(uuid4())}
    text = orjson_object(body, Amount=deep_array(), amount=deep_array())
    headers = {"Content-Type": "application/json"}
    for path in (PUSH_PATH, UPDATE_PATH):
        reply = await client.post(path, data=text, headers=headers)
        assert reply.status == 400, (path, await reply.text())
        assert (await reply.json())["ErrorCode"] == 9033
    reply = await client.post(BATCH_PATH, data=f"[{text}]", headers=headers)
    assert reply.status == 200
    assert (await reply.json())["results"][0]["ErrorCode"] == 9033


def orjson_object(body: dict[str, Any], **raw: str) -> str:
    """``body`` as JSON text with ``raw`` members written as given (not encoded)."""
    members = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in body.items()]
    members += [f"{json.dumps(k)}: {v}" for k, v in raw.items()]
    return "{" + ", ".join(members) + "}"


@pytest.mark.parametrize(
    ("attribute", "value", "code"),
    [
        ("LicencePlate", "PL8\x00RDR", 9033),
        ("zone", "Lot\x00 4", 9033),
        ("permitNo", "L4\x001138", 9033),
        ("zone", "\ud800", 9003),  # a lone surrogate: the JSON parser refuses the body
        ("zone", "ß" * 200, 9030),  # 400 characters once case-folded
        ("LicencePlate", "\u0390" * 25, 9030),  # 75 characters once upper-cased
    ],
)
async def test_what_postgresql_would_refuse_gets_400_and_no_dead_letter(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    worker_context: None,
    attribute: str,
    value: str,
    code: int,
) -> None:
    client, token = await make_client(aiohttp_client, pg_settings, pg_sessions, real_redis)
    text = orjson_object(
        make_payload(apiToken=token, **{attribute: None}), **{attribute: json.dumps(value)}
    )
    headers = {"Content-Type": "application/json"}
    reply = await client.post(PUSH_PATH, data=text, headers=headers)
    good = await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo="ok"))
    assert good.status == 200
    run_worker(real_redis)
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(DeadLetter)) == 0
        stored = session.scalars(select(Permit)).all()
    assert [p.permit_no for p in stored] == ["ok"]
    assert (reply.status, (await reply.json())["ErrorCode"]) == (400, code)


def test_one_bad_row_costs_its_batch_a_few_transactions_not_one_per_row(
    pg_engine: Engine, pg_sessions: sessionmaker[Session]
) -> None:
    with pg_sessions.begin() as session:
        create_client(session, "meters")
    client_id = 1
    permits = [make_permit_job(client_id, permit_no=str(i)) for i in range(200)]
    permits[137] = make_permit_job(client_id, permit_no="L4\x001138")  # PostgreSQL refuses NUL
    transactions: list[object] = []
    count = transactions.append
    event.listen(pg_engine, "begin", count)
    try:
        with pg_sessions() as session:
            result = store_permits(session, permits, ZoneIndex(pg_sessions, ttl_s=60))
    finally:
        event.remove(pg_engine, "begin", count)
    assert (result.stored, result.dead_lettered) == (199, 1)
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Permit)) == 199
        assert session.scalar(select(DeadLetter.reference_id)) == permits[137]["reference_id"]
    # Bisecting: about 2 log2(200) + 2 transactions; the row-by-row retry took 202.
    assert len(transactions) <= 20, len(transactions)


async def test_a_batch_costs_one_token_per_permit(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
) -> None:
    with pg_sessions.begin() as session:
        token = create_client(session, "meters")
        session.flush()
        set_rate_limit(session, "meters", 1, 5)  # tokens limit meters --per-s 1 --burst 5
        publish_tokens(session, real_redis)
    client: TestClient = await aiohttp_client(create_app(pg_settings, redis=real_redis))

    def batch(size: int) -> list[dict[str, str]]:
        return [make_payload(apiToken=token, permitNo=str(uuid4())) for _ in range(size)]

    too_big = await client.post(BATCH_PATH, json=batch(100))
    assert too_big.status == 429, await too_big.text()
    assert int(too_big.headers["Retry-After"]) >= 1
    assert (await too_big.json())["ErrorCode"] == 9900
    assert (await client.post(BATCH_PATH, json=batch(5))).status == 200  # the whole bucket
    again = await client.post(BATCH_PATH, json=batch(3))
    assert again.status == 429
    assert len(queued_permits(real_redis)) == 5


async def test_a_batch_checks_tokens_before_validating_anything(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, token = await make_client(aiohttp_client, pg_settings, pg_sessions, real_redis)
    validated: list[object] = []

    def counting_load(body: Any, **limits: Any) -> Any:
        validated.append(body)
        return load_permit(body, **limits)

    monkeypatch.setattr("ingest.push.load_permit", counting_load)
    strangers = [make_payload(apiToken=f"unknown-{i}") for i in range(BATCH_PUSH_MAX)]
    refused = await client.post(BATCH_PATH, json=strangers)
    assert (refused.status, (await refused.json())["ErrorCode"]) == (401, 9002)
    assert validated == []
    mixed = [make_payload(apiToken=token), *strangers[1:]]
    reply = await (await client.post(BATCH_PATH, json=mixed)).json()
    assert (reply["accepted"], reply["rejected"]) == (1, BATCH_PUSH_MAX - 1)
    assert {r["ErrorCode"] for r in reply["results"][1:]} == {9002}
    assert len(validated) == 1


async def test_repeated_unknown_tokens_from_one_address_get_429_without_redis_writes(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
) -> None:
    client, token = await make_client(aiohttp_client, pg_settings, pg_sessions, real_redis)
    keys = real_redis.dbsize()
    statuses = []
    for i in range(25):
        reply = await client.post(PUSH_PATH, json=make_payload(apiToken=f"guess-{i}"))
        statuses.append(reply.status)
    assert statuses == [401] * 20 + [429] * 5
    assert 1 <= int(reply.headers["Retry-After"]) <= 10
    assert real_redis.dbsize() == keys  # counted in the process, not in Redis
    assert (await client.post(PUSH_PATH, json=make_payload(apiToken=token))).status == 200
    batch = await client.post(BATCH_PATH, json=[make_payload(apiToken="guess-x")])
    assert batch.status == 429


@pytest.mark.parametrize(
    "plate",
    ["PL8\u200bRDR", "\uff30\uff2c\uff18\uff32\uff24\uff32", "PL8\u2013RDR", "pl8\u00a0rdr"],
    ids=["zero-width-space", "full-width", "en-dash", "no-break-space"],
)
async def test_look_alike_plates_match_the_lookup_and_the_resend(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    worker_context: None,
    plate: str,
) -> None:
    client, token = await make_client(aiohttp_client, pg_settings, pg_sessions, real_redis)
    first = await (await client.post(PUSH_PATH, json=make_payload(apiToken=token))).json()
    resend = await client.post(PUSH_PATH, json=make_payload(apiToken=token, LicencePlate=plate))
    assert (await resend.json())["reference_id"] == first["reference_id"]  # de-duplicated
    other = await client.post(
        PUSH_PATH, json=make_payload(apiToken=token, LicencePlate=plate, permitNo="2")
    )
    run_worker(real_redis)
    found = await client.get(
        ACTIVE_PATH,
        params={"plate": "PL8RDR", "at": "2018-07-02T09:10:00"},
        headers={"Authorization": f"Bearer {token}"},
    )
    references = {p["reference_id"] for p in (await found.json())["permits"]}
    assert references == {first["reference_id"], (await other.json())["reference_id"]}
    with pg_sessions() as session:
        assert session.scalar(select(Permit.plate).where(Permit.permit_no == "2")) == plate


def old_plate(plate: str) -> str:
    """The plate's normal form before revision 0004."""
    return re.sub(r"[\s-]+", "", plate).upper()


def old_zone(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip()).casefold()


def test_migration_0004_renormalizes_rows_stored_under_the_old_forms(
    pg_engine: Engine, pg_sessions: sessionmaker[Session]
) -> None:
    from alembic import command

    with pg_engine.connect() as connection:
        command.downgrade(alembic_config(connection), "0003")
        connection.commit()
    plates = ["PL8\u200bRDR", "\uff30\uff2c\uff18\uff32\uff24\uff32", "pl8\u2013rdr", "PL8RDR"]
    rows = 2500  # three keyset chunks of 1000
    try:
        with pg_engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO api_clients (id, name, permit_type, active, token_sha256,"
                    " created_at) VALUES (1, 'm', 'Standard', true, 'x', now())"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO zones (name, name_normalized, created_at)"
                    " VALUES (:name, :normal, now())"
                ),
                {"name": "Lot\u200b 4", "normal": old_zone("Lot\u200b 4")},
            )
            connection.execute(
                text(
                    "INSERT INTO permits (reference_id, client_id, permit_type, plate,"
                    " plate_normalized, zone_name, zone_normalized, start_raw, end_raw,"
                    " starts_at, ends_at, received_at, stored_at) VALUES (:ref, 1, 'Standard',"
                    " :plate, :normal, :zone, :zone_normal, 'a', 'b', now(), now(), now(), now())"
                ),
                [
                    {
                        "ref": str(uuid4()),
                        "plate": plates[i % 4],
                        "normal": old_plate(plates[i % 4]),
                        "zone": "\uff2c\uff4f\uff54 4",  # full-width "Lot"
                        "zone_normal": old_zone("\uff2c\uff4f\uff54 4"),
                    }
                    for i in range(rows)
                ],
            )
        with pg_sessions() as session:  # the old forms really differ
            assert session.scalar(select(func.count(func.distinct(Permit.plate_normalized)))) == 4
    finally:
        upgrade_database(pg_engine)
    with pg_sessions() as session:
        forms = session.execute(
            select(Permit.plate_normalized, Permit.zone_normalized, func.count()).group_by(
                Permit.plate_normalized, Permit.zone_normalized
            )
        ).all()
        assert forms == [("PL8RDR", "lot 4", rows)]
        assert set(session.scalars(select(Permit.plate))) == set(plates)  # kept as sent
        assert session.scalar(select(Zone.name_normalized)) == "lot 4"
