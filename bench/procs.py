"""Start, watch and always stop the processes a benchmark run needs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", tempfile.gettempdir())) / "permit-push-bench"


class BenchError(RuntimeError):
    """A benchmark step could not run; the message says what to do."""


@dataclass
class ProcessGroup:
    """Every process the run started; `stop_all` ends them, children included.

    Each child gets its own session, so killing its process group reaches the
    processes it forked (multi-process servers) without touching anything else.
    """

    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = (LOG_DIR / f"{name}.log").open("ab")
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.Popen(
            list(argv),
            cwd=REPO_ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Children of a group leader that already exited can still be alive.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self.procs)):
            self.stop(proc)

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise BenchError(
                    f"{name} exited with code {proc.returncode}; see {LOG_DIR / name}.log"
                )


@contextlib.contextmanager
def process_group() -> Iterator[ProcessGroup]:
    """Yield a ProcessGroup that is emptied on exit, on error and on SIGTERM/Ctrl-C."""
    group = ProcessGroup()

    def _on_sigterm(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield group
    finally:
        group.stop_all()
        signal.signal(signal.SIGTERM, previous)


def wait_http(port: int, group: ProcessGroup, timeout_s: float = 30.0) -> None:
    """Wait until something answers HTTP on 127.0.0.1:port (any status will do)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        group.check_alive()
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock,
        ):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            if sock.recv(16).startswith(b"HTTP/1."):
                return
        time.sleep(0.1)
    raise BenchError(f"nothing answered on 127.0.0.1:{port} within {timeout_s:.0f} s")


def descendants(pid: int) -> list[int]:
    """pid and all its descendants, read from /proc (Linux only)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_mib(pid: int) -> float:
    """Largest VmHWM (peak resident set) among pid and its descendants, in MiB."""
    return max(_status_kib(p, "VmHWM") for p in descendants(pid)) / 1024


def rss_mib(pid: int) -> float:
    """Largest current VmRSS among pid and its descendants, in MiB."""
    return max(_status_kib(p, "VmRSS") for p in descendants(pid)) / 1024


def python_argv(*args: str) -> list[str]:
    """Run a module with the interpreter the benchmark itself runs under."""
    return [sys.executable, *args]


def start_profiler(
    group: ProcessGroup, pid: int, out: Path, *, subprocesses: bool = False
) -> subprocess.Popen[bytes] | None:
    """Sample `pid` (and its children) with py-spy, collapsed stacks in `out`, until stopped."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(spy), "record", "--pid", str(pid), "--rate", "200", "--format", "raw"]
    argv += ["--subprocesses"] if subprocesses else []
    return group.start(f"py-spy-{pid}", [*argv, "-o", str(out)])


def stop_profiler(group: ProcessGroup, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGINT makes py-spy write its file; SIGTERM would lose it."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    group.stop(proc)


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU seconds of pids and all their descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for root in pids:
        for pid in descendants(root):
            with contextlib.suppress(OSError, IndexError, ValueError):
                # Fields after the ")" that ends the command name: utime is the 12th.
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += int(fields[11]) + int(fields[12])
    return total / ticks


class CpuMeter:
    """CPU seconds used by some process trees since the meter was made.

    Only live processes count: a child that exits takes its CPU time with it.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start = cpu_seconds(pids)

    def used(self) -> float:
        return cpu_seconds(self.pids) - self.start
