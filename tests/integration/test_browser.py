"""The seed's JavaScript example in headless Chromium, from a page on another origin.

A static server on one port serves the pages; real `permit-push serve` and `worker`
processes listen on another, so every request is cross-origin and Chromium sends the
CORS preflight first. Each page writes what its XMLHttpRequest saw into the DOM, and
`chromium --dump-dom` prints that DOM once the page and its requests are done
(`--virtual-time-budget` stops the clock while a request is pending).

Without Chromium these tests skip, saying why; with CI=true they fail instead.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from harness.payloads import SEED_BODY
from ingest.routes import PUSH_PATH
from shared.config import Settings
from shared.ports import free_port, wait_for_port
from tests.support.database import wait_for_row
from tests.support.processes import cli, running

# The flags a headless run in a container needs; nothing is fetched from outside.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--virtual-time-budget=20000",
)

# The seed's example with open() first (the seed calls setRequestHeader on an unopened
# request, which browsers refuse) and an absolute URL: the receiver is another origin.
# Besides console.log, the reply is written into the page for --dump-dom to print.
PAGE = """<!doctype html>
<html><head><title>pending</title></head><body><pre id="result"></pre>
<script>
var request = new XMLHttpRequest();
request.open('POST', '__URL__');
request.setRequestHeader('Content-Type', 'application/json');
request.setRequestHeader('Accept', 'application/json');
__EXTRA_HEADER__
request.onreadystatechange = function () {
  if (this.readyState === 4) {
    console.log('Status:', this.status);
    console.log('Headers:', this.getAllResponseHeaders());
    console.log('Body:', this.responseText);
    document.getElementById('result').textContent = JSON.stringify({
      status: this.status,
      requestId: this.getResponseHeader('X-Request-ID'),
      body: this.responseText
    });
    document.title = 'done';
  }
};
var body = __BODY__;
request.send(JSON.stringify(body));
</script>
</body></html>
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "Chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true: the browser test must run", pytrace=False)
        pytest.skip(reason)
    return path


@dataclass
class Browser:
    """A receiver and worker on one port, the pages' static server on another."""

    chromium: str
    api: str
    pages_url: str
    pages: Path
    profiles: Path
    token: str

    def open(self, name: str, body: dict[str, Any], extra_header: str = "") -> dict[str, Any]:
        """Serve a page running the seed's example with ``body``; what its request saw."""
        page = (
            PAGE.replace("__URL__", self.api + PUSH_PATH)
            .replace("__BODY__", json.dumps(body, indent=4))
            .replace("__EXTRA_HEADER__", extra_header)
        )
        (self.pages / f"{name}.html").write_text(page)
        dumped = subprocess.run(
            [
                self.chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profiles / name}",  # a fresh profile each time
                "--dump-dom",
                f"{self.pages_url}/{name}.html",
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        found = re.search(r'<pre id="result">(.*?)</pre>', dumped.stdout, re.S)
        assert found and found.group(1), (
            f"the page recorded nothing (exit {dumped.returncode}):\n{dumped.stdout}\n"
            f"{dumped.stderr[-3000:]}"
        )
        result: dict[str, Any] = json.loads(html.unescape(found.group(1)))
        return result


@pytest.fixture
def browser(
    chromium: str,
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    tmp_path: Path,
) -> Iterator[Browser]:
    env = {"REDIS_URL": pg_settings.redis_url, "DATABASE_URL": pg_settings.database_url}
    token = cli("tokens", "create", "--name", "kiosk", env=env).stdout.strip().splitlines()[-1]
    api_port, pages_port = free_port(), free_port()
    pages = tmp_path / "pages"
    pages.mkdir()
    static = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(pages_port), "--bind", "127.0.0.1"],
        cwd=pages,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with (
            running("serve", "--port", str(api_port), env=env, log=tmp_path / "serve.log"),
            running("worker", env=env, log=tmp_path / "worker.log"),
        ):
            wait_for_port(api_port)
            wait_for_port(pages_port)
            yield Browser(
                chromium,
                api=f"http://127.0.0.1:{api_port}",
                pages_url=f"http://127.0.0.1:{pages_port}",
                pages=pages,
                profiles=tmp_path / "profiles",
                token=token,
            )
    finally:
        static.terminate()
        static.wait(timeout=10)


def test_seed_example_from_another_origin_is_answered_and_stored(
    browser: Browser, pg_sessions: sessionmaker[Session]
) -> None:
    seen = browser.open("seed", {**SEED_BODY, "apiToken": browser.token})
    assert seen["status"] == 200, seen
    reply = json.loads(seen["body"])
    assert reply["status"] == "success"
    assert reply["InternalReferenceID"] == reply["reference_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", seen["requestId"] or ""), seen  # exposed to the page
    permit = wait_for_row(pg_sessions, reply["reference_id"], timeout_s=15)
    assert (permit.plate, permit.zone_name, permit.permit_no) == ("PL8RDR", "Lot 4", "L4-1138")


def test_page_reads_the_json_error_of_a_bad_body(browser: Browser) -> None:
    bad = {**SEED_BODY, "apiToken": browser.token, "LicencePlate": ""}
    seen = browser.open("bad-body", bad)
    assert seen["status"] == 400, seen
    reply = json.loads(seen["body"])
    assert (reply["status"], reply["ErrorCode"]) == ("error", 9006)
    assert reply["errors"] == {"LicencePlate": ["Is required."]}


def test_a_header_the_preflight_refuses_leaves_the_page_status_0(browser: Browser) -> None:
    # What every cross-origin page saw before CORS: the browser hides the reply entirely.
    seen = browser.open(
        "refused",
        {**SEED_BODY, "apiToken": browser.token},
        "request.setRequestHeader('X-Custom', '1');",
    )
    assert (seen["status"], seen["body"]) == (0, ""), seen
