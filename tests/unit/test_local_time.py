"""Local times: the hour memo answers as zoneinfo does, around every kind of clock change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import local_time
from shared.local_time import local_time_problem, utc_instant

# Zones with the clock changes there are: an hour each way (Toronto, London), half an hour
# (Lord Howe), at 23:00/midnight (Santiago), 2 hours (Troll), none (Kolkata), and
# :45 offsets (Chatham).
ZONES = [
    ZoneInfo(key)
    for key in (
        "America/Toronto",
        "Europe/London",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Antarctica/Troll",
        "Asia/Kolkata",
        "Pacific/Chatham",
    )
]


def zoneinfo_problem(moment: datetime, timezone: ZoneInfo) -> str | None:
    """zoneinfo's own answer: "gap", "overlap" or None."""
    early, late = moment.replace(tzinfo=timezone, fold=0), moment.replace(tzinfo=timezone, fold=1)
    if early.utcoffset() == late.utcoffset():
        return None
    exists = early.astimezone(UTC).astimezone(timezone).replace(tzinfo=None) == moment
    return "overlap" if exists else "gap"


def assert_as_zoneinfo(moment: datetime, timezone: ZoneInfo) -> None:
    problem = local_time_problem(moment, timezone)
    expected = zoneinfo_problem(moment, timezone)
    if expected is None:
        assert problem is None, moment
        offset = moment.replace(tzinfo=timezone).utcoffset()
        assert offset is not None
        assert utc_instant(moment, timezone) == (moment - offset).isoformat() + "+00:00"
    else:
        assert problem is not None
        assert ("skip" in problem) == (expected == "gap"), moment


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59)),
    st.sampled_from(ZONES),
)
def test_any_time_is_answered_as_zoneinfo_answers_it(moment: datetime, timezone: ZoneInfo) -> None:
    assert_as_zoneinfo(moment, timezone)


@pytest.mark.parametrize("timezone", ZONES, ids=lambda zone: zone.key)
def test_every_minute_around_each_clock_change_is_answered_as_zoneinfo_answers_it(
    timezone: ZoneInfo,
) -> None:
    # The clock changes of 2024-2026: where the UTC offset differs an hour later.
    start = datetime(2024, 1, 1, tzinfo=UTC)
    changes = [
        at
        for at in (start + timedelta(hours=h) for h in range(3 * 366 * 24))
        if at.astimezone(timezone).utcoffset()
        != (at + timedelta(hours=1)).astimezone(timezone).utcoffset()
    ]
    if timezone.key == "Asia/Kolkata":
        assert changes == []
    else:
        assert len(changes) >= 4
    for change in changes:
        local = change.astimezone(timezone).replace(tzinfo=None, minute=0, second=0)
        for minute in range(-180, 181):
            assert_as_zoneinfo(local + timedelta(minutes=minute), timezone)
            assert_as_zoneinfo(local + timedelta(minutes=minute, seconds=59), timezone)


def test_the_memo_starts_afresh_past_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_time, "MAX_HOURS", 10)
    zone = ZoneInfo("Europe/Paris")
    for hour in range(25):
        assert local_time_problem(datetime(2030, 1, 1) + timedelta(hours=hour), zone) is None
    assert 0 < len(local_time._hours(zone)._regular) <= 10
