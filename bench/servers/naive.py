"""Baseline 2, what a user writes first: one RQ `Queue.enqueue` per request.

RQ is synchronous, so the enqueue runs in the default thread pool to keep the event loop
free. It skips validation, token check and de-duplication, so it does less work than
permit-push per request: the comparison favours it.

    REDIS_URL=redis://127.0.0.1:6379/13 python -m bench.servers.naive --port 8082
"""

from __future__ import annotations

import asyncio
import os
from uuid import uuid4

import orjson
from aiohttp import web
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench.servers.common import PUSH_PATH, parse_args, serve, success_response

NAIVE_QUEUE = "bench-naive"
# Never run: the bench only measures the enqueue. A dotted path, as the receiver uses.
NAIVE_JOB = "bench.servers.naive.store_permit"
QUEUE_KEY: web.AppKey[Queue] = web.AppKey("queue", Queue)


def store_permit(permit: dict[str, object]) -> None:
    """Stand-in job target; the benchmark never runs it."""


async def push(request: web.Request) -> web.Response:
    payload = orjson.loads(await request.read())
    if not isinstance(payload, dict):
        raise web.HTTPBadRequest()
    ref = str(uuid4())
    queue = request.app[QUEUE_KEY]
    await asyncio.to_thread(queue.enqueue, NAIVE_JOB, payload, job_id=ref)
    return success_response(ref)


def make_app() -> web.Application:
    redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13"))
    app = web.Application()
    app[QUEUE_KEY] = Queue(NAIVE_QUEUE, connection=redis, serializer=JSONSerializer)
    app.router.add_post(PUSH_PATH, push)
    return app


if __name__ == "__main__":
    args = parse_args("naive receiver: one RQ enqueue per request, in a thread")
    serve(make_app, args.host, args.port, args.processes)
