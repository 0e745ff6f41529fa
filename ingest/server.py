"""Running the receiver: uvloop, no access log, graceful shutdown."""

from __future__ import annotations

import asyncio

from ingest.app import create_app
from ingest.protocol import run_app
from shared.config import Settings

# Seconds in-flight requests get to finish after SIGTERM before they are cut.
SHUTDOWN_TIMEOUT_S = 30.0


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 8080, *, reuse_port: bool = False
) -> None:
    """Serve until SIGINT/SIGTERM; queued pushes are flushed to Redis before exit.

    ``reuse_port`` lets several processes listen on one port (SO_REUSEPORT): the kernel
    spreads connections over them.
    """
    # Not web.run_app: its AppRunner answers malformed HTTP in text/plain (ingest/protocol.py).
    # The access log stays off (20-30% of throughput).
    run_app(
        create_app(settings),
        host=host,
        port=port,
        reuse_port=reuse_port,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        loop=_new_event_loop(),
    )


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop does not build on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
