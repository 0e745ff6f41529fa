"""URL map of the receiver."""

from aiohttp import web

from ingest import openapi, permits, probes, push

API_PREFIX = "/api/OC-TOMA/v1/permits"
PUSH_PATH = API_PREFIX + "/push"
BATCH_PATH = API_PREFIX + "/push/batch"
UPDATE_PATH = API_PREFIX + "/update"
DELETE_PATH = API_PREFIX + "/delete"
ACTIVE_PATH = API_PREFIX + "/active"
OPENAPI_PATH = "/api/openapi.json"


def setup_routes(app: web.Application) -> None:
    # Route names are the `route` label of the HTTP metrics.
    app.router.add_post(PUSH_PATH, push.push_permit, name="push")
    app.router.add_post(BATCH_PATH, push.push_batch, name="push_batch")
    app.router.add_post(UPDATE_PATH, permits.update_permit, name="update")
    app.router.add_post(DELETE_PATH, permits.delete_permit, name="delete")
    app.router.add_get(ACTIVE_PATH, permits.active_permits, name="active")
    # Only id-shaped segments: GET .../push stays a 405, and "active" stays the lookup.
    app.router.add_get(
        API_PREFIX + "/{reference_id:[0-9A-Fa-f-]{36}}", permits.permit_status, name="status"
    )
    app.router.add_get(OPENAPI_PATH, openapi.openapi_document, name="openapi")
    app.router.add_get("/healthz", probes.healthz, name="healthz")
    app.router.add_get("/readyz", probes.readyz, name="readyz")
    app.router.add_get("/metrics", probes.metrics, name="metrics")
