"""Waiting for what the workers write to the database."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.models import Permit


def wait_for_row(sessions: sessionmaker[Session], reference_id: str, timeout_s: float) -> Permit:
    """The stored permit of ``reference_id``; fails if no worker stored it in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        with sessions() as session:
            permit = session.scalar(select(Permit).where(Permit.reference_id == reference_id))
        if permit is not None or time.monotonic() > deadline:
            assert permit is not None, f"{reference_id} not stored within {timeout_s} s"
            return permit
        time.sleep(0.02)
