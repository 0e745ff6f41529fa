"""The order numbers of updates and deletes: one Redis counter that never goes backwards.

Every operation is numbered from ``ingest:opseq`` in the order received. That number must
grow across everything that can happen to Redis:

- the key is gone (Redis lost its data): a plain INCRBY would restart at 1;
- the key is back with an old value (Redis restarted from an older snapshot or replica):
  ``SET NX`` does nothing then, and INCRBY hands out numbers already used;
- the database holds numbers above the clock (a receiver whose clock ran ahead).

So each take is one script: INCRBY, then, if the result is below a floor, the counter
jumps to the floor. The receiver's floor is the clock in microseconds (above every number
handed out before, unless more than 10^6 a second were); the workers raise the counter to
the largest number the database holds (``raise_to``), at start and every
TOKEN_PUBLISH_S, which covers clocks that disagree.
"""

from __future__ import annotations

import time
from typing import Any

from redis import Redis

from shared.constants import OPERATION_SEQ_KEY

# KEYS[1]: the counter. ARGV[1]: how many numbers to take (0: none). ARGV[2]: the floor,
# as a decimal string (Lua's numbers are doubles: the string is what is stored, exactly).
_TAKE = """
local last = redis.call('INCRBY', KEYS[1], ARGV[1])
if last < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return last
"""


def take(redis: Redis, pipe: Any, count: int) -> None:
    """Queue on ``pipe`` the taking of ``count`` numbers; its result is the last of them."""
    floor = time.time_ns() // 1000 + count
    redis.register_script(_TAKE)(keys=[OPERATION_SEQ_KEY], args=[count, str(floor)], client=pipe)


def take_now(redis: Redis, count: int) -> list[int]:
    """Take ``count`` numbers at once (the CLI requeuing an operation)."""
    with redis.pipeline(transaction=False) as pipe:
        take(redis, pipe, count)
        (last,) = pipe.execute()
    first = int(last) - count + 1
    return list(range(first, first + count))


def raise_to(redis: Redis, floor: int) -> None:
    """Make sure the next number taken is above ``floor`` (the database's largest)."""
    redis.register_script(_TAKE)(keys=[OPERATION_SEQ_KEY], args=[0, str(floor)])
