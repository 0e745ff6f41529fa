"""How the benchmark drives permit-push: its CLI, started as separate processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import BenchError, ProcessGroup

INSTALL_HINT = "the permit-push CLI is missing: run `pip install -e .` in the repository first"


def cli_path() -> str:
    """The permit-push script beside the running interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name("permit-push")
    if beside.exists():
        return str(beside)
    found = shutil.which("permit-push")
    if found is None:
        raise BenchError(INSTALL_HINT)
    return found


@dataclass(frozen=True, slots=True)
class Service:
    """Environment that points every permit-push process at the benchmark's stores."""

    redis_url: str
    database_url: str
    queue_name: str = "permits"
    # Settings for every permit-push process (--service-env); logging stays at the
    # service's default, since a deployment pays for its log lines too.
    extra: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.redis_url, "DATABASE_URL": self.database_url, **self.extra}

    def run(self, *args: str, timeout_s: float = 120.0) -> str:
        """Run a short CLI command to completion; its stdout, or a BenchError with stderr."""
        out = subprocess.run(
            [cli_path(), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env()},
            timeout=timeout_s,
            check=False,
        )
        if out.returncode != 0:
            raise BenchError(f"permit-push {' '.join(args)} failed: {out.stderr.strip()[-2000:]}")
        return out.stdout

    def upgrade(self) -> None:
        self.run("db", "upgrade")

    def create_token(self, name: str) -> str:
        """A new API client's token: the CLI prints it alone on its last line.

        The client's rate limit is lifted (`tokens limit --per-s 0`): the bench measures
        capacity, and one client sends all of it. The limit is still checked on every
        request, so its cost stays in the figures.
        """
        lines = self.run("tokens", "create", "--name", name).strip().splitlines()
        if not lines:
            raise BenchError("permit-push tokens create printed nothing")
        self.run("tokens", "limit", name, "--per-s", "0")
        return lines[-1].strip()

    def start_receiver(
        self, group: ProcessGroup, port: int, processes: int
    ) -> list[subprocess.Popen[bytes]]:
        """`permit-push serve --processes N`: N receiver processes sharing the port."""
        where = ["--host", "127.0.0.1", "--port", str(port), "--processes", str(processes)]
        return [group.start("permit-push-serve", [cli_path(), "serve", *where], self.env())]

    def start_workers(
        self, group: ProcessGroup, count: int, burst: bool = False
    ) -> list[subprocess.Popen[bytes]]:
        """`count` separate `permit-push worker` processes (one SimpleWorker each)."""
        argv = [cli_path(), "worker"] + (["--burst"] if burst else [])
        return [group.start(f"permit-push-worker-{i}", argv, self.env()) for i in range(count)]
