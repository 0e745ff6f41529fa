"""URL map of the receiver."""

from aiohttp import web

from ingest import handlers

PUSH_PATH = "/api/OC-TOMA/v1/permits/push"


def setup_routes(app: web.Application) -> None:
    app.router.add_post(PUSH_PATH, handlers.push_permit)
