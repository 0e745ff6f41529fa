"""Who is asking: the one token -> client check, for body tokens and Bearer tokens."""

from __future__ import annotations

from aiohttp import web

from ingest.bodies import ApiError
from ingest.state import LIMITER, TOKENS
from shared import codes
from shared.tokens import ClientInfo

# Where the token is sent (names, not secrets): pushes, updates and deletes carry it in the
# body, the reads in the header.
BODY_TOKEN = "apiToken"  # noqa: S105
BEARER_TOKEN = "Authorization"  # noqa: S105


def not_permitted(sent_as: str) -> dict[str, list[str]]:
    """The ``errors`` of a 9002 reply: the token sent under ``sent_as`` is unknown."""
    return {sent_as: ["Is not permitted."]}


async def authenticate(
    request: web.Request, token: str, *, sent_as: str = BODY_TOKEN
) -> ClientInfo:
    """The client owning ``token`` (401, 9002 if none), within its rate limit (429 if not)."""
    client = await request.app[TOKENS].authenticate(token)
    if client is None:
        raise ApiError(401, codes.TOKEN_NOT_PERMITTED, errors=not_permitted(sent_as))
    await request.app[LIMITER].check(client)
    return client


async def authenticate_bearer(request: web.Request) -> ClientInfo:
    """The client of ``Authorization: Bearer <token>``; 401 (9001) when there is none."""
    scheme, _, token = request.headers.get(BEARER_TOKEN, "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, codes.TOKEN_MISSING, errors={BEARER_TOKEN: ["Must be: Bearer <API token>."]}
        )
    return await authenticate(request, token.strip(), sent_as=BEARER_TOKEN)
