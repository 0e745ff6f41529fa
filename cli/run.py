"""`permit-push serve` and `permit-push worker`: the two long-running processes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator

import click

from cli.checks import connect_redis, require_database
from cli.supervisor import run_processes
from shared.config import Settings
from shared.db import make_engine
from shared.logging import configure_logging


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Receiver processes sharing the port (SO_REUSEPORT).",
)
@click.pass_obj
def serve(settings: Settings, host: str, port: int, processes: int) -> None:
    """Run the receiver (HTTP push endpoint)."""
    configure_logging(settings)
    connect_redis(settings)
    with _metrics_dir(settings, processes) as settings:
        if processes == 1:
            _serve(settings, host, port, False)
        else:
            run_processes(_serve, (settings, host, port, True), processes)


@contextlib.contextmanager
def _metrics_dir(settings: Settings, processes: int) -> Iterator[Settings]:
    """Settings under which every receiver process's metrics reach every scrape.

    PROMETHEUS_MULTIPROC_DIR, when set, is emptied before any process counts. With
    several processes and none set, a private one is made for this run: otherwise each
    scrape would show the counts of whichever process the kernel gave the connection.
    """
    from ingest.metrics import prepare_multiprocess_dir

    if settings.prometheus_multiproc_dir:
        prepare_multiprocess_dir(settings.prometheus_multiproc_dir)
        yield settings
    elif processes == 1:
        yield settings
    else:
        with tempfile.TemporaryDirectory(prefix="permit-push-metrics-") as directory:
            # prometheus-client reads the variable itself, in each child as it starts.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            yield dataclasses.replace(settings, prometheus_multiproc_dir=directory)


@click.command()
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes, each one RQ SimpleWorker.",
)
@click.pass_obj
def worker(settings: Settings, burst: bool, processes: int) -> None:
    """Run RQ workers on the permits queue."""
    configure_logging(settings)
    connect_redis(settings)
    require_database(make_engine(settings))
    if processes == 1:
        _work(settings, burst)
    else:
        run_processes(_work, (settings, burst), processes)


def _serve(settings: Settings, host: str, port: int, reuse_port: bool) -> None:
    from ingest.server import serve as serve_forever

    configure_logging(settings)  # again: a spawned child starts with no logging set up
    serve_forever(settings, host=host, port=port, reuse_port=reuse_port)


def _work(settings: Settings, burst: bool) -> None:
    from worker.runner import run_worker

    configure_logging(settings)
    run_worker(settings, burst=burst)


COMMANDS = (serve, worker)
