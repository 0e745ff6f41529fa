"""Peak throughput with wrk (Debian package `wrk`) and the Lua script in bench/wrk/."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BenchError
from bench.results import LoadResult

LUA_SCRIPT = Path(__file__).resolve().parent / "wrk" / "push.lua"
INSTALL_HINT = "wrk is missing: install it with `apt-get install wrk` (Debian/Ubuntu package)"


@dataclass(frozen=True, slots=True)
class WrkSettings:
    threads: int = 1
    connections: int = 64
    duration_s: float = 10.0


def require_wrk() -> str:
    """Path of the wrk binary, or a BenchError that says how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(INSTALL_HINT)
    return path


def run_wrk(url: str, token: str, nonce: str, settings: WrkSettings) -> LoadResult:
    """One closed-loop wrk run; bodies vary per request (see push.lua)."""
    argv = [
        require_wrk(),
        f"-t{settings.threads}",
        f"-c{settings.connections}",
        f"-d{settings.duration_s:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        token,
        nonce,
    ]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=settings.duration_s + 60, check=False
    )
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return _to_result(json.loads(line.removeprefix("BENCH_JSON ")))
    raise BenchError(f"wrk printed no result (exit {out.returncode}): {out.stderr.strip()}")


def _to_result(raw: dict[str, int]) -> LoadResult:
    socket_errors = sum(
        raw[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    # Count only 2xx replies as done work: a 4xx/5xx is cheap and would flatter the rate.
    ok = raw["requests"] - raw["non2xx"]
    return LoadResult(
        requests=ok,
        errors=raw["non2xx"] + socket_errors,
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )
