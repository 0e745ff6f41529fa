"""Redis came back without its data: how it is noticed, and how the workers hear of it.

A `FLUSHALL`, a restart without its AOF, or a failover to an empty replica all look the
same from here: the token set's "loaded" marker is gone. That marker is set by every
publish and only a loss removes it (a revocation publishes a new set), so its absence is
the one test of a loss. Workers test it every LOSS_CHECK_S; a receiver that notices first
reports it, and the report wakes a worker's wait at once. Only a worker rebuilds: it
reads the clients under their lock (shared/clients.py), which a receiver, reading on
autocommit connections or a replica, cannot hold.
"""

from __future__ import annotations

from redis import Redis

from shared.constants import DATA_LOSS_KEY, TOKENS_LOADED_KEY

# How often each worker looks for the marker when no receiver has reported a loss.
LOSS_CHECK_S = 0.5
# A report nobody took (no worker runs) does not outlive this.
REPORT_TTL_S = 60


def data_lost(redis: Redis) -> bool:
    return not redis.exists(TOKENS_LOADED_KEY)


def report_data_loss(redis: Redis) -> None:
    """Wake a worker to rebuild; repeated reports stay one entry."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(DATA_LOSS_KEY, "1")
        pipe.ltrim(DATA_LOSS_KEY, 0, 0)
        pipe.expire(DATA_LOSS_KEY, REPORT_TTL_S)
        pipe.execute()


def wait_for_report(redis: Redis, timeout_s: float = LOSS_CHECK_S) -> bool:
    """Block until a receiver reports a loss (True) or ``timeout_s`` passes (False)."""
    return redis.blpop([DATA_LOSS_KEY], timeout=timeout_s) is not None
