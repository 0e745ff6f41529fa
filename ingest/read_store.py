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
from shared.tokens import ClientInfo


class FirstIds(Protocol):
    """A first-id read under way (SqlReadStore.start_first_ids)."""

    def answer(self) -> dict[tuple[int, str], str]:
        """The reference id stored for each (client id, fingerprint) found; raises when
        the database cannot answer in time."""
        ...

    def cancel(self) -> None:
        """Not wanted after all: a read still waiting for a read thread never runs."""
        ...


@dataclass(frozen=True, slots=True)
class PermitStatus:
    status: str  # stored | disconnected | deleted | failed (queued comes from Redis)
    permit: dict[str, Any] | None
    operations: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ActiveQuery:
    """An enforcement lookup, resolved: permits of the plate covering ``at`` (ended at most
    ``grace`` before); ``client_id``: only that client's (None: every client's); at most
    ``limit``, latest end first."""

    plate_normalized: str
    zone: str | None
    at: datetime
    grace: timedelta
    client_id: int | None
    limit: int


class ReadStore(Protocol):
    async def status(self, client_id: int, reference_id: str) -> PermitStatus | None: ...

    async def active(self, query: ActiveQuery) -> list[dict[str, Any]]: ...

    def owners(self, reference_ids: list[str]) -> dict[str, int]: ...

    def start_first_ids(self, fingerprints: list[tuple[int, str]]) -> FirstIds: ...

    async def clients(self) -> dict[str, ClientInfo]:
        """The active clients by token hash: only for a token set Redis lost."""
        ...

    def close(self) -> None: ...


NO_DATABASE = "this receiver has no database (READ_DATABASE_URL=none)"


class NoDatabase:
    """The reads of a receiver run without a database: each answers 503."""

    async def status(self, client_id: int, reference_id: str) -> PermitStatus | None:
        raise ReadsUnavailableError(NO_DATABASE)

    async def active(self, query: ActiveQuery) -> list[dict[str, Any]]:
        raise ReadsUnavailableError(NO_DATABASE)

    def owners(self, reference_ids: list[str]) -> dict[str, int]:
        raise ReadsUnavailableError(NO_DATABASE)

    def start_first_ids(self, fingerprints: list[tuple[int, str]]) -> FirstIds:
        raise ReadsUnavailableError(NO_DATABASE)

    async def clients(self) -> dict[str, ClientInfo]:
        raise ReadsUnavailableError(NO_DATABASE)

    def close(self) -> None:
        pass
