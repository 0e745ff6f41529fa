"""Tokens and the client facts the receiver needs: no database imports here."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What the receiver needs to know about the owner of a token."""

    id: int
    name: str
    permit_type: str
    # Token bucket of this client; None: the deployment's default (0 per second: no limit).
    rate_per_s: float | None = None
    rate_burst: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> ClientInfo:
        return cls(**json.loads(raw))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return f"pp-{secrets.token_hex(20)}"  # fits the contract: letters, digits, dashes
