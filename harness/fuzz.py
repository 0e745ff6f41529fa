"""Hostile requests for the fuzz test and `python -m bench.fuzz`: hypothesis strategies.

A request is drawn as raw parts (method, path, headers, query string, body bytes), so a
body can hold what a JSON encoder would never write: duplicate keys, escaped lone
surrogates ("\\ud800"), 1000-deep arrays, megabyte strings.
"""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import strategies as st
from redis import Redis
from yarl import URL

from harness.payloads import SEED_BODY
from ingest.app import create_app
from ingest.routes import ACTIVE_PATH, API_PREFIX, BATCH_PATH, DELETE_PATH, PUSH_PATH, UPDATE_PATH
from shared.config import Settings
from shared.schemas import ALIASES

ATTRIBUTE_NAMES = [name for names in ALIASES.values() for name in names] + [
    "referenceID",
    "referenceid",
    "reference_id",
]


@dataclass(frozen=True)
class HostileRequest:
    method: str
    path: str
    query: str = ""  # already percent-encoded
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


# Any code point but lone surrogates (hypothesis leaves category Cs out): a body holding one
# is refused by the JSON parser as a whole, so they come from `nasty_text`, now and then.
any_text = st.text(max_size=40)
# NUL, lone surrogates, values that grow when upper-cased or NFKC-folded, full-width letters.
NASTY = ["\x00", "PL8\x00RDR", "\ud800", "\udfff", "\ud800\udc00", "ß" * 200, "\ufdfa" * 25]
NASTY += [" ", "\uff30\uff2c\uff18", "PL8\u200bRDR", "PL8\u2013RDR"]
nasty_text = st.one_of(
    any_text,
    st.sampled_from(NASTY),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "ß", "\u200b", "-"]), st.integers(0, 300)),
    st.builds(lambda n: "y" * n, st.sampled_from([65_000, 65_536, 70_000])),  # the body limit
)
# orjson refuses more than 1024 levels; Python recursion fails near 1000: both edges.
depths = st.sampled_from([999, 1000, 1010, 1023, 1024, 1025]) | st.integers(1, 1500)


def _encode(value: Any) -> str:
    """JSON text; lone surrogates come out escaped ("\\ud800"), which JSON allows."""
    return json.dumps(value, ensure_ascii=True)


def _deep(depth: int, opener: str) -> str:
    closer = "]" if opener == "[" else "}"
    inner = '"a":' if opener == "{" else ""
    return (opener + inner) * depth + "1" + closer * depth if inner else "[" * depth + "]" * depth


scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    nasty_text,
).map(_encode)
raw_value = st.recursive(
    scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(any_text.map(_encode), children), max_size=4).map(
            lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
        ),
    ),
    max_leaves=10,
) | st.builds(_deep, depths, st.sampled_from(["[", "{"]))


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{_encode(name)}:{value}" for name, value in pairs) + "}"


@st.composite
def permit_object(draw: st.DrawFn, token: str) -> str:
    """A permit-shaped object: the seed body, some attributes replaced, added or doubled."""
    pairs = [(name, _encode(value)) for name, value in SEED_BODY.items()]
    pairs[0] = ("apiToken", _encode(draw(st.sampled_from([token, token, "unknown-token"]))))
    pairs.append(("referenceID", _encode(draw(st.uuids(version=4)).hex)))
    mode = draw(st.sampled_from(["mutate", "aliases", "both"]))
    for _ in range(draw(st.integers(0, 4)) if mode != "aliases" else 0):
        name = draw(st.sampled_from(ATTRIBUTE_NAMES) | any_text)
        value = draw(raw_value)
        if draw(st.booleans()):
            pairs.append((name, value))  # a duplicate key, or an alias of one
        else:
            pairs = [(n, value if n == name else v) for n, v in pairs] or [(name, value)]
    if mode != "mutate":  # every name of one attribute, with one value
        names = draw(st.sampled_from([n for n in ALIASES.values() if len(n) > 1]))
        deep = st.builds(_deep, st.integers(1000, 1020), st.just("["))
        value = draw(st.one_of(deep, deep, raw_value))
        pairs = [p for p in pairs if p[0] not in names]
        pairs += [(name, value) for name in names]
    if draw(st.booleans()):
        pairs = draw(st.permutations(pairs))
    return _object(pairs)


def _query(pairs: list[tuple[str, str]]) -> str:
    # surrogatepass: a lone surrogate goes out as its (invalid) UTF-8 bytes, percent-encoded.
    return "&".join(
        f"{quote(name.encode('utf-8', 'surrogatepass'))}="
        f"{quote(value.encode('utf-8', 'surrogatepass'))}"
        for name, value in pairs
    )


_header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    | st.sampled_from("\u00e9\u200b\uff30"),
    max_size=80,
)


@st.composite
def hostile_request(draw: st.DrawFn, token: str) -> HostileRequest:
    """One request to push, batch, update, delete, status or lookup."""
    kind = draw(st.sampled_from(["push", "batch", "update", "delete", "status", "lookup"]))
    headers = {"Content-Type": draw(st.sampled_from(["application/json"] * 5 + ["text/plain"]))}
    if draw(st.booleans()):
        headers["Idempotency-Key"] = draw(_header_text)
    if kind in ("status", "lookup"):
        bearer = draw(st.sampled_from([f"Bearer {token}", "Bearer nope"]) | _header_text)
        headers = {"Authorization": bearer}
    if kind == "status":
        shaped = st.text("0123456789abcdefABCDEF-", min_size=36, max_size=36)
        reference = draw(st.uuids(version=4).map(str) | shaped)
        return HostileRequest("GET", f"{API_PREFIX}/{reference}", headers=headers)
    if kind == "lookup":
        names = st.sampled_from(["plate", "zone", "at"]) | any_text
        pairs = draw(st.lists(st.tuples(names, nasty_text | any_text), max_size=4))
        if draw(st.booleans()):
            pairs.insert(0, ("plate", "PL8RDR"))
        return HostileRequest("GET", ACTIVE_PATH, query=_query(pairs), headers=headers)
    one = permit_object(token) | raw_value
    if kind == "batch":
        text = draw(st.lists(one, max_size=5).map(lambda items: "[" + ",".join(items) + "]") | one)
        path = BATCH_PATH
    else:
        text = draw(one)
        path = {"push": PUSH_PATH, "update": UPDATE_PATH, "delete": DELETE_PATH}[kind]
    return HostileRequest("POST", path, headers=headers, body=text.encode())


class Sender:
    """A receiver in its own event loop, so hypothesis can drive it from a plain test."""

    def __init__(self, settings: Settings, redis: Redis, token: str) -> None:
        self.token = token
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(self._start(settings, redis))

    @staticmethod
    async def _start(settings: Settings, redis: Redis) -> TestClient[web.Request, web.Application]:
        client = TestClient(TestServer(create_app(settings, redis=redis)))
        await client.start_server()
        return client

    def status(self, request: HostileRequest) -> int:
        return self.loop.run_until_complete(self._send(request))

    async def _send(self, request: HostileRequest) -> int:
        url = URL(str(self.client.make_url(request.path)) + f"?{request.query}", encoded=True)
        # A file-like body: aiohttp warns (an error under pytest) at a bytes body over 1 MiB,
        # which the fuzz draws now and then; the request on the wire is the same.
        body = io.BytesIO(request.body) if request.body is not None else None
        async with self.client.session.request(
            request.method, url, headers=request.headers, data=body
        ) as reply:
            await reply.read()
            return reply.status

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()
