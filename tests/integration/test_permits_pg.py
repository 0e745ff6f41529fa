"""Updates and deletes on PostgreSQL: in the order received with several workers at once."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from ingest.routes import ACTIVE_PATH, DELETE_PATH, PUSH_PATH, UPDATE_PATH
from shared.config import Settings
from shared.models import Permit
from tests.factories import make_payload, permits_queue
from worker.context import init_context
from worker.jobs import apply_operations, persist_permits

PERMITS = 12
WORKERS = 3


async def test_several_workers_apply_operations_in_the_order_received(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    pg_token: str,
) -> None:
    token = pg_token
    client: TestClient = await aiohttp_client(create_app(pg_settings, redis=real_redis))
    refs = []
    for i in range(PERMITS):
        reply = await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo=str(i)))
        refs.append((await reply.json())["reference_id"])
    for i, ref in enumerate(refs):  # the order received, per permit
        steps: list[tuple[str, dict[str, str]]] = [
            (UPDATE_PATH, {"plate": f"A{i}"}),
            (UPDATE_PATH, {"Amount": "20.00"}),
        ]
        if i % 2:
            steps.append((DELETE_PATH, {}))
        steps.append((UPDATE_PATH, {"plate": f"B{i}"}))  # rejected where deleted before
        for path, changes in steps:
            body = {"apiToken": token, "referenceID": ref, **changes}
            assert (await client.post(path, json=body)).status == 200
    queue = permits_queue(real_redis)
    jobs = [(job.func_name, job.kwargs) for job in queue.get_jobs()]
    queue.empty()
    assert len(jobs) > PERMITS // 2  # creates and operations spread over many jobs
    random.Random(7).shuffle(jobs)  # workers take them in any order, at the same time
    run_concurrently(pg_settings, jobs)

    with pg_sessions() as session:
        permits = {p.reference_id: p for p in session.scalars(select(Permit))}
    for i, ref in enumerate(refs):
        permit = permits[ref]
        assert str(permit.amount) == "20.00"
        if i % 2:
            assert (permit.plate, permit.deleted_at is not None) == (f"A{i}", True)
        else:
            assert (permit.plate, permit.deleted_at) == (f"B{i}", None)
    headers = {"Authorization": f"Bearer {token}"}
    found = await client.get(
        ACTIVE_PATH, params={"plate": "B0", "at": "2018-07-02T09:10:00"}, headers=headers
    )
    assert [p["reference_id"] for p in (await found.json())["permits"]] == [refs[0]]
    gone = await client.get(
        ACTIVE_PATH, params={"plate": "A1", "at": "2018-07-02T09:10:00"}, headers=headers
    )
    assert (await gone.json())["active"] is False


def run_concurrently(settings: Settings, jobs: list[tuple[str, dict[str, Any]]]) -> None:
    """WORKERS threads take jobs from one list, as RQ workers take them from the queue."""
    init_context(settings)
    functions = {
        "worker.jobs.persist_permits": persist_permits,
        "worker.jobs.apply_operations": apply_operations,
    }
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                if not jobs:
                    return
                name, kwargs = jobs.pop()
            try:
                functions[name](**kwargs)
            except BaseException as exc:  # reported below, in the test's thread
                failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
