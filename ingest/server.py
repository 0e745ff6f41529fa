"""Running the receiver: uvloop, no access log, JSON errors, graceful shutdown.

`serve` is what `permit-push serve` runs. It does not use web.run_app: a malformed
request (bad request line, bad Content-Length, an oversized header, TLS sent to the HTTP
port) is answered by aiohttp's protocol handler itself, with a text/plain 400 and a
logged traceback. `JsonErrorRequestHandler.handle_error` answers with the contract's JSON
error body instead and logs one line. aiohttp has no setting for the handler class:
`Server.__call__` builds it, so a Server subclass builds ours and an AppRunner subclass
builds that Server (web.run_app builds its own AppRunner, hence `run_app` below).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from ingest.app import create_app
from ingest.bodies import error_response
from shared import codes
from shared.config import Settings

log = structlog.get_logger(__name__)


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's protocol handler, answering its own errors in the contract's JSON shape."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("request_failed", status=status, exc_info=exc)
            code = codes.INTERNAL
        else:
            # The client's bytes, not our fault: one line, and never the bytes themselves.
            log.info("http_malformed", status=status, error=type(exc).__name__)
            code = codes.NOT_PARSEABLE
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; cannot send an error instead")
        response = error_response(
            status,
            code,
            message=None
            if status >= 500
            else f"The HTTP request is malformed ({_phrase(status)}).",
        )
        response.force_close()
        return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return str(status)


class JsonErrorServer(Server):
    def __call__(self) -> RequestHandler:
        # Server.__call__ with our handler class; _loop and _kwargs are what it passes.
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorAppRunner(web.AppRunner):
    async def _make_server(self) -> Server:
        server = await super()._make_server()
        return JsonErrorServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **self._kwargs,
        )


def run_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
    loop: asyncio.AbstractEventLoop,
    **site_kwargs: Any,
) -> None:
    """web.run_app's life cycle with JsonErrorAppRunner: serve until SIGINT/SIGTERM.

    On the signal the listening socket closes, in-flight requests get up to
    ``shutdown_timeout`` seconds to finish, then the app's cleanup (the batch flush) runs.
    """

    async def serve() -> None:
        runner = JsonErrorAppRunner(
            app,
            handle_signals=True,
            access_log=None,
            shutdown_timeout=shutdown_timeout,
            # No lingering close: after a reply to a body it did not read to the end (a 413),
            # aiohttp would read and inflate up to 10 s more of it (a gzip bomb's 4 GiB);
            # the connection is closed instead.
            lingering_time=0,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, **site_kwargs).start()
            await asyncio.Event().wait()  # until a signal raises GracefulExit
        finally:
            await runner.cleanup()

    asyncio.set_event_loop(loop)
    main = loop.create_task(serve())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


# Seconds in-flight requests get to finish after SIGTERM before they are cut.
SHUTDOWN_TIMEOUT_S = 30.0


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 8080, *, reuse_port: bool = False
) -> None:
    """Serve until SIGINT/SIGTERM; queued pushes are flushed to Redis before exit.

    ``reuse_port`` lets several processes listen on one port (SO_REUSEPORT): the kernel
    spreads connections over them.
    """
    # Not web.run_app: its AppRunner answers malformed HTTP in text/plain (see above).
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
