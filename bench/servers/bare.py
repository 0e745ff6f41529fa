"""Baseline 1, the ceiling: parse the JSON body and reply JSON, nothing else.

python -m bench.servers.bare --port 8081 --processes 2
"""

from __future__ import annotations

import orjson
from aiohttp import web

from bench.servers.common import PUSH_PATH, parse_args, serve, success_response


async def push(request: web.Request) -> web.Response:
    payload = orjson.loads(await request.read())
    if not isinstance(payload, dict):
        raise web.HTTPBadRequest()
    return success_response()


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post(PUSH_PATH, push)
    return app


if __name__ == "__main__":
    args = parse_args("bare aiohttp JSON handler (benchmark ceiling)")
    serve(make_app, args.host, args.port, args.processes)
