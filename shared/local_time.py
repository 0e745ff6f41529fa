"""Naive local times of the deployment's time zone: which name one instant, and which one.

Every push carries two such times, so whether each names one instant is asked twice a
request. Nearly every hour of a year is regular: one UTC offset from its first second to
its last, no daylight-saving gap or overlap in it, so every time in it names one instant.
Each zone remembers, per local hour, whether it is regular (zoneinfo's own answers, asked
once an hour); the hours around a clock change take zoneinfo's path every time.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

# Hours remembered per zone before the memo starts afresh: permits' times cluster around
# now, so a few thousand hours cover them; this bounds a receiver's memory under any input.
MAX_HOURS = 100_000
_LAST_SECOND = timedelta(minutes=59, seconds=59, microseconds=999_999)


class _ZoneHours:
    """Which local hours of one zone are regular, as found so far."""

    def __init__(self, timezone: ZoneInfo) -> None:
        self.timezone = timezone
        self._regular: dict[int, bool] = {}

    def is_regular(self, moment: datetime) -> bool:
        hour = moment.toordinal() * 24 + moment.hour
        try:
            return self._regular[hour]
        except KeyError:
            pass
        first = moment.replace(minute=0, second=0, microsecond=0)
        # Regular: the same offset at both ends of the hour, whichever side of a fold.
        # A clock change inside the hour moves the offset between its ends.
        offsets = {
            at.replace(tzinfo=self.timezone, fold=fold).utcoffset()
            for at in (first, first + _LAST_SECOND)
            for fold in (0, 1)
        }
        if len(self._regular) >= MAX_HOURS:
            self._regular.clear()
        regular = self._regular[hour] = len(offsets) == 1
        return regular


@functools.cache
def _hours(timezone: ZoneInfo) -> _ZoneHours:
    return _ZoneHours(timezone)


def local_time_problem(moment: datetime, timezone: ZoneInfo) -> str | None:
    """Why the naive ``moment`` names no single instant in ``timezone``; None if it does.

    A time in a DST gap (the clocks skip it) does not exist; one in a DST overlap (the
    clocks pass it twice) is ambiguous. Both are refused rather than guessed: a permit an
    hour off is a wrongful ticket or a free hour.
    """
    if _hours(timezone).is_regular(moment):
        return None
    early, late = moment.replace(tzinfo=timezone, fold=0), moment.replace(tzinfo=timezone, fold=1)
    if early.utcoffset() == late.utcoffset():
        return None
    if early.astimezone(UTC).astimezone(timezone).replace(tzinfo=None) != moment:
        return f"Does not exist in {timezone.key}: the clocks skip it (daylight saving time)."
    return f"Is ambiguous in {timezone.key}: the clocks pass it twice (daylight saving time)."


def utc_instant(local: datetime, timezone: ZoneInfo) -> str:
    """A naive time of the deployment's zone as an ISO 8601 instant in UTC. (No memo: it
    would not be faster, the ISO text costs most of it.)"""
    return local.replace(tzinfo=timezone).astimezone(UTC).isoformat()
