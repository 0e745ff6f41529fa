"""One push against every row of docs/api.md's attribute and error tables."""

from __future__ import annotations

import uuid
from typing import Any

import fakeredis
import orjson
import pytest
from aiohttp.test_utils import TestClient

from ingest.routes import PUSH_PATH
from tests.factories import make_payload, permits_queue, queued_permits

UNKNOWN_TOKEN = "well-formed-but-unknown"


def assert_nothing_queued(redis: fakeredis.FakeRedis) -> None:
    assert permits_queue(redis).count == 0
    assert redis.keys("ingest:dedup:*") == []


async def post(client: TestClient, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post(PUSH_PATH, json=body, **kwargs)
    assert response.content_type == "application/json"
    return response.status, await response.json()


# (overrides of the seed body, ErrorCode, attribute the error is keyed by)
BAD_ATTRIBUTES = [
    pytest.param({"apiToken": None}, 9001, "apiToken", id="token-missing"),
    pytest.param({"apiToken": ""}, 9001, "apiToken", id="token-empty"),
    pytest.param({"apiToken": "has space"}, 9033, "apiToken", id="token-bad-chars"),
    pytest.param({"apiToken": "a" * 51}, 9030, "apiToken", id="token-too-long"),
    pytest.param({"apiToken": 12345}, 9033, "apiToken", id="token-not-string"),
    pytest.param({"Amount": "14.5"}, 9033, "Amount", id="amount-one-decimal"),
    pytest.param({"Amount": "14"}, 9033, "Amount", id="amount-no-decimals"),
    pytest.param({"Amount": "0.00"}, 9033, "Amount", id="amount-below-minimum"),
    pytest.param({"Amount": "-1.00"}, 9033, "Amount", id="amount-negative"),
    pytest.param({"Amount": "1234567.00"}, 9030, "Amount", id="amount-over-9-chars"),
    pytest.param({"Amount": 14.5}, 9033, "Amount", id="amount-json-number"),
    pytest.param({"Amount": None, "amount": "1,50"}, 9033, "amount", id="amount-alias-bad"),
    pytest.param({"CurrencyID": "EUR"}, 9033, "CurrencyID", id="currency-unknown"),
    pytest.param({"CurrencyID": None, "currency": "X"}, 9033, "currency", id="currency-alias"),
    pytest.param({"CurrencyID": "A" * 11}, 9030, "CurrencyID", id="currency-too-long"),
    pytest.param({"startTime": None}, 9031, "startTime", id="start-missing"),
    pytest.param({"startTime": "2018-7-2T09:00:00"}, 9007, "startTime", id="start-unpadded"),
    pytest.param({"startTime": "2018-07-02T9:00:00"}, 9007, "startTime", id="start-unpadded-hour"),
    pytest.param({"startTime": "2018-02-30T09:00:00"}, 9007, "startTime", id="start-not-a-date"),
    pytest.param({"startTime": "2018-07-02 09:00:00"}, 9007, "startTime", id="start-space"),
    pytest.param({"startTime": "2018-07-02T09:00:00Z"}, 9007, "startTime", id="start-offset"),
    pytest.param({"startTime": "2018-07-02T24:00:00"}, 9007, "startTime", id="start-hour-24"),
    pytest.param({"startTime": "2018-07-02T09:60:00"}, 9007, "startTime", id="start-minute-60"),
    pytest.param(
        {"startTime": "\u0662\u0660\u0661\u0668-07-02T09:00:00"},
        9007,
        "startTime",
        id="start-arabic-indic-digits",
    ),
    pytest.param(
        {"startTime": None, "StartDateUtc": "02/07/2018"}, 9007, "StartDateUtc", id="start-alias"
    ),
    pytest.param({"endTime": None}, 9004, "endTime", id="end-missing"),
    pytest.param({"endTime": None, "EndDateUtc": None}, 9004, "endTime", id="end-missing-both"),
    pytest.param({"endTime": "tomorrow"}, 9005, "endTime", id="end-invalid"),
    pytest.param({"endTime": "2018-07-02T09:00:00"}, 9005, "endTime", id="end-equals-start"),
    pytest.param({"endTime": "2018-07-02T08:00:00"}, 9005, "endTime", id="end-before-start"),
    pytest.param(
        {"endTime": None, "EndDateUtc": "2018-13-01T00:00:00"}, 9005, "EndDateUtc", id="end-alias"
    ),
    pytest.param({"LicencePlate": None}, 9006, "LicencePlate", id="plate-missing"),
    pytest.param({"LicencePlate": "   "}, 9006, "LicencePlate", id="plate-blank"),
    pytest.param({"LicencePlate": "A" * 26}, 9030, "LicencePlate", id="plate-too-long"),
    pytest.param({"LicencePlate": "- -"}, 9033, "LicencePlate", id="plate-no-characters"),
    pytest.param({"LicencePlate": "\u009f"}, 9033, "LicencePlate", id="plate-control-character"),
    pytest.param({"LicencePlate": None, "plate": ["A"]}, 9033, "plate", id="plate-alias-list"),
    pytest.param({"permitNo": "P" * 51}, 9030, "permitNo", id="permit-no-too-long"),
    pytest.param(
        {"permitNo": None, "TicketNumber": "T" * 51}, 9030, "TicketNumber", id="ticket-too-long"
    ),
    pytest.param({"zone": "Z" * 201}, 9030, "zone", id="zone-too-long"),
    pytest.param(
        {"zone": None, "ParkingZoneName": {"a": 1}}, 9033, "ParkingZoneName", id="zone-alias-type"
    ),
    pytest.param({"amount": "99.00"}, 9033, "Amount", id="two-names-two-values"),
    pytest.param({"plate": "OTHER"}, 9033, "LicencePlate", id="plate-names-disagree"),
]


@pytest.mark.parametrize(("overrides", "code", "attribute"), BAD_ATTRIBUTES)
async def test_bad_attribute_is_refused_and_changes_nothing(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    token: str,
    overrides: dict[str, Any],
    code: int,
    attribute: str,
) -> None:
    body = make_payload(apiToken=token)
    body.update(overrides)
    body = {name: value for name, value in body.items() if value is not None}
    status, reply = await post(client, body)
    assert status == 400
    assert reply["status"] == "error"
    assert reply["ErrorCode"] == code
    assert isinstance(reply["ErrorMessage"], str) and reply["ErrorMessage"]
    assert attribute in reply["errors"], reply["errors"]
    assert all(reply["errors"][attribute])
    assert_nothing_queued(redis)


async def test_several_failures_report_all_and_the_first_code(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    body = make_payload(apiToken=token, LicencePlate=None, zone="Z" * 201, startTime="x")
    status, reply = await post(client, body)
    assert status == 400
    assert reply["ErrorCode"] == 9006  # plate required comes before 9007 and 9030
    assert set(reply["errors"]) == {"LicencePlate", "zone", "startTime"}
    assert_nothing_queued(redis)


async def test_unknown_token_is_401(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    status, reply = await post(client, make_payload(apiToken=UNKNOWN_TOKEN))
    assert (status, reply["ErrorCode"]) == (401, 9002)
    assert "apiToken" in reply["errors"]
    assert_nothing_queued(redis)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b'["a list"]', id="array"),
        pytest.param(b'"a string"', id="string"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
async def test_unparseable_body_is_9003(
    client: TestClient, redis: fakeredis.FakeRedis, data: bytes
) -> None:
    response = await client.post(PUSH_PATH, data=data, headers={"Content-Type": "application/json"})
    reply = await response.json()
    assert (response.status, reply["ErrorCode"]) == (400, 9003)
    assert_nothing_queued(redis)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_non_json_content_type_is_415(
    client: TestClient, redis: fakeredis.FakeRedis, token: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(
        PUSH_PATH, data=b'{"apiToken": "' + token.encode() + b'"}', headers=headers
    )
    reply = await response.json()
    assert (response.status, reply["status"], reply["ErrorCode"]) == (415, "error", 9003)
    assert_nothing_queued(redis)


async def test_body_over_the_limit_is_413_and_at_the_limit_is_accepted(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    limit = 64 * 1024
    body = make_payload(apiToken=token, firmwarePadding="")
    size = len(orjson.dumps(body))
    body["firmwarePadding"] = "x" * (limit - size)
    encoded = orjson.dumps(body)
    assert len(encoded) == limit
    ok = await client.post(PUSH_PATH, data=encoded, headers={"Content-Type": "application/json"})
    assert ok.status == 200

    too_big = encoded[:-1] + b" }"
    assert len(too_big) == limit + 1
    response = await client.post(
        PUSH_PATH, data=too_big, headers={"Content-Type": "application/json"}
    )
    reply = await response.json()
    assert (response.status, reply["status"]) == (413, "error")
    assert permits_queue(redis).count == 1  # only the first


async def test_wrong_method_is_json_405(client: TestClient) -> None:
    response = await client.get(PUSH_PATH)
    reply = await response.json()
    assert response.status == 405
    assert reply["status"] == "error"
    assert "POST" in response.headers["Allow"]


async def test_unknown_path_is_json_404(client: TestClient) -> None:
    response = await client.post("/api/OC-TOMA/v1/permits/pushx", json={})
    assert response.status == 404
    assert (await response.json())["status"] == "error"


async def test_seed_body_is_accepted_with_a_uuid4_reference(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    status, reply = await post(client, make_payload(apiToken=token))
    assert status == 200
    assert reply["status"] == "success"
    reference = uuid.UUID(reply["reference_id"])
    assert reference.version == 4
    assert str(reference) == reply["reference_id"]  # hyphenated, lower-case
    assert reply["InternalReferenceID"] == reply["reference_id"]
    (permit,) = queued_permits(redis)
    assert permit["reference_id"] == reply["reference_id"]
    assert permit["amount"] == "14.50" and permit["plate_normalized"] == "PL8RDR"


async def test_every_alias_is_accepted(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    body = {
        "apiToken": token,
        "amount": "3.00",
        "currency": "usd",
        "StartDateUtc": "2018-07-02T09:00:00",
        "EndDateUtc": "2018-07-02T10:00:00",
        "plate": " ab-12 c ",
        "TicketNumber": "T-1",
        "ParkingZoneName": "Lot 4",
        "firmware": {"version": 3},  # unknown attributes are ignored
    }
    status, reply = await post(client, body)
    assert status == 200, reply
    (permit,) = queued_permits(redis)
    assert permit["amount"] == "3.00" and permit["currency"] == "USD"
    assert permit["plate"] == "ab-12 c" and permit["plate_normalized"] == "AB12C"
    assert permit["permit_no"] == "T-1" and permit["zone"] == "Lot 4"
    assert permit["starts_at"] == "2018-07-02T09:00:00+00:00"


async def test_same_value_under_two_names_is_accepted(client: TestClient, token: str) -> None:
    status, _ = await post(client, make_payload(apiToken=token, amount="14.50"))
    assert status == 200


async def test_charset_parameter_is_allowed(client: TestClient, token: str) -> None:
    data = orjson.dumps(make_payload(apiToken=token))
    response = await client.post(
        PUSH_PATH, data=data, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status == 200
