"""Zones on SQLite: matching, the catalog rules, import, reconcile, the disconnected report."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from click.testing import CliRunner
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.status import disconnected_zones
from cli.zones import zones as zones_cli
from ingest.read_store_sql import status_of
from shared.clients import create_client
from shared.config import Settings
from shared.constants import PERSIST_PERMITS_JOB
from shared.counts import count_database
from shared.errors import ZoneConflictError, ZoneExistsError, ZoneNotFoundError
from shared.models import ApiClient, Permit
from shared.zone_import import import_zones, read_zone_csv
from shared.zones import (
    ZoneListing,
    add_alias,
    add_zone,
    catalog_version,
    disconnected_names,
    enqueue_reconcile,
    list_zones,
    rename_zone,
)
from tests.factories import make_permit_job, permits_queue
from worker.context import init_context
from worker.jobs import persist_permits
from worker.persist import store_permits
from worker.reconcile import reconcile
from worker.zones import ZoneIndex


@pytest.fixture(autouse=True)
def worker_context(settings: Settings) -> Iterator[None]:
    context = init_context(settings)
    yield
    context.engine.dispose()


@pytest.fixture
def client_id(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        create_client(session, "meters")
        return session.scalars(select(ApiClient.id)).one()


def add(sessions: sessionmaker[Session], name: str, code: str | None = None) -> int:
    with sessions.begin() as session:
        return add_zone(session, name, code).id


def alias(sessions: sessionmaker[Session], zone: str, name: str) -> bool:
    with sessions.begin() as session:
        return add_alias(session, zone, name)[1]


def zone_ids(sessions: sessionmaker[Session]) -> dict[str | None, int | None]:
    """Each stored permit's zone name as sent -> its zone id."""
    with sessions() as session:
        return {
            name: zone_id
            for name, zone_id in session.execute(select(Permit.zone_name, Permit.zone_id))
        }


def store(sessions: sessionmaker[Session], client_id: int, *names: str) -> None:
    persist_permits([make_permit_job(client_id, name) for name in names])


# Matching as the worker stores.


def test_spellings_of_a_zone_link_to_it_and_a_longer_name_does_not(
    sessions: sessionmaker[Session], client_id: int
) -> None:
    lot4 = add(sessions, "Lot 4")
    store(sessions, client_id, "Lot 4", " lot  4 ", "LOT 4", "Lot 44", "Lot\t4")
    assert zone_ids(sessions) == {
        "Lot 4": lot4,
        " lot  4 ": lot4,
        "LOT 4": lot4,
        "Lot\t4": lot4,
        "Lot 44": None,
    }


def test_an_alias_links_and_an_unknown_name_is_stored_disconnected_as_sent(
    sessions: sessionmaker[Session], client_id: int
) -> None:
    lot4 = add(sessions, "Lot 4")
    assert alias(sessions, "lot 4", "Parking Four")
    store(sessions, client_id, "PARKING  four", "Parking 4")
    assert zone_ids(sessions) == {"PARKING  four": lot4, "Parking 4": None}
    with sessions() as session:
        stray = session.scalars(select(Permit).where(Permit.zone_id.is_(None))).one()
    assert (stray.zone_name, stray.zone_normalized) == ("Parking 4", "parking 4")


def test_a_stale_zone_map_is_reloaded_before_a_disconnected_row_is_stored(
    sessions: sessionmaker[Session], client_id: int
) -> None:
    index = ZoneIndex(sessions, ttl_s=3600)  # would not reload by itself for an hour
    assert index.zone_id("lot 4") is None
    lot4 = add(sessions, "Lot 4")
    with sessions() as session:
        result = store_permits(session, [make_permit_job(client_id, "Lot 4")], index)
    assert result.stored == 1
    assert zone_ids(sessions) == {"Lot 4": lot4}


