"""The worker process's long-lived state: settings, database engine, zone cache.

RQ imports jobs by dotted path and calls them with JSON arguments only, so what a job
needs beyond its arguments lives here, built once per process: by `init_context` when
the worker starts, or from the environment on first use (a plain `rq worker` works too).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import make_engine, make_sessionmaker
from worker.zones import ZoneIndex


@dataclass(frozen=True, slots=True)
class WorkerContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    zones: ZoneIndex


_context: WorkerContext | None = None


def init_context(settings: Settings) -> WorkerContext:
    """Build this process's context from ``settings`` (replacing any earlier one)."""
    global _context
    if _context is not None:
        _context.engine.dispose()
    # SimpleWorker does not fork, so a small ordinary pool is safe here.
    engine = make_engine(settings, pool_size=2, max_overflow=2)
    sessions = make_sessionmaker(engine)
    _context = WorkerContext(settings, engine, sessions, ZoneIndex(sessions, settings.zone_cache_s))
    return _context


def get_context() -> WorkerContext:
    """This process's context, built from the environment if nobody built it yet."""
    return _context if _context is not None else init_context(Settings.from_env())
