"""Fill the permit queue with no worker running, through the receiver's own enqueue code.

Each permit goes through what the HTTP path does after reading the body: `load_permit`
(validation), the token's client from the same Redis hash the receiver reads,
`PushItem`, and `PermitEnqueuer.enqueue` over a `JobWriter` (de-dup claim + one RQ job
per batch). Only the
HTTP layer is skipped, since pushing 10^6 permits through it would take minutes.

    REDIS_URL=... python -m bench.fill --count 100000 --batch 50 --token T --nonce f0
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

import orjson

from bench.loadclient import permit_body
from ingest.permit_enqueuer import PermitEnqueuer, PushItem
from shared.config import Settings
from shared.constants import TOKENS_KEY
from shared.durability import NO_WAIT
from shared.queue import JobWriter
from shared.redis import make_worker_redis
from shared.schemas import load_permit
from shared.tokens import ClientInfo, hash_token


def client_for(token: str, settings: Settings) -> ClientInfo:
    """The client the receiver would resolve the token to (the published token hash)."""
    raw = make_worker_redis(settings).hget(TOKENS_KEY, hash_token(token))
    if raw is None:
        raise SystemExit(f"token not published in {TOKENS_KEY}; run `permit-push tokens create`")
    return ClientInfo.from_json(raw)


def fill(settings: Settings, token: str, nonce: str, count: int, batch: int) -> int:
    """Enqueue `count` unique permits in jobs of `batch`; return how many were accepted."""
    # Built as ingest.app builds it: one JobWriter shared by creates and operations.
    enqueuer = PermitEnqueuer(
        JobWriter(make_worker_redis(settings), settings, ack=NO_WAIT), settings
    )
    client = client_for(token, settings)
    accepted = 0
    for start in range(0, count, batch):
        now = datetime.now(UTC)
        items = [
            PushItem(client, load_permit(orjson.loads(permit_body(token, nonce, i))), now)
            for i in range(start, min(count, start + batch))
        ]
        accepted += sum(isinstance(o, str) for o in enqueuer.enqueue(items))
    return accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--nonce", required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    accepted = fill(Settings.from_env(), args.token, args.nonce, args.count, args.batch)
    result = {"accepted": accepted, "seconds": time.perf_counter() - started}
    print("BENCH_JSON " + json.dumps(result), flush=True)
    if accepted != args.count:
        raise SystemExit(f"only {accepted} of {args.count} permits were enqueued")


if __name__ == "__main__":
    main()
