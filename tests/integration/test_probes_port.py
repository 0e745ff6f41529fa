"""PROBES_PORT: /readyz and /metrics on a second port of the same `permit-push serve`."""

from __future__ import annotations

import http.client
import uuid
from pathlib import Path

from ingest.routes import PUSH_PATH
from shared.config import Settings
from shared.ports import free_port, wait_for_port
from tests.support.processes import cli, running


def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=b"{}" if method == "POST" else None)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_probes_answer_on_their_own_port_only(pg_settings: Settings, tmp_path: Path) -> None:
    env = {"REDIS_URL": pg_settings.redis_url, "DATABASE_URL": pg_settings.database_url}
    cli("tokens", "create", "--name", f"probes-{uuid.uuid4().hex[:8]}", env=env)  # publishes
    port, probes = free_port(), free_port()
    env["PROBES_PORT"] = str(probes)
    with running("serve", "--port", str(port), env=env, log=tmp_path / "serve.log"):
        wait_for_port(port)
        wait_for_port(probes)
        assert get(probes, "/readyz")[0] == 200
        status, body = get(probes, "/metrics")
        assert status == 200 and b"permit_push_http_requests_total" in body
        assert get(probes, "/healthz")[0] == 200
        # Nothing else on the probes port; no /readyz or /metrics on the main one.
        assert get(probes, PUSH_PATH, "POST")[0] == 404
        assert get(probes, "/api/openapi.json")[0] == 404
        for path in ("/readyz", "/metrics"):
            assert get(port, path)[0] == 404, path
        assert get(port, "/healthz")[0] == 200
        assert get(port, PUSH_PATH, "POST")[0] == 415  # the push route (no Content-Type)
