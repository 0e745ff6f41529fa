"""What the baseline receivers share: reply shape, route and N-process serving."""

from __future__ import annotations

import argparse
import multiprocessing
import signal
from collections.abc import Callable, Mapping
from uuid import uuid4

import orjson
import uvloop
from aiohttp import web

PUSH_PATH = "/api/OC-TOMA/v1/permits/push"


def success_response(ref: str | None = None) -> web.Response:
    """The contract's success reply carrying ``ref`` (default: a fresh uuid4)."""
    ref = ref or str(uuid4())
    body = {"status": "success", "reference_id": ref, "InternalReferenceID": ref}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def parse_args(description: str, switches: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Host, port and processes; ``switches``: a baseline's own on/off flags, with their help."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--processes", type=int, default=1)
    for flag, help_text in (switches or {}).items():
        parser.add_argument(flag, action="store_true", help=help_text)
    return parser.parse_args()


def _serve_one(make_app: Callable[[], web.Application], host: str, port: int) -> None:
    # Tuned like a production receiver: uvloop, no access log (20-30% of throughput),
    # SO_REUSEPORT so the kernel spreads connections over the processes.
    web.run_app(
        make_app(),
        host=host,
        port=port,
        reuse_port=True,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


def serve(make_app: Callable[[], web.Application], host: str, port: int, processes: int) -> None:
    """Serve make_app() in `processes` processes sharing one port."""
    if processes <= 1:
        _serve_one(make_app, host, port)
        return
    # fork: children inherit nothing async; each builds its own app, loop and connections.
    ctx = multiprocessing.get_context("fork")
    children = [
        ctx.Process(target=_serve_one, args=(make_app, host, port), daemon=True)
        for _ in range(processes)
    ]
    for child in children:
        child.start()

    def _stop(_signum: int, _frame: object) -> None:
        for child in children:
            child.terminate()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for child in children:
        child.join()
