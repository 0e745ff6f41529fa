"""Baseline 3, the floor of the fixed design: what any receiver of this shape must do.

aiohttp parses the body, marshmallow validates it (permit-push's own schema and time
checks), and a micro-batch of permits becomes ONE RQ job in Redis before any of them is
answered: permit-push's own micro-batcher, job format and job writer, with its window and
concurrency. Everything else permit-push does per request is left out: tokens, rate
limits, the de-duplication of resends (its Redis claim and database read), owner keys,
metrics, log lines, request ids, the error middleware. So this is an upper bound for
permit-push, not a rival: the gap between the two is permit-push's own cost, and the gap
between this and bare is what the design's parts cost whoever writes the code.

The jobs go to a queue of their own that no worker drains (the bench flushes its db).
`--validate-only` answers each request with a fresh id once marshmallow has passed it, with
no batch and no Redis: the floor without RQ, run by hand (docs/performance.md).

    REDIS_URL=redis://127.0.0.1:6379/13 python -m bench.servers.floor --port 8083
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
from aiohttp import web
from redis import Redis

from bench.servers.common import PUSH_PATH, parse_args, serve
from ingest.microbatch import MicroBatcher
from ingest.permit_enqueuer import PushItem, new_reference_ids, to_job_permit
from shared.config import Settings
from shared.constants import PERSIST_PERMITS_JOB
from shared.queue import JobWriter
from shared.schemas import load_permit
from shared.tokens import ClientInfo

FLOOR_QUEUE = "bench-floor"
CLIENT = ClientInfo(id=1, name="bench", permit_type="meter")
BATCHER: web.AppKey[MicroBatcher[PushItem, str]] = web.AppKey("batcher", MicroBatcher)
SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("settings", Settings)


class FloorEnqueuer:
    """A micro-batch as one RQ job, with fresh reference ids: no claim, no owner keys."""

    def __init__(self, writer: JobWriter, settings: Settings) -> None:
        self._writer = writer
        self._timezone = settings.timezone

    def enqueue(self, items: list[PushItem]) -> list[str | Exception]:
        ids = [str(ref) for ref in new_reference_ids(len(items))]
        timezone = self._timezone
        permits = [to_job_permit(i, ref, timezone) for i, ref in zip(items, ids, strict=True)]
        self._writer.write(
            PERSIST_PERMITS_JOB, {"permits": permits}, f"persist_permits({len(permits)})", {}
        )
        return list(ids)


async def push(request: web.Request) -> web.Response:
    received_at = datetime.now(UTC)
    settings = request.app[SETTINGS_KEY]
    permit = load_permit(
        orjson.loads(await request.read()),
        timezone=settings.timezone,
        max_duration=settings.max_permit_duration,
    )
    item = PushItem(CLIENT, permit, received_at)
    batcher = request.app.get(BATCHER)
    ref = str(new_reference_ids(1)[0]) if batcher is None else await batcher.submit(item)
    body = {"status": "success", "reference_id": ref, "InternalReferenceID": ref}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def make_app(redis: Redis | None = None, *, enqueue: bool = True) -> web.Application:
    """The floor receiver; ``redis``: its Redis (default: REDIS_URL, opened at start-up)."""
    settings = Settings.from_env({**os.environ, "QUEUE_NAME": FLOOR_QUEUE})
    app = web.Application()
    app[SETTINGS_KEY] = settings

    async def batcher(app: web.Application) -> AsyncIterator[None]:
        connection = redis if redis is not None else Redis.from_url(settings.redis_url)
        writer = JobWriter(connection, settings, wait_aof=False)
        app[BATCHER] = MicroBatcher(
            "enqueue-floor",
            FloorEnqueuer(writer, settings).enqueue,
            window_s=settings.batch_window_ms / 1000,
            max_size=settings.batch_max_permits,
            concurrency=settings.enqueue_concurrency,
        )
        yield
        await app[BATCHER].close()
        if redis is None:
            connection.close()

    if enqueue:
        app.cleanup_ctx.append(batcher)
    app.router.add_post(PUSH_PATH, push)
    return app


if __name__ == "__main__":
    args = parse_args(
        "the design's floor: marshmallow, micro-batched RQ jobs, nothing else",
        {"--validate-only": "validate, then answer: no batch, no RQ job, no Redis"},
    )
    serve(
        functools.partial(make_app, enqueue=not args.validate_only),
        args.host,
        args.port,
        args.processes,
    )
