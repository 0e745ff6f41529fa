"""API clients and their tokens: kept in the database, published to Redis for the receiver.

The receiver checks tokens without the database: against the hash of active clients that
`publish_tokens` writes to Redis. Workers re-publish it every TOKEN_PUBLISH_S, and at
once when Redis lost its data (shared/data_loss.py), so the tokens come back with no one
acting; receivers keep the last set they read meanwhile.

A republish must never bring a revoked token back. One lock (``lock_clients``: a
PostgreSQL advisory lock, SQLite's writer lock) orders every change to the clients and
every publish: a publish reads the clients and writes Redis while holding it, and a change
takes it before it reads or writes and keeps it until it commits. So a worker that read
the clients before a revoke has written Redis before that revoke commits, and every publish
after the commit reads the revoked state. ``change_and_publish`` commits, then publishes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from redis import Redis
from redis.typing import EncodableT, FieldT
from sqlalchemy import false, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.constants import (
    PERMIT_TYPES,
    TOKEN_SCOPES,
    TOKENS_KEY,
    TOKENS_LOADED_KEY,
    TOKENS_LOCK_KEY,
)
from shared.errors import ClientExistsError, ClientNotFoundError, ConfigError
from shared.models import ApiClient, utcnow
from shared.tokens import ClientInfo, hash_token, new_token


def create_client(
    session: Session, name: str, permit_type: str = "Standard", scope: str = "push"
) -> str:
    """Add an API client and return its new token (shown once, never stored)."""
    if permit_type not in PERMIT_TYPES:
        raise ConfigError(f"permit type must be one of {', '.join(PERMIT_TYPES)}")
    if scope not in TOKEN_SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(TOKEN_SCOPES)}")
    if session.scalar(select(ApiClient.id).where(ApiClient.name == name)) is not None:
        raise ClientExistsError(f"an API client named {name!r} already exists")
    token = new_token()
    session.add(
        ApiClient(name=name, permit_type=permit_type, scope=scope, token_sha256=hash_token(token))
    )
    session.flush()
    return token


def revoke_client(session: Session, name: str) -> None:
    client = session.scalar(select(ApiClient).where(ApiClient.name == name))
    if client is None:
        raise ClientNotFoundError(f"no API client is named {name!r}")
    client.active = False
    client.revoked_at = client.revoked_at or utcnow()


def set_rate_limit(session: Session, name: str, per_s: float | None, burst: int | None) -> None:
    """Give client ``name`` its own token bucket (None: the deployment's default)."""
    client = session.scalar(select(ApiClient).where(ApiClient.name == name))
    if client is None:
        raise ClientNotFoundError(f"no API client is named {name!r}")
    if (per_s is not None and per_s < 0) or (burst is not None and burst < 1):
        raise ConfigError("the rate must be >= 0 per second and the burst >= 1")
    client.rate_per_s, client.rate_burst = per_s, burst


def list_clients(session: Session) -> list[ApiClient]:
    return list(session.scalars(select(ApiClient).order_by(ApiClient.name)))


T = TypeVar("T")


def lock_clients(session: Session) -> None:
    """Hold other changes and publishes of the token set off until this transaction ends.

    Call it first in the transaction, before any read: on SQLite the (empty) UPDATE is what
    takes the writer lock and starts the transaction.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(TOKENS_LOCK_KEY)))
    else:
        session.execute(update(ApiClient).where(false()).values(name=ApiClient.name))


def change_and_publish(
    sessions: sessionmaker[Session], redis: Redis, change: Callable[[Session], T]
) -> T:
    """Apply ``change`` to the clients and commit it, then publish the token set.

    The change holds the clients' lock until its commit; the publish reads the committed
    state under the same lock. Redis should be checked first (the CLI does): a change
    committed while Redis is away reaches the receivers with a worker's next republish.
    """
    with sessions.begin() as session:
        lock_clients(session)
        result = change(session)
    with sessions() as session:
        publish_tokens(session, redis)
        session.commit()  # ends the transaction, and so the lock
    return result


def active_clients(session: Session) -> dict[str, ClientInfo]:
    """The token set: each active client's token hash to what the receiver needs of it."""
    active = session.scalars(select(ApiClient).where(ApiClient.active.is_(True))).all()
    return {
        client.token_sha256: ClientInfo(
            client.id,
            client.name,
            client.permit_type,
            client.rate_per_s,
            client.rate_burst,
            client.scope,
        )
        for client in active
    }


def publish_tokens(session: Session, redis: Redis) -> int:
    """Replace the token hash in Redis with the active clients; return how many.

    Takes the clients' lock (``lock_clients``) for the rest of the caller's transaction:
    the caller ends it (commit, rollback or closing the session) after this returns.
    """
    lock_clients(session)
    mapping: dict[FieldT, EncodableT] = {
        digest: info.to_json() for digest, info in active_clients(session).items()
    }
    staging = f"{TOKENS_KEY}:staging"
    # One MULTI/EXEC: the receiver sees the old set or the new one, never half of one.
    with redis.pipeline(transaction=True) as pipe:
        pipe.delete(staging)
        if mapping:
            pipe.hset(staging, mapping=mapping)
            pipe.rename(staging, TOKENS_KEY)
        else:
            pipe.delete(TOKENS_KEY)
        pipe.set(TOKENS_LOADED_KEY, "1")
        pipe.execute()
    return len(mapping)


def rotate_token(session: Session, name: str) -> str:
    """Give client ``name`` a new token (the old one stops working) and return it."""
    client = session.scalar(select(ApiClient).where(ApiClient.name == name))
    if client is None:
        raise ClientNotFoundError(f"no API client is named {name!r}")
    token = new_token()
    client.token_sha256 = hash_token(token)
    client.active, client.revoked_at = True, None
    return token
