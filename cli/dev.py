"""`permit-push dev`: receiver and worker in one command, for a laptop."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

import click

from cli.checks import require_database, require_redis
from shared.clients import create_client, publish_tokens, rotate_token
from shared.config import Settings
from shared.db import make_engine, make_sessionmaker, upgrade_database
from shared.errors import ClientExistsError
from shared.logging import configure_logging
from shared.ports import free_port, wait_for_port
from shared.redis import connect

DEV_CLIENT = "dev"


@click.command()
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.pass_obj
def dev(settings: Settings, port: int) -> None:
    """Receiver + worker in one process group, on embedded defaults.

    Uses REDIS_URL when it is set; otherwise starts a private, in-memory Redis whose
    queued permits are lost when this command stops.
    """
    with _redis_for_dev(settings) as redis_url:
        settings = dataclasses.replace(settings, redis_url=redis_url, log_format="console")
        configure_logging(settings)
        engine = make_engine(settings)
        require_database(engine)
        upgrade_database(engine)
        redis = connect(redis_url)
        require_redis(redis, redis_url)
        with make_sessionmaker(engine).begin() as session:
            try:
                token = create_client(session, DEV_CLIENT)
            except ClientExistsError:
                token = rotate_token(session, DEV_CLIENT)  # only its hash was kept
            session.flush()
            publish_tokens(session, redis)
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATABASE_URL": settings.database_url,
            "LOG_FORMAT": "console",
        }
        # Its own process group, like Redis's: Ctrl-C reaches only this process, which
        # then stops the receiver, the worker and Redis in that order (the reverse of
        # their start), so none of them outlives what it talks to.
        worker = subprocess.Popen([sys.executable, "-m", "worker"], env=env, process_group=0)
        try:
            click.echo(_banner(token, port, settings), err=True)
            from ingest.server import serve

            serve(settings, host="127.0.0.1", port=port)  # until SIGINT/SIGTERM
        finally:
            _stop(worker, timeout_s=30)


@contextlib.contextmanager
def _redis_for_dev(settings: Settings) -> Iterator[str]:
    """REDIS_URL if the user set one; else a private in-memory server for this run."""
    if os.environ.get("REDIS_URL"):
        yield settings.redis_url
        return
    port = free_port()
    click.echo(
        "NOTE: REDIS_URL is not set; using a private in-memory Redis on port "
        f"{port}. Queued permits are NOT durable: they are lost if this command stops "
        "before the worker stores them.",
        err=True,
    )
    server = shutil.which("redis-server")
    if server:
        with tempfile.TemporaryDirectory() as workdir:
            process = subprocess.Popen(  # noqa: S603
                [
                    server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    workdir,
                    "--loglevel",
                    "warning",
                ],
                process_group=0,  # not stopped by Ctrl-C before the worker: see dev()
            )
            try:
                try:
                    wait_for_port(port, timeout_s=10)
                except TimeoutError:
                    raise click.ClickException(
                        f"the private redis-server did not start on port {port}"
                    ) from None
                yield f"redis://127.0.0.1:{port}/0"
            finally:
                _stop(process, timeout_s=10)
        return
    try:
        from fakeredis import TcpFakeServer
    except ImportError:
        raise click.ClickException(
            "no redis-server on PATH and fakeredis is not installed: set REDIS_URL, "
            "install redis-server, or pip install 'permit-push[embedded]'"
        ) from None
    fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    # A client blocked in BLPOP would keep a non-daemon handler thread, and so this
    # command, alive after Ctrl-C.
    fake.daemon_threads = True
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        fake.shutdown()
        fake.server_close()


def _stop(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then wait for the exit; SIGKILL after ``timeout_s`` or a second Ctrl-C."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        process.kill()
        process.wait()


def _banner(token: str, port: int, settings: Settings) -> str:
    body = (
        '{"apiToken": "' + token + '", "Amount": "14.50", "CurrencyID": "CAD", '
        '"LicencePlate": "PL8RDR", "zone": "Lot 4", "permitNo": "L4-1138", '
        '"startTime": "2018-07-02T09:00:00", "endTime": "2018-07-02T09:30:00"}'
    )
    database_url = _absolute_sqlite(settings.database_url)
    exports = (
        f"REDIS_URL={shlex.quote(settings.redis_url)} DATABASE_URL={shlex.quote(database_url)}"
    )
    return (
        f"\npermit-push dev: receiver on http://127.0.0.1:{port}, worker storing to "
        f"{database_url}\n"
        f"dev API token: {token}\n"
        "try it:\n"
        f"  curl -s -X POST http://127.0.0.1:{port}/api/OC-TOMA/v1/permits/push \\\n"
        "    -H 'Content-Type: application/json' -H 'Accept: application/json' \\\n"
        f"    -d '{body}'\n"
        "in another terminal, so that permit-push status, tokens, zones and failed reach "
        "this Redis and database:\n"
        f"  export {exports}\n"
    )


def _absolute_sqlite(url: str) -> str:
    """``url`` with a relative SQLite path made absolute, so it works from any directory."""
    prefix = "sqlite:///"
    path = url.removeprefix(prefix)
    if not url.startswith(prefix) or path.startswith("/") or path in ("", ":memory:"):
        return url
    return prefix + os.path.abspath(path)
