"""Counts read from the database that `permit-push status` and the workers' figures show."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import DeadLetter, Permit


@dataclass(frozen=True, slots=True)
class DatabaseCounts:
    disconnected: int
    dead_letters: int


def count_database(session: Session) -> DatabaseCounts:
    """Disconnected permits (zone matched nothing) and dead letters not yet requeued.

    The disconnected count reads the partial index ix_permits_disconnected_zone.
    """
    disconnected = session.scalar(
        select(func.count()).select_from(Permit).where(Permit.disconnected)
    )
    dead = session.scalar(
        select(func.count()).select_from(DeadLetter).where(DeadLetter.requeued_at.is_(None))
    )
    return DatabaseCounts(disconnected or 0, dead or 0)
