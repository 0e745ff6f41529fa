"""permit-push's own receiver app on N processes, for when `serve --processes` is absent.

Runs exactly `ingest.app.create_app(Settings.from_env())`, the app `permit-push serve`
runs, with the same tuning (uvloop, no access log) plus SO_REUSEPORT so that N processes
share one port. The benchmark prefers `permit-push serve --processes N` when it exists.

    REDIS_URL=... python -m bench.servers.permit_push --port 8080 --processes 2
"""

from __future__ import annotations

from aiohttp import web

from bench.servers.common import parse_args, serve
from ingest.app import create_app
from shared.config import Settings
from shared.logging import configure_logging


def make_app() -> web.Application:
    settings = Settings.from_env()
    configure_logging(settings)
    return create_app(settings)


if __name__ == "__main__":
    args = parse_args("permit-push's receiver app, N processes on one port")
    serve(make_app, args.host, args.port, args.processes)
