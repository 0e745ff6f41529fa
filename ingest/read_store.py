"""What the handlers need from the database reads, without importing the database layer.

A receiver configured without a database (READ_DATABASE_URL=none) never imports
SQLAlchemy; ``ingest.read_store_sql.SqlReadStore`` is the implementation, loaded only when there is
a database to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.errors import ReadsUnavailableError


@dataclass(frozen=True, slots=True)
class PermitStatus:
    status: str  # stored | disconnected | deleted | failed (queued comes from Redis)
    permit: dict[str, Any] | None
    operations: list[dict[str, Any]]


class ReadStore(Protocol):
    async def status(self, client_id: int, reference_id: str) -> PermitStatus | None: ...

    async def active(
        self,
        plate_normalized: str,
        zone: str | None,
        at: datetime,
        grace: timedelta,
        client_id: int | None,
        limit: int,
    ) -> list[dict[str, Any]]: ...

    def owners(self, reference_ids: list[str]) -> dict[str, int]: ...

    def first_ids(self, fingerprints: list[tuple[int, str]]) -> dict[tuple[int, str], str]: ...

    def close(self) -> None: ...


class NoDatabase:
    """The reads of a receiver run without a database: each answers 503."""

    async def status(self, client_id: int, reference_id: str) -> PermitStatus | None:
        raise ReadsUnavailableError("this receiver has no database (READ_DATABASE_URL=none)")

    async def active(
        self,
        plate_normalized: str,
        zone: str | None,
        at: datetime,
        grace: timedelta,
        client_id: int | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        raise ReadsUnavailableError("this receiver has no database (READ_DATABASE_URL=none)")

    def owners(self, reference_ids: list[str]) -> dict[str, int]:
        raise ReadsUnavailableError("this receiver has no database (READ_DATABASE_URL=none)")

    def first_ids(self, fingerprints: list[tuple[int, str]]) -> dict[tuple[int, str], str]:
        raise ReadsUnavailableError("this receiver has no database (READ_DATABASE_URL=none)")

    def close(self) -> None:
        pass
