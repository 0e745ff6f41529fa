"""Token checks from Redis plus a short-lived local cache.

The database is read on one path only: Redis has lost the token set. Then the database's
set stands in until a worker has published it again, or, while it cannot be read (a
receiver without a database), the last set read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from redis import Redis

from shared.constants import TOKENS_KEY, TOKENS_LOADED_KEY
from shared.data_loss import report_data_loss
from shared.errors import ReadsUnavailableError, TokensNotLoadedError
from shared.tokens import ClientInfo, hash_token

# A miss (a token created a moment ago, or a wrong one) refreshes at most this often, so a
# flood of bad tokens costs Redis one read a second per process.
MISS_REFRESH_S = 1.0

log = structlog.get_logger(__name__)


class TokenCache:
    """The active clients' token hashes, refreshed from Redis every ``ttl_s`` seconds.

    Revoking a token takes effect within ``ttl_s``; a new token works at the next miss.
    A set that vanished from Redis is a data loss, not a revocation (a revocation
    publishes the changed set): the receiver reports it to the workers, which rebuild it
    (shared/data_loss.py). Meanwhile each refresh reads the active clients with
    ``read_clients`` (the database), given ``read_timeout_s``; while that fails, the last
    set read stands.
    """

    def __init__(
        self,
        redis: Redis,
        ttl_s: float,
        read_clients: Callable[[], Awaitable[dict[str, ClientInfo]]],
        read_timeout_s: float,
    ) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._read_clients = read_clients
        self._read_timeout_s = read_timeout_s
        self._clients: dict[str, ClientInfo] = {}
        self._loaded = False
        self._lost = False  # the last refresh found no set in Redis
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        """This receiver has a token set to check against (Redis's, or the last one read)."""
        return self._loaded

    async def authenticate(self, token: str) -> ClientInfo | None:
        """The client owning ``token``, or None when no active client does."""
        digest = hash_token(token)
        if time.monotonic() - self._fetched_at > self._ttl_s:
            await self.refresh()
        client = self._find(digest)
        if client is None and time.monotonic() - self._fetched_at > MISS_REFRESH_S:
            await self.refresh()
            client = self._find(digest)
        if client is None and not self._loaded:
            raise TokensNotLoadedError("no token set: none in Redis, none read yet")
        return client

    def _find(self, digest: str) -> ClientInfo | None:
        # The look-up compares SHA-256 digests, never the token itself: its timing tells
        # nothing usable about a valid token (the constant-time property hmac gives).
        return self._clients.get(digest)

    async def refresh(self) -> None:
        """Reload the token hash; one refresh at a time, however many requests wait."""
        started = time.monotonic()
        async with self._lock:
            if self._fetched_at >= started:
                return  # another request refreshed while this one waited
            published, raw = await asyncio.to_thread(self._fetch)
            if published:
                if self._lost:
                    log.info("token_set_back")
                self._clients, self._loaded, self._lost = _clients(raw), True, False
            else:
                await self._on_loss()
            self._fetched_at = time.monotonic()

    async def _on_loss(self) -> None:
        noticed = not self._lost
        if noticed:
            log.warning("token_set_lost", action="reported to the workers, which rebuild it")
        self._lost = True
        await asyncio.to_thread(report_data_loss, self._redis)
        try:
            clients = await asyncio.wait_for(self._read_clients(), self._read_timeout_s)
        except (ReadsUnavailableError, TimeoutError) as exc:
            # Once a loss, not at every refresh while it lasts.
            (log.warning if noticed else log.debug)(
                "token_set_unreadable", error=type(exc).__name__, action="kept the last set"
            )
            return
        self._clients, self._loaded = clients, True

    def _fetch(self) -> tuple[bool, dict[bytes, bytes]]:
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(TOKENS_LOADED_KEY)
            pipe.hgetall(TOKENS_KEY)
            loaded, raw = pipe.execute()
        return bool(loaded), raw


def _clients(raw: dict[bytes, bytes]) -> dict[str, ClientInfo]:
    """The entries this receiver can read; one it cannot is skipped (logged), never fatal.

    Unknown fields are ignored (ClientInfo.from_json): a newer worker during a rolling
    deploy. An entry that is not a client at all only refuses its own token.
    """
    clients: dict[str, ClientInfo] = {}
    skipped = 0
    for digest, info in raw.items():
        try:
            clients[digest.decode()] = ClientInfo.from_json(info)
        except (ValueError, TypeError, KeyError):
            skipped += 1
    if skipped:
        log.warning("token_entries_skipped", entries=skipped)
    return clients