def test_workers_see_a_new_alias_within_the_cache_lifetime(
    sessions: sessionmaker[Session],
) -> None:
    lot4 = add(sessions, "Lot 4")
    index = ZoneIndex(sessions, ttl_s=0.2)
    assert index.zone_id("p4") is None
    alias(sessions, "Lot 4", "P4")
    assert index.zone_id("p4") is None  # cached
    time.sleep(0.25)
    assert index.zone_id("p4") == lot4


# The catalog's rules.


def test_a_name_means_one_zone(sessions: sessionmaker[Session]) -> None:
    add(sessions, "Lot 4", code="L4")
    add(sessions, "Lot 5")
    alias(sessions, "Lot 4", "P4")
    with pytest.raises(ZoneExistsError):
        add(sessions, "  LOT 4")
    with pytest.raises(ZoneConflictError, match="alias of zone 'Lot 4'"):
        add(sessions, "p4")
    with pytest.raises(ZoneConflictError, match="code 'L4' belongs to zone 'Lot 4'"):
        add(sessions, "Lot 6", code="L4")
    with pytest.raises(ZoneConflictError, match="name of zone 'Lot 5'"):
        alias(sessions, "Lot 4", "lot 5")
    with pytest.raises(ZoneConflictError, match="already an alias of zone 'Lot 4'"):
        alias(sessions, "Lot 5", "P4")
    with pytest.raises(ZoneNotFoundError):
        alias(sessions, "Lot 9", "P9")
    with pytest.raises(ZoneConflictError, match="empty"):
        add(sessions, "  ")
    assert alias(sessions, "lot 4", " p4 ") is False  # already there: nothing to do
    assert [(z.name, z.code, z.aliases) for z in _listing(sessions)] == [
        ("Lot 4", "L4", ["P4"]),
        ("Lot 5", None, []),
    ]


def test_every_change_moves_the_catalog_version(sessions: sessionmaker[Session]) -> None:
    versions = [_version(sessions)]
    add(sessions, "Lot 4")
    versions.append(_version(sessions))
    alias(sessions, "Lot 4", "P4")
    versions.append(_version(sessions))
    with sessions.begin() as session:
        rename_zone(session, "Lot 4", "Lot Four")
    versions.append(_version(sessions))
    assert versions == sorted(set(versions)) and len(versions) == 4


def test_rename_keeps_permits_linked_and_the_old_name_as_an_alias(
    sessions: sessionmaker[Session], client_id: int
) -> None:
    lot4 = add(sessions, "Lot 4")
    add(sessions, "Lot 5")
    store(sessions, client_id, "Lot 4")
    with sessions.begin() as session:
        rename_zone(session, "lot 4", "Lot Four")
    with pytest.raises(ZoneExistsError), sessions.begin() as session:
        rename_zone(session, "Lot Four", "LOT 5")
    store(sessions, client_id, "lot 4", "LOT FOUR")
    assert set(zone_ids(sessions).values()) == {lot4}
    assert [(z.name, z.aliases) for z in _listing(sessions)] == [
        ("Lot 5", []),
        ("Lot Four", ["Lot 4"]),
    ]
    with sessions.begin() as session:
        rename_zone(session, "Lot Four", "Lot 4", keep_old_as_alias=False)  # back: alias goes
    assert [(z.name, z.aliases) for z in _listing(sessions)] == [
        ("Lot 4", []),
        ("Lot 5", []),
    ]


# Import.

CSV = """\ufeffname,aliases,code
Lot 4,Parking Four; P4 ,L4
Lot 5,,
lot  4,Lot Four,

"""


def test_import_adds_what_is_missing_and_reports_it(sessions: sessionmaker[Session]) -> None:
    add(sessions, "Lot 5")
    entries = read_zone_csv(io.StringIO(CSV.removeprefix("\ufeff")))
    with sessions.begin() as session:
        first = import_zones(session, entries)
    assert first.added_zones == ["Lot 4"]
    assert first.added_aliases == [
        ("Lot 4", "Parking Four"),
        ("Lot 4", "P4"),
        ("Lot 4", "Lot Four"),
    ]
    assert first.unchanged == 1  # Lot 5 was there
    assert sorted(first.reconcile) == ["lot 4", "lot four", "p4", "parking four"]
    with sessions.begin() as session:
        again = import_zones(session, entries)
    assert (again.added_zones, again.added_aliases, again.unchanged) == ([], [], 3)
    assert [(z.name, z.code, z.aliases) for z in _listing(sessions)] == [
        ("Lot 4", "L4", ["Lot Four", "P4", "Parking Four"]),
        ("Lot 5", None, []),
    ]


