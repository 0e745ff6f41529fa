"""CORS: preflights, Access-Control-Allow-Origin on successes and on the JSON errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from aiohttp.test_utils import TestClient

from ingest.app import create_app
from ingest.cors import MAX_AGE_S
from ingest.routes import ACTIVE_PATH, API_PREFIX, BATCH_PATH, DELETE_PATH, PUSH_PATH, UPDATE_PATH
from shared.config import Settings
from shared.errors import ConfigError
from tests.factories import make_payload, queued_permits

PAGE = "https://kiosk.example.net"
SOME_ID = "1a9b5375-cb75-4c71-9939-eeae550b09ac"
# What Chromium sends before the seed's XMLHttpRequest (header names in lower case, sorted).
SEED_PREFLIGHT = {
    "Origin": PAGE,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "accept,content-type",
}


def preflight(method: str, headers: str, origin: str = PAGE) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.mark.parametrize(
    ("path", "method", "headers"),
    [
        (PUSH_PATH, "POST", "accept,cache-control,content-type,idempotency-key,x-request-id"),
        (BATCH_PATH, "POST", "content-type"),
        (UPDATE_PATH, "POST", "content-type"),
        (DELETE_PATH, "POST", "content-type"),
        (f"{API_PREFIX}/{SOME_ID}", "GET", "authorization"),
        (ACTIVE_PATH, "GET", "authorization"),
    ],
)
async def test_preflight_allows_the_page_its_method_and_headers(
    client: TestClient, path: str, method: str, headers: str
) -> None:
    response = await client.options(path, headers=preflight(method, headers))
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert response.headers["Access-Control-Allow-Methods"] == method
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert allowed == set(headers.split(","))
    assert response.headers["Access-Control-Max-Age"] == str(MAX_AGE_S)
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize(
    "headers",
    [
        preflight("PUT", "content-type"),  # a method the endpoint does not have
        preflight("POST", "content-type,x-custom"),  # a header that is not allowed
        {"Access-Control-Request-Method": "POST"},  # no Origin: not a preflight
    ],
)
async def test_preflight_refuses_other_methods_and_headers(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = await client.options(PUSH_PATH, headers=headers)
    assert response.status == 403
    reply = await response.json()
    assert (reply["status"], reply["ErrorCode"]) == ("error", 9003)
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_push_from_a_page_reads_its_reply_and_headers(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    response = await client.post(
        PUSH_PATH, json=make_payload(apiToken=token), headers={"Origin": PAGE}
    )
    assert response.status == 200
    assert (await response.json())["status"] == "success"
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    exposed = set(response.headers["Access-Control-Expose-Headers"].split(","))
    assert exposed == {"Retry-After", "X-Request-ID"}
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert [permit["plate"] for permit in queued_permits(redis)] == ["PL8RDR"]


async def test_a_request_without_origin_gets_no_cors_headers(
    client: TestClient, token: str
) -> None:
    response = await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    assert response.status == 200
    assert not [name for name in response.headers if name.startswith("Access-Control-")]


async def test_error_replies_carry_cors_so_the_page_reads_the_json(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    tight = dataclasses.replace(settings, rate_limit_per_s=0.01, rate_limit_burst=1)
    client: TestClient = await aiohttp_client(create_app(tight, redis=redis))
    origin = {"Origin": PAGE}
    sent = [
        (PUSH_PATH, make_payload(apiToken=token, LicencePlate="")),  # 400, 9006
        (PUSH_PATH, make_payload(apiToken="not-a-token")),  # 401, 9002
        (PUSH_PATH, make_payload(apiToken=token, permitNo="1")),  # 200, takes the burst
        (PUSH_PATH, make_payload(apiToken=token, permitNo="2")),  # 429, 9900
        (UPDATE_PATH, {"apiToken": token}),  # 400, 9008
    ]
    replies = []
    for path, body in sent:
        response = await client.post(path, json=body, headers=origin)
        assert response.headers["Access-Control-Allow-Origin"] == PAGE
        replies.append((response.status, (await response.json()).get("ErrorCode")))
    assert replies == [(400, 9006), (401, 9002), (200, None), (429, 9900), (400, 9008)]
    status = await client.get(f"{API_PREFIX}/{SOME_ID}", headers=origin)  # no Bearer
    assert (status.status, status.headers["Access-Control-Allow-Origin"]) == (401, PAGE)
    not_json = await client.post(
        PUSH_PATH, data=b"{}", headers={**origin, "Content-Type": "text/plain"}
    )
    assert (not_json.status, not_json.headers["Access-Control-Allow-Origin"]) == (415, PAGE)
    too_big = await client.post(
        PUSH_PATH,
        data=b" " * (settings.max_body_bytes + 1),
        headers={**origin, "Content-Type": "application/json"},
    )
    assert (too_big.status, too_big.headers["Access-Control-Allow-Origin"]) == (413, PAGE)


async def test_a_503_carries_cors_and_exposes_retry_after(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    # A receiver that never read a token set and has no database to read the clients from.
    no_reads = dataclasses.replace(settings, read_database_url="none")
    client: TestClient = await aiohttp_client(create_app(no_reads, redis=redis))  # type: ignore[assignment]
    redis.flushall()
    response = await client.post(
        PUSH_PATH, json=make_payload(apiToken=token), headers={"Origin": PAGE}
    )
    assert response.status == 503
    assert (await response.json())["ErrorCode"] == 9901
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


async def test_bearer_read_from_a_page(client: TestClient, token: str) -> None:
    response = await client.get(
        ACTIVE_PATH,
        params={"plate": "PL8RDR"},
        headers={"Origin": PAGE, "Authorization": f"Bearer {token}"},
    )
    assert response.status == 200, await response.text()
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    unknown = await client.get(
        f"{API_PREFIX}/{SOME_ID}", headers={"Origin": PAGE, "Authorization": f"Bearer {token}"}
    )
    assert (unknown.status, unknown.headers["Access-Control-Allow-Origin"]) == (404, PAGE)


async def test_probes_and_unknown_paths_answer_no_cors(client: TestClient) -> None:
    for path in ("/healthz", "/metrics", "/api/openapi.json", "/nowhere"):
        response = await client.options(path, headers=SEED_PREFLIGHT)
        assert response.status in (404, 405), path
        assert "Access-Control-Allow-Origin" not in response.headers, path


async def test_only_the_listed_origins_are_allowed(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    token: str,
) -> None:
    listed = dataclasses.replace(
        settings, cors_allow_origins="https://Kiosk.example.net, http://127.0.0.1:8081"
    )
    client: TestClient = await aiohttp_client(create_app(listed, redis=redis))
    for origin in (PAGE, "http://127.0.0.1:8081"):
        allowed = await client.options(PUSH_PATH, headers=preflight("POST", "content-type", origin))
        assert allowed.headers["Access-Control-Allow-Origin"] == origin
    other = "https://elsewhere.example.org"
    refused = await client.options(PUSH_PATH, headers=preflight("POST", "content-type", other))
    assert refused.status == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    # CORS is not access control: the push is served (the token decides), but a page of
    # another origin cannot read the reply.
    served = await client.post(
        PUSH_PATH, json=make_payload(apiToken=token), headers={"Origin": other}
    )
    assert served.status == 200
    assert "Access-Control-Allow-Origin" not in served.headers


def test_the_default_allows_any_origin() -> None:
    assert Settings().cors_origins == ("*",)
    assert Settings.from_env(
        {"CORS_ALLOW_ORIGINS": "https://a.example, http://[::1]:8081"}
    ).cors_origins == (
        "https://a.example",
        "http://[::1]:8081",
    )


@pytest.mark.parametrize(
    "value",
    [
        "https://kiosk.example.net/",  # a trailing slash never matches an Origin header
        "https://kiosk.example.net/page",
        "kiosk.example.net",
        "https://*.example.net",
        "*, https://kiosk.example.net",
        "https://a.example,",
    ],
)
def test_an_origin_that_would_never_match_fails_at_start(value: str) -> None:
    with pytest.raises(ConfigError, match="CORS_ALLOW_ORIGINS"):
        Settings.from_env({"CORS_ALLOW_ORIGINS": value})
