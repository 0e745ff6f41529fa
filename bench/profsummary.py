"""Summarise a py-spy `--format raw` file (collapsed stacks) as text tables.

    python -m bench.profsummary /tmp/prof/receiver.txt [--top 30]

Samples whose innermost frame is a known wait (a socket read, a lock, the event loop's
poll) are counted apart as "waiting", so the tables show where CPU time goes.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# Innermost frames that mean "blocked", not "computing" (py-spy keeps some of them).
WAIT_FRAMES = (
    "_worker (thread.py",  # an idle thread-pool thread waiting for work
    "wait (threading.py",
    "_read_from_socket (redis",
    "wait (psycopg",
    "run_app (aiohttp",  # uvloop's poll: the event loop has nothing to do
    "run_app (ingest/server",  # the same in permit-push's own run_app (ingest/server.py)
    "run_until_complete",
    "select (selectors.py",
    "can_read (redis",
)


def frame_name(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`."""
    func, _, where = frame.partition(" (")
    module = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{func} ({module})" if where else func


def is_wait(frame: str) -> bool:
    return any(
        marker.split(" (")[0] in frame and marker.split(" (")[1] in frame for marker in WAIT_FRAMES
    )


def summarise(path: Path, top: int) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = waiting = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        if is_wait(frames[-1]):
            waiting += samples
            continue
        for name in {frame_name(f) for f in frames if " (" in f}:
            inclusive[name] += samples
        own[frame_name(frames[-1])] += samples
    busy = max(total - waiting, 1)
    out = [
        f"{path}: {total} samples, {100 * waiting / max(total, 1):.0f}% waiting; "
        f"shares below are of the {busy} busy samples"
    ]
    out.append("inclusive (function and what it calls):")
    out += [f"  {100 * n / busy:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    out.append("self (the function's own code):")
    out += [f"  {100 * n / busy:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    for path in args.files:
        print(summarise(path, args.top))


if __name__ == "__main__":
    main()
