"""URL map of the receiver."""

from aiohttp import web

from ingest import handlers, ops

PUSH_PATH = "/api/OC-TOMA/v1/permits/push"


def setup_routes(app: web.Application) -> None:
    # Route names are the `route` label of the HTTP metrics.
    app.router.add_post(PUSH_PATH, handlers.push_permit, name="push")
    app.router.add_get("/healthz", ops.healthz, name="healthz")
    app.router.add_get("/readyz", ops.readyz, name="readyz")
    app.router.add_get("/metrics", ops.metrics, name="metrics")
