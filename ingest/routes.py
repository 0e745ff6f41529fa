"""URL map of the receiver."""

from aiohttp import web

from ingest import batch, handlers, lifecycle, openapi, ops

API_PREFIX = "/api/OC-TOMA/v1/permits"
PUSH_PATH = API_PREFIX + "/push"
BATCH_PATH = API_PREFIX + "/push/batch"
UPDATE_PATH = API_PREFIX + "/update"
DELETE_PATH = API_PREFIX + "/delete"
ACTIVE_PATH = API_PREFIX + "/active"
OPENAPI_PATH = "/api/openapi.json"


def setup_routes(app: web.Application) -> None:
    # Route names are the `route` label of the HTTP metrics.
    app.router.add_post(PUSH_PATH, handlers.push_permit, name="push")
    app.router.add_post(BATCH_PATH, batch.push_batch, name="push_batch")
    app.router.add_post(UPDATE_PATH, lifecycle.update_permit, name="update")
    app.router.add_post(DELETE_PATH, lifecycle.delete_permit, name="delete")
    app.router.add_get(ACTIVE_PATH, lifecycle.active_permits, name="active")
    # Only id-shaped segments: GET .../push stays a 405, and "active" stays the lookup.
    app.router.add_get(
        API_PREFIX + "/{reference_id:[0-9A-Fa-f-]{36}}", lifecycle.permit_status, name="status"
    )
    app.router.add_get(OPENAPI_PATH, openapi.openapi_document, name="openapi")
    app.router.add_get("/healthz", ops.healthz, name="healthz")
    app.router.add_get("/readyz", ops.readyz, name="readyz")
    app.router.add_get("/metrics", ops.metrics, name="metrics")
