"""Who is asking: the one token -> client check, for body tokens and Bearer tokens."""

from __future__ import annotations

import math
import time

from aiohttp import web

from ingest.bodies import ApiError
from ingest.state import AUTH_FAILURES, LIMITER, TOKENS
from shared import codes
from shared.errors import RateLimitedError
from shared.tokens import ClientInfo

# Where the token is sent (names, not secrets): pushes, updates and deletes carry it in the
# body, the reads in the header.
BODY_TOKEN = "apiToken"  # noqa: S105
BEARER_TOKEN = "Authorization"  # noqa: S105


def not_permitted(sent_as: str) -> dict[str, list[str]]:
    """The ``errors`` of a 9002 reply: the token sent under ``sent_as`` is unknown."""
    return {sent_as: ["Is not permitted."]}


class AuthFailures:
    """Unknown tokens per remote address, in this process only: no Redis write per attempt.

    Past ``allowed`` unknown tokens within ``window_s`` seconds, an address's unknown
    tokens get 429 (9900) instead of 401 until its window ends. Known tokens from the same
    address are never refused (meters behind one NAT address share it). The table is
    bounded: past ``max_addresses`` it drops the windows that ended, or else starts over.
    """

    def __init__(
        self, allowed: int = 20, window_s: float = 10.0, max_addresses: int = 10_000
    ) -> None:
        self.allowed = allowed
        self.window_s = window_s
        self._max_addresses = max_addresses
        self._seen: dict[str, tuple[float, int]] = {}

    def failed(self, address: str) -> None:
        """Count an unknown token from ``address``; raise RateLimitedError past the allowance."""
        now = time.monotonic()
        started, count = self._seen.get(address, (now, 0))
        if now - started >= self.window_s:
            started, count = now, 0
        if address not in self._seen and len(self._seen) >= self._max_addresses:
            self._prune(now)
        self._seen[address] = (started, count + 1)
        if count + 1 > self.allowed:
            raise RateLimitedError(max(1, math.ceil(started + self.window_s - now)))

    def _prune(self, now: float) -> None:
        self._seen = {a: w for a, w in self._seen.items() if now - w[0] < self.window_s}
        if len(self._seen) >= self._max_addresses:
            self._seen.clear()


def unknown_token(request: web.Request, sent_as: str = BODY_TOKEN) -> ApiError:
    """The 401 (9002) for an unknown token; counted against the address (may raise 429)."""
    request.app[AUTH_FAILURES].failed(request.remote or "")
    return ApiError(401, codes.TOKEN_NOT_PERMITTED, errors=not_permitted(sent_as))


def may_not_push(client: ClientInfo) -> ApiError:
    """The 403 (9002) for a token whose scope does not allow pushes, updates or deletes."""
    return ApiError(
        403,
        codes.TOKEN_NOT_PERMITTED,
        errors={BODY_TOKEN: [f"Is a token of scope {client.scope}: it may not push."]},
    )


async def authenticate(
    request: web.Request, token: str, *, sent_as: str = BODY_TOKEN, to_push: bool = True
) -> ClientInfo:
    """The client owning ``token`` (401, 9002 if none), within its rate limit (429 if not).

    ``to_push``: the request pushes, updates or deletes, which only a push-scope token may
    (403, 9002 for an enforcement token).
    """
    client = await request.app[TOKENS].authenticate(token)
    if client is None:
        raise unknown_token(request, sent_as)
    if to_push and not client.may_push:
        raise may_not_push(client)
    await request.app[LIMITER].check(client)
    return client


async def authenticate_bearer(request: web.Request) -> ClientInfo:
    """The client of ``Authorization: Bearer <token>``; 401 (9001) when there is none."""
    scheme, _, token = request.headers.get(BEARER_TOKEN, "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, codes.TOKEN_MISSING, errors={BEARER_TOKEN: ["Must be: Bearer <API token>."]}
        )
    return await authenticate(request, token.strip(), sent_as=BEARER_TOKEN, to_push=False)