def test_import_with_conflicts_adds_nothing_and_lists_them_all(
    sessions: sessionmaker[Session],
) -> None:
    add(sessions, "Lot 4", code="L4")
    text = "name,aliases,code\nLot 6,P6,\nLot 7,lot 4,\nLot 8,,L4\nLot 4,,X\nLot 9,P6,\n"
    entries = read_zone_csv(io.StringIO(text))
    with pytest.raises(ZoneConflictError) as raised, sessions.begin() as session:
        import_zones(session, entries)
    message = str(raised.value)
    assert "4 conflict(s)" in message
    for expected in (
        "line 3: alias 'lot 4' is the name of zone 'Lot 4'",
        "line 4: code 'L4' belongs to zone 'Lot 4'",
        "line 5: zone 'Lot 4' has code 'L4', the file says 'X'",
        "line 6: 'P6' is already an alias of zone 'Lot 6'",
    ):
        assert expected in message
    assert [z.name for z in _listing(sessions)] == ["Lot 4"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Lot 4,P4\n", "header with a name column"),
        ("name,alias\nLot 4,P4\n", "unknown column(s) alias"),
        ("name,aliases\n,P4\n", "line 2: the name is empty"),
    ],
)
def test_a_malformed_file_is_refused(text: str, expected: str) -> None:
    with pytest.raises(ZoneConflictError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_zone_csv(io.StringIO(text))


# Reconciliation.


def test_reconcile_links_matching_names_in_bounded_batches_and_is_idempotent(
    sessions: sessionmaker[Session], client_id: int
) -> None:
    store(sessions, client_id, *["Lot 4", " LOT 4", "lot  4"] * 3, "Lot 44", "Parking Four", "P5")
    lot4 = add(sessions, "Lot 4")
    alias(sessions, "Lot 4", "parking four")
    add(sessions, "Lot 9")  # no permits: one empty batch

    first = reconcile(sessions, batch_rows=2)
    assert (first.names, first.linked) == (3, 10)
    # "lot 4": 9 permits in batches of 2 (the 5th finds 1); "parking four": 1; "lot 9": 0.
    assert first.batches == 5 + 1 + 1
    with sessions() as session:
        links = session.execute(select(Permit.zone_normalized, Permit.zone_id)).all()
    assert {name for name, zone_id in links if zone_id == lot4} == {"lot 4", "parking four"}
    assert sorted(str(name) for name, zone_id in links if zone_id is None) == ["lot 44", "p5"]

    again = reconcile(sessions, batch_rows=2)
    assert (again.linked, again.batches) == (0, 3)


def test_reconcile_of_given_names_leaves_the_others(
    sessions: sessionmaker[Session], client_id: int
) -> None:
    store(sessions, client_id, "Lot 4", "Lot 5")
    add(sessions, "Lot 4")
    lot5 = add(sessions, "Lot 5")
    result = reconcile(sessions, ["lot 5", "nowhere"])
    assert (result.names, result.linked) == (1, 1)
    assert zone_ids(sessions) == {"Lot 4": None, "Lot 5": lot5}


def test_the_reconcile_job_jumps_the_permits_queue_and_links(
    sessions: sessionmaker[Session], settings: Settings, client_id: int
) -> None:
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    store(sessions, client_id, "lot 4")
    lot4 = add(sessions, "Lot 4")
    queue = permits_queue(redis)
    backlog = queue.enqueue(PERSIST_PERMITS_JOB, kwargs={"permits": []})
    job_id = enqueue_reconcile(redis, settings, ["Lot 4"])
    assert queue.job_ids == [job_id, backlog.id]  # taken before the waiting batches
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    job = queue.fetch_job(job_id)
    assert job is not None and job.get_status() == "finished"
    assert job.return_value() == {"names": 1, "linked": 1, "batches": 1}
    assert zone_ids(sessions) == {"lot 4": lot4}


# The disconnected report.


def test_disconnected_names_with_counts_times_and_suggestions_only(
    sessions: sessionmaker[Session], client_id: int
) -> None:
    lot4 = add(sessions, "Lot 4")
    alias(sessions, "Lot 4", "Parking Four")
    add(sessions, "Lot 14")
    start = datetime(2024, 5, 1, 8, tzinfo=UTC)
    permits = [
        make_permit_job(client_id, name, received_at=(start + timedelta(hours=i)).isoformat())
        for i, name in enumerate(["Lot4", "LOT4", "lot4", "Parkng Four", "Zebra", "Lot 4"])
    ]
    persist_permits(permits)

    with sessions() as session:
        report = disconnected_names(session, limit=2)
    assert (report.total_names, report.total_permits) == (3, 5)
    top, second = report.names
    assert (top.normalized, top.sent_as, top.permits) == ("lot4", "LOT4", 3)
    assert (top.first_seen.replace(tzinfo=UTC), top.last_seen.replace(tzinfo=UTC)) == (
        start,
        start + timedelta(hours=2),
    )
    assert top.suggestions[0] == "Lot 4" and "Lot 14" in top.suggestions
    assert (second.normalized, second.suggestions) == ("parkng four", ["Lot 4"])
    # Suggestions are only printed: none of those permits was linked.
    assert [zone_id for zone_id in zone_ids(sessions).values() if zone_id is not None] == [lot4]


def test_the_disconnected_command_prints_names_and_suggestions(
    sessions: sessionmaker[Session], settings: Settings, client_id: int
) -> None:
    add(sessions, "Lot 4")
    store(sessions, client_id, "Lot4", "Lot4", "Zebra")
    result = CliRunner().invoke(zones_cli, ["disconnected"], obj=settings)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["'Lot4'", "2", *lines[1].split()[2:6], "'Lot", "4'"]
    assert lines[2].split()[:2] == ["'Zebra'", "1"] and lines[2].endswith("-")
    assert lines[-1] == "3 disconnected permit(s) under 2 name(s)"


def test_zone_changes_need_redis_before_they_are_made(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    unreachable = Settings(redis_url="redis://127.0.0.1:1/0", database_url=settings.database_url)
    result = CliRunner().invoke(zones_cli, ["add", "Lot 4"], obj=unreachable)
    assert result.exit_code != 0
    assert "cannot reach Redis" in str(result.exception)
    assert _listing(sessions) == []


def test_every_zones_command_has_help() -> None:
    for command in ("add", "alias", "list", "import", "rename", "disconnected", "reconcile"):
        result = CliRunner().invoke(zones_cli, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)


def _listing(sessions: sessionmaker[Session]) -> list[ZoneListing]:
    with sessions() as session:
        return list_zones(session)


def _version(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return catalog_version(session)


def test_a_deleted_permit_is_disconnected_nowhere(
    sessions: sessionmaker[Session], client_id: int
) -> None:
    """status, /metrics and `zones disconnected` count the same permits."""
    waiting, cancelled = make_permit_job(client_id, "Lot 9"), make_permit_job(client_id, "Lot 9")
    assert persist_permits([waiting, cancelled])["stored"] == 2
    with sessions.begin() as session:
        row = session.scalar(select(Permit).where(Permit.reference_id == cancelled["reference_id"]))
        assert row is not None
        row.deleted_at = datetime.now(UTC)
    with sessions() as session:
        assert count_database(session).disconnected == 1
        assert disconnected_zones(session) == [("lot 9", 1)]
        report = disconnected_names(session)
        assert (report.total_names, report.total_permits) == (1, 1)
        assert status_of(session, client_id, cancelled["reference_id"]).status == "deleted"
        assert status_of(session, client_id, waiting["reference_id"]).status == "disconnected"
