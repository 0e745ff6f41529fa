"""The JSON bodies of the wire contract: the request read, the replies written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from shared import codes
from shared.codes import MESSAGES

# The ErrorCode an error reply carries, for the metrics middleware (no body parsing).
ERROR_CODE = web.ResponseKey("error_code", int)


async def read_json(request: web.Request, *, max_bytes: int | None = None) -> Any:
    """The decoded body: 415 unless it is declared JSON, 400 (9003) unless it parses.

    ``max_bytes`` replaces the app's body limit (the batch push takes more).
    """
    if request.content_type != "application/json":
        raise ApiError(415, codes.NOT_PARSEABLE, "The Content-Type must be application/json.")
    if max_bytes is not None:
        request = request.clone(client_max_size=max_bytes)
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ApiError(400, codes.NOT_PARSEABLE, "The body is not valid JSON.") from None


def json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def success_body(reference_id: str) -> dict[str, str]:
    return {"status": "success", "reference_id": reference_id, "InternalReferenceID": reference_id}


def error_body(
    code: int, message: str | None = None, errors: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """The contract's error shape; a batch push uses it per index."""
    return {
        "status": "error",
        "ErrorCode": code,
        "ErrorMessage": message or MESSAGES[code],
        "errors": dict(errors or {}),
    }


def error_response(
    status: int,
    code: int,
    *,
    message: str | None = None,
    errors: Mapping[str, Sequence[str]] | None = None,
    retry_after_s: int | None = None,
) -> web.Response:
    body = error_body(code, message, errors)
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    response = json_response(body, status=status, headers=headers)
    response[ERROR_CODE] = code
    return response


class ApiError(Exception):
    """A refusal the middleware renders as the contract's error body."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str | None = None,
        errors: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__(message or MESSAGES[code])
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def response(self) -> web.Response:
        return error_response(self.status, self.code, message=self.message, errors=self.errors)
