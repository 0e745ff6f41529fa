"""Soak: N pushes through real processes while faults are injected on a timer; then count.

    python -m bench.soak [--n 100000] [--concurrency 64] [--fault-every-s 15] [--workers 2]

Starts its own redis-server (AOF, appendfsync everysec) and PostgreSQL cluster on free
loopback ports, a receiver and workers with the default settings, and a fleet of meters
that resend each permit until it gets a 200. Every --fault-every-s seconds one fault, in
turn: a worker SIGKILLed (restarted a second later), Redis SIGKILLed (restarted from its
AOF after 2 s), PostgreSQL crashed for 10 s, the receiver SIGTERMed (restarted at once).
Prints sent, acknowledged, stored, duplicates, lost. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness.load import Fleet, wait_for_count
from harness.services import PostgresCluster, Proc, RedisServer, missing_tools
from shared.clients import create_client, publish_tokens
from shared.config import Settings
from shared.db import make_engine, make_sessionmaker, upgrade_database
from shared.ports import free_port, wait_for_port


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.log_dir = Path(tempfile.mkdtemp(prefix="pp-soak-"))
        self.pg = PostgresCluster()
        self.redis = RedisServer()
        self.port = free_port()
        self.procs: list[Proc] = []
        self.faults: list[str] = []
        self.stop = threading.Event()

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.redis.url, "DATABASE_URL": self.pg.url, "TOKEN_PUBLISH_S": "2"}

    def start(self, name: str, *args: str) -> Proc:
        proc = Proc(name, list(args), self.env(), self.log_dir)
        self.procs.append(proc)
        return proc

    def inject(self) -> None:
        kinds = itertools.cycle(["worker", "redis", "postgres", "receiver"])
        while not self.stop.wait(self.args.fault_every_s):
            kind = next(kinds)
            started = time.monotonic()
            if kind == "worker":
                victim = next(p for p in reversed(self.procs) if p.name.startswith("worker"))
                victim.kill()
                self.procs.remove(victim)
                time.sleep(1)
                self.start(f"worker-{len(self.faults)}", "worker")
            elif kind == "redis":
                self.redis.kill()
                time.sleep(2)
                self.redis.start()
            elif kind == "postgres":
                self.pg.stop("immediate")
                time.sleep(10)
                self.pg.start()
            else:
                receiver = next(p for p in self.procs if p.name.startswith("serve"))
                receiver.signal(signal.SIGTERM)
                receiver.process.wait(timeout=40)
                self.procs.remove(receiver)
                self.start(f"serve-{len(self.faults)}", "serve", "--port", str(self.port))
            self.faults.append(f"{kind} ({time.monotonic() - started:.1f} s)")
            print(f"  fault: {self.faults[-1]}", file=sys.stderr, flush=True)

    def run(self) -> int:
        self.pg.init()
        engine = make_engine(Settings(database_url=self.pg.url))
        upgrade_database(engine)
        self.redis.start()
        with make_sessionmaker(engine).begin() as session:
            token = create_client(session, "soak-meters")
            session.flush()
            publish_tokens(session, self.redis.client())
        engine.dispose()
        self.start("serve", "serve", "--port", str(self.port))
        for i in range(self.args.workers):
            self.start(f"worker-start-{i}", "worker")
        wait_for_port(self.port)
        fleet = Fleet(
            f"http://127.0.0.1:{self.port}",
            token,
            count=self.args.n,
            prefix="soak",
            concurrency=self.args.concurrency,
            deadline_s=self.args.deadline_s,
            request_timeout_s=10,
        )
        injector = threading.Thread(target=self.inject, daemon=True)
        began = time.monotonic()
        fleet.start()
        injector.start()
        last = 0
        while fleet._thread is not None and fleet._thread.is_alive():
            time.sleep(5)
            acked = fleet.acked_count
            rate = (acked - last) / 5
            print(f"  {acked} acknowledged ({rate:.0f}/s)", file=sys.stderr, flush=True)
            last = acked
        self.stop.set()
        injector.join(60)
        fleet.join(1)
        sent_s = time.monotonic() - began
        result = wait_for_count(fleet, self.pg.url, timeout_s=600)
        drained_s = time.monotonic() - began
        print(f"sent                  {result.sent}")
        print(f"acknowledged          {result.acknowledged}")
        print(f"stored                {result.stored}")
        print(f"duplicates            {result.duplicates}")
        print(f"lost                  {result.lost}")
        print(f"stored, not acked     {result.unacknowledged_stored}")
        print(f"stored under other id {result.wrong_reference}")
        print(f"resends, other id     {fleet.mismatched_resends}")
        print(f"attempt outcomes      {dict(fleet.outcomes)}")
        print(f"503 slower than 2 s   {len(fleet.slow_refusals)}")
        print(f"faults injected       {len(self.faults)}: {', '.join(self.faults)}")
        print(f"time                  {sent_s:.0f} s sending, {drained_s:.0f} s until stored")
        print(f"logs                  {self.log_dir}")
        return 0 if result.exact and result.acknowledged == result.sent else 1

    def close(self) -> None:
        self.stop.set()
        for proc in self.procs:
            proc.stop(timeout_s=15)
        self.redis.close()
        self.pg.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="permits to push")
    parser.add_argument("--concurrency", type=int, default=64, help="meters sending at once")
    parser.add_argument("--fault-every-s", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--deadline-s", type=float, default=3600.0, help="give up sending")
    args = parser.parse_args()
    reason = missing_tools()
    if reason is not None:
        print(f"soak: {reason}", file=sys.stderr)
        return 2
    soak = Soak(args)
    try:
        return soak.run()
    finally:
        soak.close()


if __name__ == "__main__":
    sys.exit(main())
