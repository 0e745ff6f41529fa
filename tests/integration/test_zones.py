"""Zones on real PostgreSQL: the race with reconciliation, concurrent reconciles, and the
whole path (a real worker process, the CLI) with no one running reconcile by hand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from redis import Redis
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from shared.clients import create_client
from shared.config import Settings
from shared.constants import PERSIST_PERMITS_JOB
from shared.models import ApiClient, Permit
from shared.schemas import PermitJob
from shared.zones import add_zone
from tests.factories import make_permit_job, permits_queue
from tests.support.processes import cli, running
from worker.persist import StoreResult, store_permits
from worker.reconcile import ReconcileResult, reconcile
from worker.zones import ZoneIndex


def make_client(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        create_client(session, "meters")
        return session.scalars(select(ApiClient.id)).one()


def stale_index(sessions: sessionmaker[Session]) -> ZoneIndex:
    """A worker's zone map, loaded before the zone exists and not due to reload for an hour."""
    index = ZoneIndex(sessions, ttl_s=3600)
    assert index.zone_id("lot 4") is None
    return index


def store(sessions: sessionmaker[Session], index: ZoneIndex, *permits: PermitJob) -> StoreResult:
    with sessions() as session:
        return store_permits(session, permits, index)


def zone_ids(sessions: sessionmaker[Session]) -> dict[str | None, int | None]:
    with sessions() as session:
        rows = session.execute(select(Permit.zone_name, Permit.zone_id))
        return {name: zone_id for name, zone_id in rows}


def disconnected(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).where(Permit.zone_id.is_(None))) or 0


def add_and_reconcile(sessions: sessionmaker[Session]) -> tuple[int, ReconcileResult]:
    """What `zones add` and the job it queues do: commit the zone, then reconcile."""
    with sessions.begin() as session:
        zone_id = add_zone(session, "Lot 4").id
    return zone_id, reconcile(sessions, ["lot 4"])


def wait_for_catalog_lock_waiter(engine: Engine, timeout_s: float = 10.0) -> None:
    """Until a session of this database waits for an advisory lock (the catalog lock)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            waiting = connection.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
            )
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError(f"nobody waited for the catalog lock within {timeout_s} s")


def test_a_permit_stored_while_its_zone_is_being_added_is_linked_as_it_is_stored(
    pg_sessions: sessionmaker[Session], pg_engine: Engine
) -> None:
    client_id = make_client(pg_sessions)
    index = stale_index(pg_sessions)
    with pg_sessions() as change, ThreadPoolExecutor(1) as pool:
        change.begin()
        lot4 = add_zone(change, "Lot 4").id  # holds the catalog lock, not yet committed
        storing = pool.submit(store, pg_sessions, index, make_permit_job(client_id, "LOT 4"))
        wait_for_catalog_lock_waiter(pg_engine)
        assert not storing.done()
        change.commit()
        assert storing.result(timeout=10).stored == 1
    assert zone_ids(pg_sessions) == {"LOT 4": lot4}  # linked with no reconcile run


def test_a_zone_added_while_a_disconnected_permit_is_being_stored_is_reconciled(
    pg_sessions: sessionmaker[Session], pg_engine: Engine
) -> None:
    client_id = make_client(pg_sessions)
    index = stale_index(pg_sessions)
    about_to_commit, may_commit = threading.Event(), threading.Event()
    storing_session = pg_sessions()

    @event.listens_for(storing_session, "before_commit")
    def pause(_: Session) -> None:
        about_to_commit.set()
        assert may_commit.wait(10)

    with storing_session, ThreadPoolExecutor(2) as pool:
        storing = pool.submit(
            store_permits, storing_session, [make_permit_job(client_id, "Lot 4")], index
        )
        assert about_to_commit.wait(10)  # inserted as disconnected, holding the lock
        adding = pool.submit(add_and_reconcile, pg_sessions)
        wait_for_catalog_lock_waiter(pg_engine)
        assert not adding.done()  # the change waits for the store to commit
        may_commit.set()
        assert storing.result(timeout=10).stored == 1
        lot4, result = adding.result(timeout=10)
    assert result.linked == 1
    assert zone_ids(pg_sessions) == {"Lot 4": lot4}


def test_storing_and_adding_the_zone_at_once_leaves_nothing_disconnected(
    pg_sessions: sessionmaker[Session],
) -> None:
    client_id = make_client(pg_sessions)
    index = stale_index(pg_sessions)
    batches: list[bool] = []  # per batch: was the zone there when it started?
    zone_added = threading.Event()

    def keep_storing() -> None:
        after = 0
        while after < 10:  # a few batches once the zone is surely there
            started_after_zone = zone_added.is_set()
            store(pg_sessions, index, *(make_permit_job(client_id, "lot 4") for _ in range(20)))
            batches.append(started_after_zone)
            after += started_after_zone

    with ThreadPoolExecutor(1) as pool:
        storing = pool.submit(keep_storing)
        while len(batches) < 5:
            time.sleep(0.01)
        add_and_reconcile(pg_sessions)
        zone_added.set()
        storing.result(timeout=60)
    assert batches.count(False) >= 5 and batches.count(True) >= 10
    assert disconnected(pg_sessions) == 0
    assert len(zone_ids(pg_sessions)) == 1  # one spelling, one zone


def test_two_reconciles_at_once_link_each_permit_once(
    pg_sessions: sessionmaker[Session],
) -> None:
    client_id = make_client(pg_sessions)
    index = stale_index(pg_sessions)
    store(pg_sessions, index, *(make_permit_job(client_id, "Lot 4") for _ in range(300)))
    with pg_sessions.begin() as session:
        add_zone(session, "Lot 4")
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(reconcile, pg_sessions, None, 25) for _ in range(2)]
        results = [run.result(timeout=60) for run in runs]
    assert sum(result.linked for result in results) == 300
    assert disconnected(pg_sessions) == 0


def wait_until(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    """Poll ``check`` until true; return the seconds it took."""
    started = time.monotonic()
    while not check():
        elapsed = time.monotonic() - started
        assert elapsed < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_disconnected_permits_are_linked_after_zones_add_and_zones_alias(
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    tmp_path: Path,
) -> None:
    env = {"REDIS_URL": pg_settings.redis_url, "DATABASE_URL": pg_settings.database_url}
    client_id = make_client(pg_sessions)
    permits = [make_permit_job(client_id, "LOT 4"), make_permit_job(client_id, "Parking Four")]
    permits_queue(real_redis).enqueue(PERSIST_PERMITS_JOB, kwargs={"permits": permits})
    with running("worker", env=env, log=tmp_path / "worker.log"):
        wait_until("stored", lambda: len(zone_ids(pg_sessions)) == 2, timeout_s=60)
        assert set(zone_ids(pg_sessions).values()) == {None}

        cli("zones", "add", "Lot 4", env=env)
        wait_until("linked after zones add", lambda: disconnected(pg_sessions) == 1, 15)
        cli("zones", "alias", "Lot 4", "parking four", env=env)
        wait_until("linked after zones alias", lambda: disconnected(pg_sessions) == 0, 15)
    ids = zone_ids(pg_sessions)
    assert ids["LOT 4"] is not None and ids["Parking Four"] == ids["LOT 4"]
