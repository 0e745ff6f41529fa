"""Update, delete, status and the enforcement lookup, through the receiver and the worker."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from ingest.routes import ACTIVE_PATH, API_PREFIX, DELETE_PATH, PUSH_PATH, UPDATE_PATH
from shared.config import Settings
from shared.constants import REFERENCE_KEY_PREFIX
from shared.models import DeadLetter, Permit, PermitOperation, Zone, ZoneAlias
from tests.factories import make_payload, permits_queue
from worker.context import init_context
from worker.jobs import apply_operations, persist_permits


@pytest.fixture(autouse=True)
def worker_context(settings: Settings) -> Iterator[None]:
    context = init_context(settings)
    yield
    context.engine.dispose()


def take_jobs(redis: fakeredis.FakeRedis) -> list[tuple[str, dict[str, Any]]]:
    """Every queued job as (function name, kwargs), emptied from the queue."""
    queue = permits_queue(redis)
    jobs = [(job.func_name.rsplit(".", 1)[-1], job.kwargs) for job in queue.get_jobs()]
    queue.empty()
    return jobs


def run(jobs: list[tuple[str, dict[str, Any]]]) -> None:
    """Run jobs in the order given, as a worker would (whatever order they were queued)."""
    functions = {"persist_permits": persist_permits, "apply_operations": apply_operations}
    for name, kwargs in jobs:
        functions[name](**kwargs)


def run_all(redis: fakeredis.FakeRedis) -> None:
    run(take_jobs(redis))


async def push(client: TestClient, token: str, **overrides: Any) -> str:
    response = await client.post(PUSH_PATH, json=make_payload(apiToken=token, **overrides))
    assert response.status == 200, await response.text()
    return str((await response.json())["reference_id"])


async def operate(client: TestClient, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = await client.post(path, json=body)
    assert response.content_type == "application/json"
    return response.status, await response.json()


async def get(client: TestClient, path: str, token: str, **params: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    response = await client.get(path, params=params, headers=headers)
    assert response.content_type == "application/json"
    return response.status, await response.json()


def stored(sessions: sessionmaker[Session], reference_id: str) -> Permit:
    with sessions() as session:
        return session.scalars(select(Permit).where(Permit.reference_id == reference_id)).one()


async def test_update_before_the_create_is_stored_is_applied_after_it(
    client: TestClient, redis: fakeredis.FakeRedis, sessions: sessionmaker[Session], token: str
) -> None:
    ref = await push(client, token)
    status, reply = await operate(
        client,
        UPDATE_PATH,
        {
            "apiToken": token,
            "referenceID": ref,
            "plate": "NEW-123",
            "endTime": "2018-07-02T11:00:00",
        },
    )
    assert (status, reply["reference_id"]) == (200, ref)
    (create, update) = take_jobs(redis)
    assert (create[0], update[0]) == ("persist_permits", "apply_operations")
    run([update])  # a second worker took the update before the create was stored
    with sessions() as session:
        assert session.scalar(select(Permit).where(Permit.reference_id == ref)) is None
        parked = session.scalars(select(PermitOperation)).one()
    assert parked.state == "parked"
    run([create])
    permit = stored(sessions, ref)
    assert (permit.plate, permit.plate_normalized, permit.end_raw) == (
        "NEW-123",
        "NEW123",
        "2018-07-02T11:00:00",
    )
    assert permit.amount is not None and str(permit.amount) == "14.50"  # untouched
    status, body = await get(client, f"{API_PREFIX}/{ref}", token)
    assert (status, body["permit_status"]) == (200, "disconnected")  # "Lot 4" is no zone here
    assert [(o["kind"], o["state"]) for o in body["operations"]] == [("update", "applied")]


async def test_delete_then_lookup_says_not_active(
    client: TestClient, redis: fakeredis.FakeRedis, sessions: sessionmaker[Session], token: str
) -> None:
    ref = await push(client, token, LicencePlate="ab 123")
    run_all(redis)
    query = {"plate": "AB-123", "at": "2018-07-02T09:10:00"}
    status, found = await get(client, ACTIVE_PATH, token, **query)
    assert (status, found["active"], [p["reference_id"] for p in found["permits"]]) == (
        200,
        True,
        [ref],
    )
    status, _ = await operate(client, DELETE_PATH, {"apiToken": token, "reference_id": ref})
    assert status == 200
    run_all(redis)
    status, found = await get(client, ACTIVE_PATH, token, **query)
    assert (status, found["active"], found["permits"]) == (200, False, [])
    assert stored(sessions, ref).deleted_at is not None  # kept, marked deleted
    status, body = await get(client, f"{API_PREFIX}/{ref}", token)
    assert body["permit_status"] == "deleted"


async def test_operations_fold_in_the_order_received_whatever_order_jobs_run(
    client: TestClient, redis: fakeredis.FakeRedis, sessions: sessionmaker[Session], token: str
) -> None:
    ref = await push(client, token)
    run_all(redis)
    bodies = [
        {"plate": "FIRST"},  # 1: applied
        {"Amount": "20.00"},  # 2: applied, though its job runs after the delete's
        {},  # 3: delete
        {"plate": "AFTER"},  # 4: rejected: received after the delete, though run first
    ]
    jobs = []
    for changes in bodies:
        path = UPDATE_PATH if changes else DELETE_PATH
        status, _ = await operate(client, path, {"apiToken": token, "referenceID": ref, **changes})
        assert status == 200
        jobs += take_jobs(redis)
    run([jobs[3], jobs[0], jobs[2], jobs[1]])
    permit = stored(sessions, ref)
    assert (permit.plate, str(permit.amount)) == ("FIRST", "20.00")
    assert permit.deleted_at is not None
    with sessions() as session:
        states = session.execute(
            select(PermitOperation.kind, PermitOperation.state)
            .where(PermitOperation.kind != "create")
            .order_by(PermitOperation.seq)
        ).all()
    assert [tuple(s) for s in states] == [
        ("update", "applied"),
        ("update", "applied"),
        ("delete", "applied"),
        ("update", "rejected"),
    ]
    run(jobs)  # re-running every job (RQ retries) changes nothing
    assert stored(sessions, ref).plate == "FIRST"


async def test_an_end_time_before_the_start_is_rejected_by_the_worker(
    client: TestClient, redis: fakeredis.FakeRedis, sessions: sessionmaker[Session], token: str
) -> None:
    ref = await push(client, token)
    body = {"apiToken": token, "referenceID": ref, "endTime": "2018-07-02T08:00:00"}
    assert (await operate(client, UPDATE_PATH, body))[0] == 200
    run_all(redis)
    assert stored(sessions, ref).end_raw == "2018-07-02T09:30:00"
    _, status = await get(client, f"{API_PREFIX}/{ref}", token)
    assert status["operations"][0]["state"] == "rejected"


async def test_a_client_touches_only_its_own_permits(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    add_client: Callable[..., str],
) -> None:
    owner, other = add_client("owner"), add_client("other")
    ref = await push(client, owner)
    for path, extra in ((UPDATE_PATH, {"plate": "STOLEN"}), (DELETE_PATH, {})):
        status, reply = await operate(
            client, path, {"apiToken": other, "referenceID": ref, **extra}
        )
        assert (status, reply["ErrorCode"]) == (404, 9009)
    assert [name for name, _ in take_jobs(redis)] == ["persist_permits"]  # nothing else queued
    assert (await get(client, f"{API_PREFIX}/{ref}", other))[0] == 404
    assert (await get(client, f"{API_PREFIX}/{ref}", owner))[1]["permit_status"] == "queued"


async def test_old_reference_ids_are_checked_in_the_database(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    add_client: Callable[..., str],
) -> None:
    owner, other = add_client("owner"), add_client("other")
    ref = await push(client, owner)
    run_all(redis)
    redis.delete(REFERENCE_KEY_PREFIX + ref)  # a worker drops it once the permit is stored
    body = {"referenceID": ref, "plate": "X1"}
    assert (await operate(client, UPDATE_PATH, {"apiToken": other, **body}))[0] == 404
    assert (await operate(client, UPDATE_PATH, {"apiToken": owner, **body}))[0] == 200
    assert redis.get(REFERENCE_KEY_PREFIX + ref) is None  # the database answers: not written back
    unknown = "0b7a3b52-8c2d-4c55-9a43-0e5bbf1f3f11"
    status, reply = await operate(client, DELETE_PATH, {"apiToken": owner, "referenceID": unknown})
    assert (status, reply["ErrorCode"]) == (404, 9009)
    run_all(redis)
    assert stored(sessions, ref).plate == "X1"


async def test_without_a_database_the_worker_decides_unknown_ids(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    add_client: Callable[..., str],
) -> None:
    owner, other = add_client("owner"), add_client("other")
    no_db = dataclasses.replace(settings, read_database_url="none")
    client: TestClient = await aiohttp_client(create_app(no_db, redis=redis))
    ref = await push(client, owner)
    run_all(redis)
    redis.delete(REFERENCE_KEY_PREFIX + ref)
    never = "0b7a3b52-8c2d-4c55-9a43-0e5bbf1f3f11"
    for token, reference in ((other, ref), (owner, never)):
        status, _ = await operate(
            client, DELETE_PATH, {"apiToken": token, "referenceID": reference}
        )
        assert status == 200  # nobody here can tell yet
    run_all(redis)
    assert stored(sessions, ref).deleted_at is None
    with sessions() as session:
        states = session.scalars(
            select(PermitOperation.state).where(PermitOperation.kind == "delete")
        ).all()
    assert states == ["not_found", "not_found"]
    status, reply = await get(client, f"{API_PREFIX}/{ref}", owner)
    assert (status, reply["ErrorCode"]) == (503, 9901)  # reads need the database


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "attribute"),
    [
        pytest.param(UPDATE_PATH, {"plate": "A"}, 400, 9008, "referenceID", id="update-no-ref"),
        pytest.param(DELETE_PATH, {"referenceID": ""}, 400, 9008, "referenceID", id="empty-ref"),
        pytest.param(DELETE_PATH, {"referenceid": 7}, 400, 9033, "referenceid", id="ref-number"),
        pytest.param(
            UPDATE_PATH,
            {"referenceID": "0b7a3b52-8c2d-4c55-9a43-0e5bbf1f3f11"},
            400,
            9031,
            "body",
            id="no-change",
        ),
        pytest.param(
            UPDATE_PATH,
            {"referenceID": "x", "Amount": "1.5"},
            400,
            9033,
            "Amount",
            id="bad-amount",
        ),
        pytest.param(
            DELETE_PATH, {"referenceID": "not-ours"}, 404, 9009, "referenceID", id="shape"
        ),
    ],
)
async def test_bad_operation_bodies(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    token: str,
    path: str,
    body: dict[str, Any],
    status: int,
    code: int,
    attribute: str,
) -> None:
    got, reply = await operate(client, path, {"apiToken": token, **body})
    assert (got, reply["ErrorCode"]) == (status, code)
    assert attribute in reply["errors"]
    assert take_jobs(redis) == []


async def test_status_reports_failed_and_unknown(
    client: TestClient, redis: fakeredis.FakeRedis, sessions: sessionmaker[Session], token: str
) -> None:
    ref = await push(client, token)
    (create,) = take_jobs(redis)
    create[1]["permits"][0]["amount"] = "not a number"  # the worker dead-letters it
    run([create])
    with sessions() as session:
        assert session.scalar(select(DeadLetter.reference_id)) == ref
    assert (await get(client, f"{API_PREFIX}/{ref}", token))[1]["permit_status"] == "failed"
    unknown = f"{API_PREFIX}/0b7a3b52-8c2d-4c55-9a43-0e5bbf1f3f11"
    assert (await get(client, unknown, token))[0] == 404
    response = await client.get(f"{API_PREFIX}/{ref}")
    assert (response.status, (await response.json())["ErrorCode"]) == (401, 9001)


async def test_lookup_by_zone_name_or_alias_with_grace(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    sessions: sessionmaker[Session],
    token: str,
) -> None:
    with sessions.begin() as session:
        lot = Zone(name="Lot 4", name_normalized="lot 4")
        session.add(lot)
        session.flush()
        session.add(ZoneAlias(alias="North Lot", alias_normalized="north lot", zone_id=lot.id))
    graced = dataclasses.replace(settings, lookup_grace_s=300)
    client: TestClient = await aiohttp_client(create_app(graced, redis=redis))
    in_lot = await push(client, token)
    elsewhere = await push(client, token, zone="Lot 9")
    run_all(redis)

    async def refs(**query: str) -> list[str]:
        status, body = await get(client, ACTIVE_PATH, token, plate="pl8rdr", **query)
        assert status == 200, body
        return sorted(p["reference_id"] for p in body["permits"])

    at = "2018-07-02T09:15:00"
    assert await refs(at=at) == sorted([in_lot, elsewhere])
    assert await refs(at=at, zone=" NORTH   lot ") == [in_lot]
    assert await refs(at=at, zone="lot 9") == [elsewhere]  # unknown zone: by name as pushed
    assert await refs(at=at, zone="Lot 5") == []
    assert await refs(at="2018-07-02T09:34:59") != []  # within the 5 min grace
    assert await refs(at="2018-07-02T09:35:01") == []
    assert await refs(at="2018-07-02T08:59:59Z") == []  # before the start
    assert await refs(at="2018-07-02T11:10:00+02:00") == sorted([in_lot, elsewhere])


@pytest.mark.parametrize(
    ("query", "code", "attribute"),
    [
        pytest.param({}, 9006, "plate", id="plate-missing"),
        pytest.param({"plate": "--"}, 9033, "plate", id="plate-no-characters"),
        pytest.param({"plate": "A" * 26}, 9030, "plate", id="plate-too-long"),
        pytest.param({"plate": "A", "at": "yesterday"}, 9033, "at", id="at-invalid"),
        pytest.param({"plate": "A", "at": "2018-02-30T09:00:00"}, 9033, "at", id="at-not-a-date"),
        pytest.param(
            {"plate": "A", "at": "0001-01-01T00:00:00+05:00"}, 9033, "at", id="at-out-of-range"
        ),
    ],
)
async def test_bad_lookup_queries(
    client: TestClient, token: str, query: dict[str, str], code: int, attribute: str
) -> None:
    status, reply = await get(client, ACTIVE_PATH, token, **query)
    assert (status, reply["ErrorCode"]) == (400, code)
    assert attribute in reply["errors"]


async def test_lookup_needs_a_token(client: TestClient, token: str) -> None:
    response = await client.get(ACTIVE_PATH, params={"plate": "A"})
    assert response.status == 401
    bad = await client.get(
        ACTIVE_PATH, params={"plate": "A"}, headers={"Authorization": "Bearer nope"}
    )
    assert (bad.status, (await bad.json())["ErrorCode"]) == (401, 9002)
