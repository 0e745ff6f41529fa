"""The OpenAPI 3.1 description of every endpoint (shared/openapi.yaml), served as JSON."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

import shared

OPENAPI_FILE = Path(shared.__file__).parent / "openapi.yaml"


@cache
def openapi_spec() -> dict[str, Any]:
    """The description as a dict (read once per process)."""
    spec: dict[str, Any] = yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8"))
    return spec


@cache
def _openapi_json() -> bytes:
    return orjson.dumps(openapi_spec())


async def openapi_document(request: web.Request) -> web.Response:
    """GET /api/openapi.json."""
    return web.Response(body=_openapi_json(), content_type="application/json")
