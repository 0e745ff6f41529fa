"""Baseline 3, the floor of the fixed design: what any receiver of this shape must do.

aiohttp parses the body, marshmallow validates it (permit-push's own schema and time
checks; an invalid permit gets a 400), and a micro-batch of permits becomes ONE RQ job in
Redis before any of them is answered: permit-push's own micro-batcher (its settings), job
format, job writer (its durable acknowledgement) and Redis client. Everything else
permit-push does per request is left out: the Content-Type check and the body limit,
tokens, rate limits, the de-duplication of resends (its Redis claim and database read),
the queue-depth and memory back-pressure, owner keys, metrics, log lines, request ids and
the error middleware. So this is an upper bound for permit-push, not a rival: the gap
between the two is permit-push's own cost, and the gap between this and bare is what the
design's parts cost whoever writes the receiver.

The jobs go to a queue of their own that no worker drains (the bench flushes its db).
`--validate-only` answers each permit with a fresh id once marshmallow has passed it, with
no batch and no Redis: the floor without RQ, run by hand.

    REDIS_URL=redis://127.0.0.1:6379/13 python -m bench.servers.floor --port 8083
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
from aiohttp import web
from redis import Redis

from bench.servers.common import PUSH_PATH, parse_args, serve, success_response
from ingest.app import permit_batcher
from ingest.microbatch import MicroBatcher
from ingest.permit_enqueuer import PushItem, new_reference_ids, to_job_permit
from shared.config import Settings
from shared.constants import PERSIST_PERMITS_JOB
from shared.queue import JobWriter
from shared.redis import make_receiver_redis
from shared.schemas import InvalidPermitError, PermitIn, load_permit
from shared.tokens import ClientInfo

FLOOR_QUEUE = "bench-floor"
CLIENT = ClientInfo(id=1, name="bench", permit_type="meter")  # the jobs' client
BATCHER_KEY: web.AppKey[MicroBatcher[PushItem, str]] = web.AppKey("batcher", MicroBatcher)
SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("settings", Settings)


class FloorEnqueuer:
    """A micro-batch as one RQ job, with fresh reference ids: no claim, no owner keys."""

    def __init__(self, writer: JobWriter, settings: Settings) -> None:
        self._writer = writer
        self._timezone = settings.timezone

    def enqueue(self, items: list[PushItem]) -> list[str | Exception]:
        ids: list[str | Exception] = [str(ref) for ref in new_reference_ids(len(items))]
        permits = [
            to_job_permit(item, str(ref), self._timezone)
            for item, ref in zip(items, ids, strict=True)
        ]
        description = f"persist_permits({len(permits)} permits)"
        self._writer.write(PERSIST_PERMITS_JOB, {"permits": permits}, description, {})
        return ids


async def _validated(request: web.Request) -> PermitIn | web.Response:
    """The permit as permit-push's push handler loads it, or the 400 for an invalid one."""
    settings = request.app[SETTINGS_KEY]
    try:
        return load_permit(
            orjson.loads(await request.read()),
            timezone=settings.timezone,
            max_duration=settings.max_permit_duration,
        )
    except InvalidPermitError:
        return web.Response(status=400)


async def push(request: web.Request) -> web.Response:
    received_at = datetime.now(UTC)
    permit = await _validated(request)
    if isinstance(permit, web.Response):
        return permit
    ref = await request.app[BATCHER_KEY].submit(PushItem(CLIENT, permit, received_at))
    return success_response(ref)


async def push_validate_only(request: web.Request) -> web.Response:
    permit = await _validated(request)
    if isinstance(permit, web.Response):
        return permit
    return success_response(str(new_reference_ids(1)[0]))


def make_app(
    settings: Settings, redis: Redis | None = None, *, enqueue: bool = True
) -> web.Application:
    """The floor receiver on QUEUE_NAME=bench-floor; ``redis``: a client to use (tests)."""
    settings = dataclasses.replace(settings, queue_name=FLOOR_QUEUE)
    app = web.Application()
    app[SETTINGS_KEY] = settings

    async def open_batcher(app: web.Application) -> AsyncIterator[None]:
        connection = redis if redis is not None else make_receiver_redis(settings)
        writer = await asyncio.to_thread(JobWriter.connect, connection, settings)
        app[BATCHER_KEY] = permit_batcher(FloorEnqueuer(writer, settings).enqueue, settings)
        yield
        await app[BATCHER_KEY].close()
        if redis is None:
            connection.close()

    if enqueue:
        app.cleanup_ctx.append(open_batcher)
        app.router.add_post(PUSH_PATH, push)
    else:
        app.router.add_post(PUSH_PATH, push_validate_only)
    return app


if __name__ == "__main__":
    args = parse_args(
        "the design's floor: marshmallow, micro-batched RQ jobs, nothing else",
        {"--validate-only": "validate, then answer: no batch, no RQ job, no Redis"},
    )
    make = functools.partial(make_app, Settings.from_env(), enqueue=not args.validate_only)
    serve(make, args.host, args.port, args.processes)
