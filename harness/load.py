"""A fleet of meters: pushes distinct permits and resends each until it gets a 200.

Meters resend on any failure (a 503, a dropped connection, a timeout), as the contract
expects; a resend carries the same body, so it maps to the same reference id. What the
fleet records is what the final count checks against: which permits got a 200, under
which reference id, and how each attempt ended.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy import create_engine, text

from harness.payloads import make_payload

PUSH_PATH = "/api/OC-TOMA/v1/permits/push"


@dataclass
class Fleet:
    """Sends ``count`` permits numbered ``prefix-0..`` with ``concurrency`` meters."""

    base_url: str
    token: str
    count: int
    prefix: str
    concurrency: int = 20
    deadline_s: float = 90.0
    resend_share: float = 0.1  # permits sent again after their 200 (a lost reply)
    request_timeout_s: float = 5.0
    acked: dict[str, str] = field(default_factory=dict)  # permit number -> reference id
    outcomes: Counter[str] = field(default_factory=Counter)
    slow_refusals: list[float] = field(default_factory=list)  # 503s slower than 2 s
    mismatched_resends: int = 0
    ok_after: list[float] = field(default_factory=list)  # monotonic time of each 200
    refused_at: list[float] = field(default_factory=list)  # monotonic time of each 503
    # permit number -> when the request that got its first 200 was sent (monotonic)
    acked_sent_at: dict[str, float] = field(default_factory=dict)
    slowest_ok_s: float = 0.0  # the slowest reply that was a 200
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def permit_no(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def body(self, i: int) -> dict[str, Any]:
        return make_payload(apiToken=self.token, permitNo=self.permit_no(i), LicencePlate=f"F{i}")

    async def run(self) -> None:
        stop_at = time.monotonic() + self.deadline_s
        numbers: asyncio.Queue[int] = asyncio.Queue()
        for i in range(self.count):
            numbers.put_nowait(i)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            meters = [
                asyncio.create_task(self._meter(session, numbers, stop_at))
                for _ in range(self.concurrency)
            ]
            await asyncio.gather(*meters)

    async def _meter(
        self, session: aiohttp.ClientSession, numbers: asyncio.Queue[int], stop_at: float
    ) -> None:
        while not numbers.empty() and time.monotonic() < stop_at:
            i = numbers.get_nowait()
            reference = await self._push_until_acked(session, i, stop_at)
            if reference is not None and random.random() < self.resend_share:
                again = await self._push_until_acked(session, i, stop_at)
                if again is not None and again != reference:
                    self.mismatched_resends += 1

    async def _push_until_acked(
        self, session: aiohttp.ClientSession, i: int, stop_at: float
    ) -> str | None:
        delay_s = 0.05
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                async with session.post(self.base_url + PUSH_PATH, json=self.body(i)) as reply:
                    body = await reply.json(content_type=None)
                    status = reply.status
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.outcomes[type(exc).__name__] += 1
            else:
                self.outcomes[str(status)] += 1
                if status == 200:
                    reference = str(body["reference_id"])
                    self.acked.setdefault(self.permit_no(i), reference)
                    self.acked_sent_at.setdefault(self.permit_no(i), started)
                    self.ok_after.append(time.monotonic())
                    self.slowest_ok_s = max(self.slowest_ok_s, time.monotonic() - started)
                    return reference
                if status == 503:
                    self.refused_at.append(time.monotonic())
                if status == 503 and time.monotonic() - started > 2.0:
                    self.slow_refusals.append(time.monotonic() - started)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.5)
        return None

    def start(self) -> None:
        def run() -> None:
            try:
                asyncio.run(self.run())
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=run, name="fleet", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the fleet did not finish in time"
        if self.error is not None:
            raise self.error

    @property
    def acked_count(self) -> int:
        return len(self.acked)


@dataclass(frozen=True)
class Count:
    """The closing count: what got a 200 against what the database holds."""

    sent: int
    acknowledged: int
    stored: int
    duplicates: int  # rows beyond the first for the same permit
    lost: int  # acknowledged, not stored
    unacknowledged_stored: int  # stored, never acknowledged
    wrong_reference: int  # stored under another id than the one acknowledged

    @property
    def exact(self) -> bool:
        return (
            self.acknowledged == self.stored
            and self.duplicates == 0
            and self.lost == 0
            and self.unacknowledged_stored == 0
            and self.wrong_reference == 0
        )


def stored_rows(database_url: str, prefix: str) -> list[tuple[str, str]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT permit_no, reference_id FROM permits WHERE permit_no LIKE :p"),
                {"p": prefix + "-%"},
            ).all()
    finally:
        engine.dispose()
    return [(str(no), str(ref)) for no, ref in rows]


def count(fleet: Fleet, database_url: str) -> Count:
    rows = stored_rows(database_url, fleet.prefix)
    per_permit = Counter(no for no, _ in rows)
    stored = dict(rows)
    return Count(
        sent=fleet.count,
        acknowledged=len(fleet.acked),
        stored=len(per_permit),
        duplicates=sum(n - 1 for n in per_permit.values()),
        lost=len(fleet.acked.keys() - stored.keys()),
        unacknowledged_stored=len(stored.keys() - fleet.acked.keys()),
        wrong_reference=sum(1 for no, ref in fleet.acked.items() if stored.get(no, ref) != ref),
    )


def wait_for_count(fleet: Fleet, database_url: str, timeout_s: float) -> Count:
    """Wait until every acknowledged permit is stored (or the time is up); the count."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = count(fleet, database_url)
        if result.stored >= result.acknowledged or time.monotonic() > deadline:
            return result
        time.sleep(0.2)
