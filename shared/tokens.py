"""Tokens and the client facts the receiver needs: no database imports here."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What the receiver needs to know about the owner of a token."""

    id: int
    name: str
    permit_type: str
    # Token bucket of this client; None: the deployment's default (0 per second: no limit).
    rate_per_s: float | None = None
    rate_burst: int | None = None
    # push (pushes, updates, deletes; reads its own permits) or enforcement (looks up any
    # plate, never pushes). Entries published before scopes existed carry none: push.
    scope: str = "push"

    @property
    def may_push(self) -> bool:
        return self.scope == "push"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> ClientInfo:
        """Read a published entry; fields this version does not know are ignored.

        A newer worker may publish fields an older receiver has never heard of (a rolling
        deploy): they must not make the entry, or every request, fail. A missing or
        malformed known field still raises (TypeError, ValueError): the caller skips it.
        """
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a token entry must be a JSON object")
        return cls(**{name: data[name] for name in _FIELDS if name in data})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return f"pp-{secrets.token_hex(20)}"  # fits the contract: letters, digits, dashes


_FIELDS = tuple(field.name for field in fields(ClientInfo))
