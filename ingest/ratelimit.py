"""Per-client rate limit: a token bucket in Redis, shared by every receiver process.

Each check is one Lua call (atomic: read, refill, take, write). Checks that arrive within
the micro-batch window share one pipeline, so a window of requests costs Redis one round
trip, not one each. A client's own rate (``ClientInfo.rate_per_s``/``rate_burst``, set
with ``permit-push tokens limit``) wins over the deployment's default; a rate of 0 means
no limit and costs no Redis call at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis import Redis

from ingest.microbatch import MicroBatcher
from shared.config import Settings
from shared.constants import RATE_KEY_PREFIX
from shared.errors import RateLimitedError
from shared.tokens import ClientInfo

# KEYS[1]: the bucket. ARGV: rate per second, burst, cost. Redis's clock, so receivers
# with different clocks agree. Returns {1, 0} when allowed, else {0, seconds to wait}.
# Floats come back from Lua truncated, hence the string.
BUCKET_SCRIPT = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or burst
local at = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed, wait = 0, (cost - tokens) / rate
if tokens >= cost then
  tokens, allowed, wait = tokens - cost, 1, 0
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True, slots=True)
class RateCheck:
    client: ClientInfo
    cost: int


class RateLimiter:
    """Takes ``cost`` tokens from a client's bucket or raises RateLimitedError."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._default_rate = settings.rate_limit_per_s
        self._default_burst = settings.rate_limit_burst
        self._batcher: MicroBatcher[RateCheck, None] = MicroBatcher(
            "rate-limit",
            self._take,
            window_s=settings.batch_window_ms / 1000,
            max_size=settings.batch_max_permits,
            concurrency=2,
        )

    def limits(self, client: ClientInfo) -> tuple[float, int]:
        rate = client.rate_per_s if client.rate_per_s is not None else self._default_rate
        burst = client.rate_burst if client.rate_burst is not None else self._default_burst
        return rate, burst

    async def check(self, client: ClientInfo, cost: int = 1) -> None:
        """Return when the client may go on; raise RateLimitedError when it may not."""
        rate, _ = self.limits(client)
        if rate > 0:
            await self._batcher.submit(RateCheck(client, cost))

    def _take(self, checks: list[RateCheck]) -> list[Exception | None]:
        """One pipeline of bucket scripts: one Redis round trip for the whole window."""
        outcomes: list[Exception | None] = [None] * len(checks)
        asked: list[int] = []
        with self._redis.pipeline(transaction=False) as pipe:
            for position, check in enumerate(checks):
                rate, burst = self.limits(check.client)
                if check.cost > burst:
                    # Dearer than the whole bucket (a batch of more permits than the burst):
                    # it could never pass, and costs Redis nothing. Retry-After: a full bucket.
                    outcomes[position] = RateLimitedError(
                        max(1, math.ceil(burst / rate)), most=burst
                    )
                    continue
                pipe.eval(
                    BUCKET_SCRIPT, 1, f"{RATE_KEY_PREFIX}{check.client.id}", rate, burst, check.cost
                )
                asked.append(position)
            replies = pipe.execute() if asked else []
        for position, (allowed, wait) in zip(asked, replies, strict=True):
            if not allowed:
                outcomes[position] = RateLimitedError(max(1, math.ceil(float(wait))))
        return outcomes

    async def close(self) -> None:
        await self._batcher.close()
