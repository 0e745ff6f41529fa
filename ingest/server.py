"""Running the receiver: uvloop, no access log, JSON errors, graceful shutdown.

`serve` is what `permit-push serve` runs. It does not use web.run_app: a malformed
request (bad request line, bad Content-Length, an oversized header, TLS sent to the HTTP
port) is answered by aiohttp's protocol handler itself, with a text/plain 400 and a
logged traceback. `JsonErrorRequestHandler.handle_error` answers with the contract's JSON
error body instead and logs one line. aiohttp has no setting for the handler class:
`Server.__call__` builds it, so a Server subclass builds ours and an AppRunner subclass
builds that Server (web.run_app builds its own AppRunner, hence `run_app` below).

Slow clients: aiohttp has no deadline for reading a request (its keep-alive timer closes
only a connection waiting for a request, after an hour by default, and nothing bounds a
trickled body), so one socket sending a byte every few seconds would hold a file
descriptor and a parser for ever. `JsonErrorRequestHandler` gives each request
REQUEST_READ_TIMEOUT_S from its first byte to the last byte of its body; past it the
client gets a 408 and the connection is closed. A connection with no request begun, new
or between requests, is a keep-alive: aiohttp's keep-alive timer closes it quietly (no
reply written, which the client would read as the answer to its next request) after
KEEPALIVE_TIMEOUT_S.

Probes: with PROBES_PORT set, /readyz and /metrics are served on that second port only
(with /healthz), by the same process and application, and the main port answers 404 for
them.
"""

from __future__ import annotations

import asyncio
import gc
from http import HTTPStatus
from typing import Any, cast

import orjson
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from ingest.app import create_app
from ingest.bodies import error_body, error_response
from shared import codes
from shared.config import Settings

log = structlog.get_logger(__name__)


