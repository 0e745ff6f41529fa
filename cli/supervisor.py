"""Run one command as N processes: `serve --processes N`, `worker --processes M`.

The parent only supervises: it starts the children and passes SIGTERM/SIGINT on. When a
child fails it stops the others and exits non-zero, so that the process
manager (docker compose, systemd) restarts the whole group in a known state.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

# Children get this long to finish their work after SIGTERM before they are killed.
STOP_TIMEOUT_S = 60.0


def run_processes(target: Callable[..., None], args: tuple[Any, ...], count: int) -> None:
    """Run ``target(*args)`` in ``count`` child processes until stopped."""
    # spawn, not fork: each child builds its own event loop, pools and connections.
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=target, args=args, name=f"{target.__name__}-{i + 1}")
        for i in range(count)
    ]
    stop_requested = False

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    for child in children:
        child.start()
    while not stop_requested and not _crashed(children):
        if all(child.exitcode == 0 for child in children):
            return  # every child finished its work (`worker --burst`)
        wait([child.sentinel for child in children], timeout=0.5)

    crashed = _crashed(children)
    for child in children:
        if child.is_alive():
            child.terminate()  # SIGTERM: each child shuts down gracefully
    for child in children:
        child.join(STOP_TIMEOUT_S)
        if child.is_alive():
            child.kill()
            child.join()
    if crashed and not stop_requested:
        names = ", ".join(f"{c.name} (exit code {c.exitcode})" for c in crashed)
        print(f"permit-push: {names} failed; stopped the others", file=sys.stderr)
        sys.exit(1)


def _crashed(children: Sequence[BaseProcess]) -> list[BaseProcess]:
    return [child for child in children if child.exitcode not in (None, 0)]
