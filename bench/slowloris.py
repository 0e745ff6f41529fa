"""`python -m bench.slowloris`: thousands of slow sockets against a real `permit-push serve`.

harness/slowloris.py's attack, larger than tests/integration/test_slow_clients.py's: by
default 2,000 sockets opened over 5 s and trickled for 12 s against a receiver with a 3 s
REQUEST_READ_TIMEOUT_S, while one meter pushes. Uses the Redis and PostgreSQL of
TEST_REDIS_URL / TEST_DATABASE_URL (migrated; it adds an API client of its own). Prints
the push p50/p99 and the receiver's open files (/proc/PID/fd). `--read-timeout 0` turns
the deadline off, which is how the receiver behaved before it had one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from harness.slowloris import attack, raise_file_limit
from shared.ports import free_port, wait_for_port

BIN = Path(sys.executable).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slowloris")
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--open-s", type=float, default=5.0)
    parser.add_argument("--run-s", type=float, default=12.0)
    parser.add_argument("--read-timeout", type=float, default=3.0, help="REQUEST_READ_TIMEOUT_S")
    args = parser.parse_args(argv)
    raise_file_limit(args.sockets + 1024)  # the receiver inherits it
    env = {
        **os.environ,
        "REDIS_URL": os.environ["TEST_REDIS_URL"],
        "DATABASE_URL": os.environ["TEST_DATABASE_URL"],
        "REQUEST_READ_TIMEOUT_S": str(args.read_timeout),
        "RATE_LIMIT_PER_S": "0",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run([str(BIN / "permit-push"), "db", "upgrade"], env=env, check=True)
    made = subprocess.run(
        [
            str(BIN / "permit-push"),
            "tokens",
            "create",
            "--name",
            f"slowloris-{uuid.uuid4().hex[:8]}",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    token = made.stdout.split()[-1]
    port = free_port()
    with tempfile.TemporaryFile() as log:
        receiver = subprocess.Popen(
            [str(BIN / "permit-push"), "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port)
            result = asyncio.run(
                attack(
                    port=port,
                    pid=receiver.pid,
                    token=token,
                    sockets=args.sockets,
                    open_s=args.open_s,
                    run_s=args.run_s,
                )
            )
        finally:
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(timeout=30)
    print(json.dumps({"read_timeout_s": args.read_timeout, **result.summary()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
