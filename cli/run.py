"""`permit-push serve` and `permit-push worker`: the two long-running processes."""

from __future__ import annotations

import click

from cli.checks import require_database, require_redis
from shared.config import Settings
from shared.db import make_engine
from shared.logging import configure_logging
from shared.redis import make_receiver_redis


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.pass_obj
def serve(settings: Settings, host: str, port: int) -> None:
    """Run the receiver (HTTP push endpoint)."""
    from ingest.server import serve as serve_forever

    configure_logging(settings)
    require_redis(make_receiver_redis(settings), settings.redis_url)
    serve_forever(settings, host=host, port=port)


@click.command()
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.pass_obj
def worker(settings: Settings, burst: bool) -> None:
    """Run one RQ worker on the permits queue."""
    from worker.runner import run_worker

    configure_logging(settings)
    require_redis(make_receiver_redis(settings), settings.redis_url)
    require_database(make_engine(settings))
    run_worker(settings, burst=burst)


COMMANDS = (serve, worker)
