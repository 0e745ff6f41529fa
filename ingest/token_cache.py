"""Token checks from Redis plus a short-lived local cache; never from the database."""

from __future__ import annotations

import asyncio
import time

import structlog
from redis import Redis

from shared.constants import TOKENS_KEY, TOKENS_LOADED_KEY
from shared.errors import TokensNotLoadedError
from shared.tokens import ClientInfo, hash_token

# A miss (a token created a moment ago, or a wrong one) refreshes at most this often, so a
# flood of bad tokens costs Redis one read a second per process.
MISS_REFRESH_S = 1.0

log = structlog.get_logger(__name__)


class TokenCache:
    """The active clients' token hashes, refreshed from Redis every ``ttl_s`` seconds.

    Revoking a token takes effect within ``ttl_s``; a new token works at the next miss.
    """

    def __init__(self, redis: Redis, ttl_s: float) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._clients: dict[str, ClientInfo] = {}
        self._loaded = False
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
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
            raise TokensNotLoadedError("the token set has not been published to Redis")
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
            loaded, raw = await asyncio.to_thread(self._fetch)
            self._clients = _clients(raw)
            self._loaded = loaded
            self._fetched_at = time.monotonic()

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
