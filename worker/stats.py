"""Permit figures the workers publish to Redis, so the receiver's /metrics needs no database.

- ``permits stored``: each job adds the rows it inserted (RETURNING, so re-runs and
  resends add nothing) to a Redis counter once its transaction has committed. A worker
  killed between the commit and the INCRBY under-counts that one batch; a Redis that
  loses its data restarts the counter at 0, which Prometheus treats as a counter reset.
- ``disconnected`` and ``dead letters`` are counts read from the database every
  STATS_PUBLISH_S by one worker (a Redis lock picks it), with a TTL of a few intervals:
  when no worker publishes, the figures disappear from /metrics instead of going stale.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from sqlalchemy.orm import Session

from shared.constants import (
    DB_STATS_KEY,
    DB_STATS_LOCK_KEY,
    PERMITS_STORED_KEY,
    REFERENCE_KEY_PREFIX,
)
from shared.counts import count_database

# The published counts live this many publish intervals without a new publication.
STATS_TTL_INTERVALS = 4


def record_stored(redis: Redis, stored: int, reference_ids: Sequence[str] = ()) -> None:
    """Add ``stored`` new rows to the permits-stored counter and delete the owner keys of
    ``reference_ids`` (stored, duplicates or dead-lettered: the database answers for them
    now), in one round trip."""
    with redis.pipeline(transaction=False) as pipe:
        if stored:
            pipe.incrby(PERMITS_STORED_KEY, stored)
        if reference_ids:
            pipe.unlink(*(REFERENCE_KEY_PREFIX + reference_id for reference_id in reference_ids))
        pipe.execute()


def publish_database_counts(
    session: Session, redis: Redis, interval_s: float, *, force: bool = False
) -> bool:
    """Count and publish, unless another worker did within this interval; True if done.

    ``force`` publishes regardless (a worker leaving behind its last figures).
    """
    lock_ms = max(1, int(interval_s * 1000 * 0.9))  # a little under: the next turn wins it
    if not redis.set(DB_STATS_LOCK_KEY, "1", nx=True, px=lock_ms) and not force:
        return False
    counts = count_database(session)
    with redis.pipeline(transaction=True) as pipe:
        pipe.hset(
            DB_STATS_KEY,
            mapping={"disconnected": counts.disconnected, "dead_letters": counts.dead_letters},
        )
        pipe.pexpire(DB_STATS_KEY, int(interval_s * 1000 * STATS_TTL_INTERVALS))
        pipe.execute()
    return True
