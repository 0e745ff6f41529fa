"""Starting and stopping the real `permit-push` processes for end-to-end tests.

Free ports and waiting for one are in harness/ports.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a `permit-push` command to completion."""
    return subprocess.run(
        [str(BIN / "permit-push"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def rq_info(redis_url: str) -> str:
    """What RQ's own CLI says about the queues and workers."""
    return subprocess.run(
        [str(BIN / "rq"), "info", "--url", redis_url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


@contextlib.contextmanager
def running(*args: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running `permit-push` command, stopped with SIGTERM (then SIGKILL) on exit.

    It runs in its own process group, and what is left of the group once it has exited is
    killed: a worker's RQ scheduler is a forked child, and one orphaned by a SIGKILLed
    worker went on working on the next tests' Redis (seen in a CI run).
    """
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "permit-push"), *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)  # as an operator stops it
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left