# What a client that did not send its request in time gets, written straight to the
# socket: no handler has the request (its headers may not even be complete).
_TIMEOUT_BODY = orjson.dumps(
    error_body(codes.NOT_PARSEABLE, "The request was not received in time (Request Timeout).")
)
REQUEST_TIMEOUT_REPLY = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's protocol handler, answering its own errors in the contract's JSON shape,
    with a deadline for reading each request (headers and body)."""

    # Set by JsonErrorServer; 0 turns the deadline off.
    read_timeout_s: float = 0.0
    _read_deadline: asyncio.TimerHandle | None = None
    _read_payload: Any = None

    def data_received(self, data: bytes) -> None:
        # The first byte of the next request arms the deadline. Not an empty call: aiohttp
        # makes one itself after a request with a body, to re-read its buffer, and the
        # idle keep-alive connection then got a 408 instead of its next push.
        if data and self._read_deadline is None:
            self._arm_read_deadline()
        before = len(self._messages)
        super().data_received(data)
        if len(self._messages) > before:
            self._read_payload = self._messages[-1][1]
        payload = self._read_payload
        if payload is not None and payload.is_eof():
            # Headers and body are in: the request was read in time.
            self._disarm_read_deadline()
            self._read_payload = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_read_deadline()
        self._read_payload = None
        super().connection_lost(exc)

    def _arm_read_deadline(self) -> None:
        if self.read_timeout_s > 0 and not self._force_close:
            self._read_deadline = self._loop.call_later(self.read_timeout_s, self._read_too_slow)

    def _disarm_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_too_slow(self) -> None:
        self._read_deadline = None
        transport = self.transport
        if transport is None or self._force_close:
            return
        log.info("http_read_timeout", timeout_s=self.read_timeout_s)
        current, payload = self._current_request, self._read_payload
        if (
            current is not None
            and payload is not None
            and current.content is payload
            and current.writer.output_size == 0
        ):
            # Its handler is reading the body: the read raises, the error middleware
            # answers 408 (counted as such), and aiohttp closes the connection after it
            # since the body was not read to its end. Cut it anyway if that stalls.
            payload.set_exception(web.HTTPRequestTimeout())
            self._loop.call_later(1.0, self._cut)
            return
        # No handler has the request yet (its headers may not even be complete): the 408
        # goes straight to the socket.
        if current is None or current.writer.output_size == 0:
            transport.write(REQUEST_TIMEOUT_REPLY)
        self.force_close()

    def _cut(self) -> None:
        if self.transport is not None and not self._force_close:
            self.force_close()

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
    read_timeout_s: float = 0.0

    def __call__(self) -> RequestHandler:
        # Server.__call__ with our handler class; _loop and _kwargs are what it passes.
        handler = JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.read_timeout_s = self.read_timeout_s
        return handler


# Served on PROBES_PORT (with /healthz, which both ports answer) when it is set.
PROBE_ONLY_PATHS = frozenset({"/readyz", "/metrics"})
PROBE_PATHS = PROBE_ONLY_PATHS | {"/healthz"}


def _not_found() -> web.Response:
    return error_response(404, codes.NOT_PARSEABLE)


class JsonErrorAppRunner(web.AppRunner):
    """An AppRunner whose server is a JsonErrorServer; with ``probes`` the main server
    leaves /readyz and /metrics to the probes server (`probes_server`)."""

    def __init__(
        self,
        app: web.Application,
        *,
        read_timeout_s: float = 0.0,
        probes: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.read_timeout_s = read_timeout_s
        self.probes = probes

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        handle = server.request_handler
        if self.probes:
            app_handle = server.request_handler

            async def handle(request: BaseRequest) -> web.StreamResponse:
                if request.path in PROBE_ONLY_PATHS:
                    return _not_found()
                return await app_handle(request)

        made = JsonErrorServer(
            handle,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **self._kwargs,
        )
        made.read_timeout_s = self.read_timeout_s
        return made

    def probes_server(self) -> JsonErrorServer:
        """The same application, answering only the probes (404 for the rest)."""
        app = self._app
        if app is None:
            raise RuntimeError("probes_server() before setup()")

        async def handle(request: BaseRequest) -> web.StreamResponse:
            if request.path not in PROBE_PATHS:
                return _not_found()
            return await app._handle(cast(web.Request, request))

        server = JsonErrorServer(
            handle,
            request_factory=app._make_request,
            loop=asyncio.get_running_loop(),
            **self._kwargs,
        )
        server.read_timeout_s = self.read_timeout_s
        return server


def run_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
    loop: asyncio.AbstractEventLoop,
    read_timeout_s: float = 0.0,
    keepalive_timeout_s: float = 75.0,
    probes_port: int = 0,
    **site_kwargs: Any,
) -> None:
    """web.run_app's life cycle with JsonErrorAppRunner: serve until SIGINT/SIGTERM.

    On the signal the listening socket closes, in-flight requests get up to
    ``shutdown_timeout`` seconds to finish, then the app's cleanup (the batch flush) runs.
    """

    async def serve() -> None:
        runner = JsonErrorAppRunner(
            app,
            read_timeout_s=read_timeout_s,
            probes=probes_port > 0,
            keepalive_timeout=keepalive_timeout_s,
            handle_signals=True,
            access_log=None,
            shutdown_timeout=shutdown_timeout,
            # No lingering close: after a reply to a body it did not read to the end (a 413),
            # aiohttp would read and inflate up to 10 s more of it (a gzip bomb's 4 GiB);
            # the connection is closed instead.
            lingering_time=0,
        )
        await runner.setup()
        probes: web.ServerRunner | None = None
        try:
            await web.TCPSite(runner, host, port, **site_kwargs).start()
            if probes_port > 0:
                probes = web.ServerRunner(runner.probes_server(), handle_signals=False)
                await probes.setup()
                await web.TCPSite(probes, host, probes_port, **site_kwargs).start()
            freeze_startup_heap()
            await asyncio.Event().wait()  # until a signal raises GracefulExit
        finally:
            if probes is not None:
                await probes.cleanup()
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


def freeze_startup_heap() -> None:
    """Keep what start-up built out of every later garbage collection (``gc.freeze``).

    A full (generation 2) collection walks every tracked object: in a receiver, ~110,000
    made at start-up (modules, classes, SQLAlchemy, RQ, the app) that never become garbage.
    Each one held the event loop for 66-92 ms, a few times a minute under load, and every
    request in flight waited (the p99); frozen, they take 0-1 ms. Frozen objects are still
    freed by reference counting; only a cycle among them would never be collected.
    """
    gc.collect()
    gc.freeze()


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
        read_timeout_s=settings.request_read_timeout_s,
        keepalive_timeout_s=settings.keepalive_timeout_s,
        probes_port=settings.probes_port,
    )


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop does not build on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
