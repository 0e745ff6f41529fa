#!/usr/bin/env python3
"""Container health probes for docker-compose (the slim image has no curl).

    permit-push-healthcheck http URL   exit 0 if URL answers 2xx within the timeout
    permit-push-healthcheck rq-worker  exit 0 if an RQ worker of this host is registered

The worker probe asks Redis, not the process: RQ registers a worker at birth and keeps
its key alive with a heartbeat, and the key expires soon after the worker dies or loses
Redis. `rq info` alone would exit 0 with no worker at all. Each container has its own
hostname, so `--scale worker=N` gives every replica its own verdict.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis import Redis

TIMEOUT_S = 3.0


def check_http(url: str) -> int:
    """Return 0 if GET url answers 2xx, else 1."""
    try:
        # The URL comes from the compose file, never from a request.
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


def check_rq_worker(redis: Redis, hostname: str) -> int:
    """Return 0 if an RQ worker registered from `hostname` is alive in Redis, else 1."""
    from rq import Worker

    try:
        workers = Worker.all(connection=redis)
    except Exception as exc:  # any Redis failure means this worker cannot work either
        print(f"unhealthy: cannot list RQ workers: {exc}", file=sys.stderr)
        return 1
    if any(worker.hostname == hostname for worker in workers):
        return 0
    print(f"unhealthy: no RQ worker registered from host {hostname}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "http":
        return check_http(argv[1])
    if argv == ["rq-worker"]:
        from shared.redis import connect  # the image's permit-push: plain or Sentinel URL

        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        redis = connect(url, TIMEOUT_S, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        return check_rq_worker(redis, socket.gethostname())
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
