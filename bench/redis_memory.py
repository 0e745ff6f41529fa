"""Redis byte-seconds per accepted permit: what a day of pushing costs Redis.

Starts a private redis-server, a SQLite database, one `permit-push serve` and one
`permit-push worker`; pushes N distinct permits over HTTP (single pushes, as meters send
them), waits until all are stored and the queue is empty, then walks every key in Redis and
costs each at MEMORY USAGE x remaining TTL. Keys without a TTL are listed apart: they must
not grow with the permits (RQ's registries are costed at the result TTL, the life of their
entries, since RQ cleans them by score).

    python -m bench.redis_memory [--permits 20000] [--env JOB_RESULT_TTL_S=0 ...]

The issue's baseline (866beb7) was 26.6 M byte-seconds per permit.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sqlite3
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp

from harness.payloads import make_payload
from harness.services import Proc, RedisServer, wait_until
from shared.ports import free_port, wait_for_port

BASELINE_BYTE_SECONDS = 26.6e6
TARGET_BYTE_SECONDS = 500_000
PUSH_PATH = "/api/OC-TOMA/v1/permits/push"
# Key classes: digits, uuids and hex runs replaced, so one class per kind of key.
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32,}|\d+")


async def push_all(port: int, token: str, count: int, connections: int) -> int:
    """Push ``count`` distinct permits; return how many got 200."""
    nonce = uuid4().hex[:8]
    accepted = 0
    next_index = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal accepted, next_index
            while next_index < count:
                index = next_index
                next_index += 1
                body = make_payload(apiToken=token, permitNo=f"{nonce}-{index}")
                async with session.post(f"http://127.0.0.1:{port}{PUSH_PATH}", json=body) as reply:
                    await reply.read()
                    accepted += reply.status == 200

        await asyncio.gather(*(client() for _ in range(connections)))
    return accepted


def key_class(key: bytes) -> str:
    return _ID.sub("#", key.decode(errors="replace"))


def walk(redis: Any, result_ttl_s: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """{class: [keys, bytes, byte-seconds]} of keys with a TTL (and RQ's registries);
    {class: bytes} of the other keys without one."""
    costed: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    fixed: dict[str, int] = defaultdict(int)
    for key in redis.scan_iter(count=1000):
        size = redis.memory_usage(key, samples=0) or 0
        ttl_ms = redis.pttl(key)
        name = key_class(key)
        if ttl_ms > 0:
            lifetime_s = ttl_ms / 1000
        elif name.startswith("rq:finished:"):
            lifetime_s = result_ttl_s  # entries leave by score after the result TTL
        else:
            fixed[name] += size
            continue
        entry = costed[name]
        entry[0] += 1
        entry[1] += size
        entry[2] += size * lifetime_s
    return costed, fixed


def commands_processed(redis: Any) -> int:
    return int(redis.info("stats")["total_commands_processed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permits", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for serve and worker"
    )
    args = parser.parse_args()
    # No rate limit: one client sends everything here.
    extra = {"RATE_LIMIT_PER_S": "0", **dict(item.split("=", 1) for item in args.env)}
    result_ttl_s = int(extra.get("JOB_RESULT_TTL_S", 60))
    workdir = Path(tempfile.mkdtemp(prefix="pp-bench-memory-"))
    redis_server = RedisServer()
    procs: list[Proc] = []
    try:
        redis_server.start()
        redis = redis_server.client()
        database = workdir / "permits.sqlite3"
        env = {
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": f"sqlite:///{database}",
            "LOG_LEVEL": "WARNING",
            **extra,
        }
        Proc("db", ["db", "upgrade"], env, workdir).process.wait(timeout=60)
        tokens = Proc("token", ["tokens", "create", "--name", "bench"], env, workdir)
        tokens.process.wait(timeout=60)
        token = (workdir / "token.log").read_text().strip().splitlines()[-1]
        port = free_port()
        procs.append(Proc("serve", ["serve", "--port", str(port)], env, workdir))
        procs.append(Proc("worker", ["worker"], env, workdir))
        wait_for_port(port)
        wait_until(lambda: redis.exists("ingest:tokens:loaded"), 30, "tokens published")
        commands_before = commands_processed(redis)
        started = time.monotonic()
        accepted = asyncio.run(push_all(port, token, args.permits, args.connections))
        pushed_s = time.monotonic() - started

        def stored() -> int:
            with sqlite3.connect(database) as connection:
                return int(connection.execute("SELECT count(*) FROM permits").fetchone()[0])

        wait_until(lambda: stored() >= accepted, 600, "all permits stored", step_s=0.5)
        wait_until(lambda: redis.llen("rq:queue:permits") == 0, 60, "queue empty")
        time.sleep(1.0)  # the last job's bookkeeping
        commands = commands_processed(redis) - commands_before
        costed, fixed = walk(redis, result_ttl_s)
    finally:
        for proc in reversed(procs):
            proc.stop()
        redis_server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    total = sum(entry[2] for entry in costed.values())
    per_permit = total / max(accepted, 1)
    print(f"permits accepted {accepted} of {args.permits} in {pushed_s:.1f} s; stored {accepted}")
    print(f"settings: {extra or 'defaults'}")
    print(f"Redis commands processed per permit: {commands / max(accepted, 1):.2f}")
    print(f"{'key class':50} {'keys':>7} {'bytes':>10} {'byte-s/permit':>14}")
    for name, (keys, size, byte_s) in sorted(costed.items(), key=lambda kv: -kv[1][2]):
        print(f"{name[:50]:50} {int(keys):7} {int(size):10} {byte_s / max(accepted, 1):14,.0f}")
    print("keys without a TTL (must not grow per permit):")
    for name, size in sorted(fixed.items()):
        print(f"  {name[:60]:60} {size:8} bytes")
    verdict = "OK" if per_permit <= TARGET_BYTE_SECONDS else "OVER TARGET"
    print(
        f"byte-seconds per permit: {per_permit:,.0f} (baseline 866beb7: "
        f"{BASELINE_BYTE_SECONDS:,.0f}; target <= {TARGET_BYTE_SECONDS:,}) {verdict}"
    )


if __name__ == "__main__":
    main()
