"""Redis's primary is gone: Sentinel promotes a replica while 2 receivers and 2 workers are
under load, all real processes on loopback ports.

A primary, two replicas and three Sentinels (quorum 2, down-after 1 s). Two replicas, so
that after the promotion the new primary still has one (DURABLE_ACK=replica needs it). The
receivers and workers are given only REDIS_URL=redis+sentinel://...; the primary is
SIGKILLed once the fleets are going.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import text

from harness.load import Count, Fleet, count
from harness.services import (
    BIN,
    PostgresCluster,
    Proc,
    RedisServer,
    SentinelServer,
    cut_connections_to,
    wait_until,
)
from shared.clients import create_client, publish_tokens
from shared.config import Settings
from shared.db import make_engine, make_sessionmaker
from shared.models import Base
from shared.ports import free_port, wait_for_port
from shared.redis import connect
from tests.fault.conftest import Stack, fault_table_line

SERVICE = "mymaster"
BACK_WITHIN_S = 10.0  # pushes get 200 again within this of the SIGKILL


@dataclass
class Ha:
    stack: Stack  # its redis is the first primary
    replicas: list[RedisServer]
    sentinels: list[SentinelServer]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def primary_port(self) -> int:
        client = Redis(port=self.sentinels[0].port, socket_timeout=1)
        return int(client.sentinel_master(SERVICE)["port"])  # type: ignore[no-untyped-call]


@pytest.fixture
def ha(pg: PostgresCluster, tmp_path: Path) -> Iterator[Ha]:
    # ss (iproute2) cuts the replicas' connections; the pg fixture has checked the rest.
    assert shutil.which("ss"), "ss is not installed (apt-get install iproute2)"
    primary = RedisServer()
    replicas = [RedisServer(replicaof=primary.port) for _ in range(2)]
    sentinels = [SentinelServer(primary.port, SERVICE, down_after_ms=1000) for _ in range(3)]
    servers: list[RedisServer | SentinelServer] = [primary, *replicas, *sentinels]
    stack = None
    try:
        for server in servers:
            server.start()  # a replica's start waits for its first sync
        # Every Sentinel knows both replicas and the two other Sentinels.
        for sentinel in sentinels:
            client = Redis(port=sentinel.port, socket_timeout=1)
            wait_until(
                lambda c=client: (  # type: ignore[misc]
                    c.sentinel_master(SERVICE)["num-slaves"] == 2
                    and c.sentinel_master(SERVICE)["num-other-sentinels"] == 2
                ),
                20,
                "sentinels see the replicas and each other",
                step_s=0.2,
            )
        engine = make_engine(Settings(database_url=pg.url))
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        with engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        stack = Stack(pg, primary, "", tmp_path)
        with make_sessionmaker(engine).begin() as session:
            stack.token = create_client(session, "fault-meters")
            session.flush()
            publish_tokens(session, primary.client())
        engine.dispose()
        yield Ha(stack, replicas, sentinels)
    finally:
        if stack is not None:
            for proc in stack.procs:
                proc.stop(timeout_s=10)
        for n, server in enumerate(reversed(servers)):
            # Their logs stay beside the processes' (pytest's tmp_path), for a failure.
            for log in server.dir.glob("*.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(log, tmp_path / f"server{n}-{server.port}-{log.name}")
            with contextlib.suppress(Exception):
                server.close()


def start_service(ha: Ha, **extra: str) -> list[int]:
    """Two receivers (on their own ports) and two workers, all given the Sentinel URL."""
    stack = ha.stack
    env = stack.env(REDIS_URL=ha.url, **extra)
    ports = [stack.port, free_port()]
    for name, port in zip(("serve-a", "serve-b"), ports, strict=True):
        stack.procs.append(Proc(name, ["serve", "--port", str(port)], env, stack.log_dir))
    for name in ("worker-a", "worker-b"):
        stack.procs.append(Proc(name, ["worker"], env, stack.log_dir))
    for port in ports:
        wait_for_port(port)
    return ports


@pytest.mark.parametrize("durable_ack", ["replica", "off"])
def test_a_200_survives_the_primary_only_when_a_replica_acknowledged_it(
    ha: Ha, durable_ack: str
) -> None:
    """The primary is SIGKILLed with acknowledged batches waiting in its queue (workers
    stopped) and its replicas cut off for the last moments before (stopped, their
    replication sockets destroyed with what the kernel held for them). A 200 given
    without a replica's copy is then lost with the primary: with DURABLE_ACK=replica there
    is none; with it off there are, and the test makes sure it sees them."""
    stack = ha.stack
    stack.durable_ack = durable_ack
    ports = start_service(ha)
    fleets = [
        Fleet(f"http://127.0.0.1:{port}", stack.token, count=2000, prefix=f"ha{i}",
              concurrency=8, deadline_s=60, resend_share=0.05)
        for i, port in enumerate(ports)
    ]  # fmt: skip
    for fleet in fleets:
        fleet.start()
    wait_until(lambda: all(f.acked_count >= 100 for f in fleets), 30, "fleets under way")
    workers = [proc for proc in stack.procs if proc.name.startswith("worker")]
    try:
        for worker in workers:
            worker.signal(signal.SIGSTOP)  # acknowledged batches now wait in the queue
        time.sleep(1.0)
        for replica in ha.replicas:
            replica.pause()
        time.sleep(0.6)  # pushes meanwhile: 200 (off) or 503 (replica: no WAIT answered)
        cut_connections_to(stack.redis.port)
        old_primary = stack.redis.port
        acked_before_kill = sum(fleet.acked_count for fleet in fleets)
        killed_at = time.monotonic()
        stack.redis.kill()
    finally:
        for replica in ha.replicas:
            replica.resume()
        for worker in workers:
            worker.signal(signal.SIGCONT)
    wait_until(lambda: ha.primary_port() != old_primary, 15, "a replica promoted")
    promoted_s = time.monotonic() - killed_at
    for fleet in fleets:
        fleet.join(70)
    back_s = back_after(fleets, killed_at)
    refused = sorted(t for fleet in fleets for t in fleet.refused_at if t >= killed_at)
    refused_s = refused[-1] - refused[0] if refused else 0.0
    total = settled_count(fleets, stack.pg.url)
    outcomes = sum((fleet.outcomes for fleet in fleets), start=Counter[str]())
    print(
        f"\nSentinel failover, DURABLE_ACK={durable_ack}: promoted {promoted_s:.1f} s after"
        f" the SIGKILL; 200s again after {back_s:.1f} s; {len(refused)} pushes refused (503)"
        f" over {refused_s:.1f} s after it; {acked_before_kill} 200s before the kill;"
        f" acknowledged={total.acknowledged} stored={total.stored} 200s never"
        f" stored={total.lost} doubled={total.duplicates} outcomes={dict(outcomes)}"
    )
    fault_table_line(
        "primary SIGKILLed under Sentinel (replicas cut off 0.6 s before)",
        stack,
        refused,
        killed_at,
        total.lost,
        total.duplicates,
    )
    assert back_s < BACK_WITHIN_S, back_s
    assert not any(status.startswith("5") and status != "503" for status in outcomes), outcomes
    # No request hangs: no reply, 200 or 503, takes 2 s; none times out client-side.
    assert all(not fleet.slow_refusals for fleet in fleets), [f.slow_refusals for f in fleets]
    assert max(fleet.slowest_ok_s for fleet in fleets) < 2.0, [f.slowest_ok_s for f in fleets]
    assert not any("Timeout" in status for status in outcomes), outcomes
    assert total.acknowledged == total.sent, total  # every permit got its 200 in the end
    assert total.duplicates == 0, total  # batches re-run after the failover: stored once
    assert all(proc.alive for proc in stack.procs), [p.name for p in stack.procs if not p.alive]
    if durable_ack == "replica":
        assert total.exact, total  # 0 lost, each under the reference id its 200 gave
    else:
        assert total.lost > 0, total  # the test is sharp: without the ack, 200s are lost


def back_after(fleets: list[Fleet], killed_at: float) -> float:
    """Seconds from the kill to the end of the longest stretch after it without a 200."""
    oks = sorted(t for fleet in fleets for t in fleet.ok_after if t > killed_at)
    assert oks, "no 200 after the kill"
    stretches = zip([killed_at, *oks], oks, strict=False)
    _, end = max(stretches, key=lambda pair: pair[1] - pair[0])
    return end - killed_at


def settled_count(fleets: list[Fleet], database_url: str, quiet_s: float = 6.0) -> Count:
    """The fleets' summed count once every 200 is stored, or nothing changed for quiet_s
    (a lost permit is never stored: waiting longer would only slow the test)."""
    last: Count | None = None
    changed_at = time.monotonic()
    deadline = changed_at + 40
    while True:
        counts = [count(fleet, database_url) for fleet in fleets]
        total = Count(*(sum(getattr(c, f.name) for c in counts) for f in fields(Count)))
        if total != last:
            last, changed_at = total, time.monotonic()
        quiet = time.monotonic() - changed_at > quiet_s
        if total.stored >= total.acknowledged or quiet or time.monotonic() > deadline:
            return total
        time.sleep(0.25)


def rq_info(ha: Ha) -> str:
    """`rq info` as an operator runs it, with the settings module built from REDIS_URL."""
    env = {**os.environ, "REDIS_URL": ha.url}
    result = subprocess.run(
        [str(BIN / "rq"), "info", "-c", "cli.rq_settings", "--only-queues"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_rq_info_follows_the_sentinels_to_the_new_primary(ha: Ha) -> None:
    primary = connect(ha.url)
    Queue("permits", connection=primary).enqueue("worker.jobs.persist_permits", permits=[])
    assert primary.execute_command("WAIT", 2, 5000) == 2  # both replicas hold the job
    assert re.search(r"^permits +\|\S* 1,", rq_info(ha), re.MULTILINE), rq_info(ha)
    old_primary = ha.stack.redis.port
    ha.stack.redis.kill()
    wait_until(lambda: ha.primary_port() != old_primary, 15, "a replica promoted")
    # The same command, no edit: RQ asks the Sentinels for the primary of the moment.
    assert re.search(r"^permits +\|\S* 1,", rq_info(ha), re.MULTILINE), rq_info(ha)
