"""Throw-away Redis and PostgreSQL servers, and permit-push processes.

Each server is started here, on a free loopback port, in a temporary directory, and always
stopped (within bounded times) by whoever started it: stopping or killing one harms no one.
Used by the fault tests (tests/fault/), bench/soak.py and bench/durability.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import psycopg
from redis import Redis

from shared.ports import free_port

BIN = Path(sys.executable).parent
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


class ServiceError(RuntimeError):
    """A server could not be started or stopped in time."""


def missing_tools() -> str | None:
    """Why the fault tests cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL binaries are not in {PG_BIN} (set PG_BIN)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root needs runuser to start PostgreSQL as postgres"
    return None


def wait_until(
    predicate: Callable[[], object], timeout_s: float, what: str, step_s: float = 0.05
) -> float:
    """Poll ``predicate`` until true; return the seconds it took; raise after ``timeout_s``."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if predicate():
                return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise ServiceError(f"{what}: not within {timeout_s} s")
        time.sleep(step_s)


class RedisServer:
    """A private redis-server with AOF (appendfsync everysec unless told otherwise)."""

    def __init__(
        self,
        appendfsync: str = "everysec",
        binary: str = "redis-server",
        password: str = "",
        replicaof: int | None = None,  # the loopback port of the primary to replicate
    ) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pp-fault-redis-"))
        self.appendfsync = appendfsync
        self.binary = binary
        self.password = password  # requirepass, and in the URL, when given
        self.replicaof = replicaof
        self.process: subprocess.Popen[bytes] | None = None
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            self.binary,
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
            "--maxmemory-policy", "noeviction", "--protected-mode", "yes",
            # A replica's first sync starts at once (Redis waits 5 s for more by default).
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        if self.replicaof is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replicaof)]
        with (self.dir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: Redis.from_url(self.url, socket_timeout=0.5).ping(), 10, "redis up")
        if self.replicaof is not None:
            wait_until(self._online, 15, "replica online")

    def _online(self) -> bool:
        """Whether the primary counts this replica as online: its first sync done and its
        first offset acknowledged. Until then WAIT does not count it (the replica's own
        `master_link_status: up` comes up to a second earlier)."""
        url = self.url.replace(f":{self.port}/", f":{self.replicaof}/")
        with Redis.from_url(url, socket_timeout=1) as primary:
            replication = primary.info("replication")
        return any(
            isinstance(entry, dict) and entry.get("port") == self.port
            and entry.get("state") == "online"
            for name, entry in replication.items()
            if name.startswith("slave")
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync; what the AOF holds is what survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connected, reading nothing, answering nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def client(self) -> Redis:
        return Redis.from_url(self.url, socket_timeout=5)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def primary_with_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A private primary and one replica of it, counted by the primary; both stopped after."""
    primary = RedisServer()
    replica = RedisServer(replicaof=primary.port)
    try:
        primary.start()
        replica.start()
        yield primary, replica
    finally:
        replica.close()
        primary.close()


def cut_connections_to(port: int) -> None:
    """Destroy every loopback TCP socket connected to ``port`` (``ss -K``): what the kernel
    held for them, unread, is gone, and their peers see a reset."""
    subprocess.run(["ss", "-K", "-t", "dport", "=", f":{port}"], check=True,
                   capture_output=True, timeout=10)  # fmt: skip


class SentinelServer:
    """A private Redis Sentinel watching the primary on ``primary_port`` as ``service``."""

    def __init__(
        self, primary_port: int, service: str = "mymaster", down_after_ms: int = 1000
    ) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pp-fault-sentinel-"))
        self.process: subprocess.Popen[bytes] | None = None
        # Sentinel rewrites its config file as the topology changes: one of its own.
        (self.dir / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} 2000\n"
            f"sentinel parallel-syncs {service} 2\n"
        )

    def start(self) -> None:
        argv = ["redis-server", str(self.dir / "sentinel.conf"), "--sentinel"]
        with (self.dir / "sentinel.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        url = f"redis://127.0.0.1:{self.port}"
        wait_until(lambda: Redis.from_url(url, socket_timeout=0.5).ping(), 10, "sentinel up")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresCluster:
    """A private PostgreSQL 15 cluster (initdb into a temp dir, run as the postgres user)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pp-fault-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/permits"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str, timeout_s: float = 60) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, *args], check=True, capture_output=True, timeout=timeout_s, cwd=self.dir
        )

    def init(self) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self.start()
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as connection:
            connection.execute("CREATE DATABASE permits")

    def dsn(self, database: str = "permits") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server: ``immediate`` is a crash (recovery on start), ``fast`` is clean."""
        pg_ctl = str(PG_BIN / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Proc:
    """A `permit-push` process in its own session (so its children die with it)."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "permit-push"), *args],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker and RQ's scheduler child."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 20) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; return the exit status."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait()
