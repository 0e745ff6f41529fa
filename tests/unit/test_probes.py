"""The receiver's /healthz, /readyz and /metrics, on fakeredis.

/metrics is checked against deploy/metrics.yml (exposition_problems), against what the
dashboard and the alert rules use, against `promtool check metrics`, and its queue
figures against Redis itself.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import fakeredis
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from ingest.metrics import ReceiverMetrics, prepare_multiprocess_dir
from ingest.routes import BATCH_PATH, PUSH_PATH
from shared.config import Settings
from shared.ports import free_port
from tests.factories import make_payload, permits_queue, run_worker
from tests.support.metrics import (
    METRICS,
    PROMTOOL,
    exposition_problems,
    load_yaml,
    metric_names_used,
    needs_promtool,
    samples,
    value,
)
from worker.context import init_context
from worker.stats import publish_database_counts


async def scrape(client: TestClient) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return await response.text()


@pytest.mark.parametrize(
    "redis_url",
    [
        f"redis://127.0.0.1:{free_port()}/0",
        # Sentinels that do not answer: no primary, as during a failover.
        f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/mymaster/0",
    ],
)
async def test_healthz_answers_without_redis(
    aiohttp_client: Callable[..., object], redis_url: str
) -> None:
    settings = Settings(redis_url=redis_url, redis_timeout_s=0.2)
    client: TestClient = await aiohttp_client(create_app(settings))  # type: ignore[assignment]
    response = await client.get("/healthz")
    assert (response.status, await response.json()) == (200, {"status": "ok"})
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "unready" and body["redis"].startswith("unreachable")


async def test_readyz_without_a_database_waits_for_the_token_set(
    aiohttp_client: Callable[..., object],
    settings: Settings,
    redis: fakeredis.FakeRedis,
    add_client: Callable[..., str],
) -> None:
    no_reads = dataclasses.replace(settings, read_database_url="none")
    client: TestClient = await aiohttp_client(create_app(no_reads, redis=redis))  # type: ignore[assignment]
    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.json() == {
        "status": "unready",
        "redis": "ok",
        "tokens": "not published yet",
    }
    add_client()  # a worker (here, the fixture) publishes the token set
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "redis": "ok", "tokens": "loaded"}


async def test_readyz_with_a_database_reads_the_clients_until_they_are_published(
    client: TestClient, redis: fakeredis.FakeRedis, add_client: Callable[..., str]
) -> None:
    token = add_client()
    redis.flushall()  # Redis lost the set before this receiver ever read it
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "redis": "ok", "tokens": "loaded"}
    reply = await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    assert reply.status == 200, await reply.text()


async def test_metrics_after_pushes_and_a_worker_run(
    client: TestClient,
    redis: fakeredis.FakeRedis,
    settings: Settings,
    sessions: sessionmaker[Session],
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # fakeredis has no INFO: Redis's memory figures as a real one would report them.
    memory = {"used_memory": 1_234_567, "maxmemory": 1_000_000_000}
    real_info = redis.info
    monkeypatch.setattr(
        redis, "info", lambda section=None, *a, **k: memory if section == "memory" else real_info()
    )
    for number in ("A", "B", "C"):
        assert (await client.post(PUSH_PATH, json=make_payload(apiToken=token, permitNo=number))).ok
    await client.post(PUSH_PATH, json=make_payload(apiToken=token, LicencePlate=None))  # 9006
    await client.post(PUSH_PATH, json=make_payload(apiToken="pp-unknown"))  # 9002
    await client.post(PUSH_PATH, data=b"{", headers={"Content-Type": "application/json"})
    await client.get("/no/such/page")  # a read: counted as a request, not a rejected push

    # Before the worker: the queue figures are Redis's own.
    queue = permits_queue(redis)
    head = queue.get_jobs()[0]
    assert head.enqueued_at is not None
    before = time.time()
    found = samples(await scrape(client))
    after = time.time()
    assert value(found, "rq_jobs", queue="permits", status="queued") == queue.count == 3
    assert value(found, "permit_push_redis_memory_used_bytes") == 1_234_567
    assert value(found, "permit_push_redis_memory_max_bytes") == 1_000_000_000
    lag = value(found, "permit_push_queue_lag_seconds", queue="permits")
    assert lag is not None
    assert before - head.enqueued_at.timestamp() <= lag <= after - head.enqueued_at.timestamp()

    init_context(settings)
    run_worker(redis)
    with sessions() as session:
        publish_database_counts(session, redis, interval_s=15)
    text = await scrape(client)
    found = samples(text)
    assert value(found, "rq_jobs", queue="permits", status="queued") == queue.count == 0
    assert value(found, "rq_jobs", queue="permits", status="finished") == 3
    assert value(found, "permit_push_queue_lag_seconds", queue="permits") == 0
    assert value(found, "permit_push_permits_stored_total") == 3
    assert value(found, "permit_push_permits_disconnected") == 3  # "Lot 4" is no zone here
    assert value(found, "permit_push_dead_letters") == 0
    push = {"route": "push", "method": "POST"}
    assert value(found, "permit_push_http_requests_total", **push, status="200") == 3
    assert value(found, "permit_push_http_requests_total", **push, status="400") == 2
    assert value(found, "permit_push_http_requests_total", **push, status="401") == 1
    get_404 = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(found, "permit_push_http_requests_total", **get_404) == 1
    rejected = {
        labels: n for (name, labels), n in found.items() if name == "permit_push_rejected_total"
    }
    assert rejected == {
        frozenset({("error_code", "9006")}): 1,
        frozenset({("error_code", "9002")}): 1,
        frozenset({("error_code", "9003")}): 1,
    }
    assert value(found, "permit_push_batch_size_count") == 3
    assert value(found, "permit_push_enqueue_duration_seconds_count") == 3
    # No worker is alive after a burst run, so rq_workers has no series yet: register one.
    assert not any(name == "rq_workers" for name, _ in found)
    worker = queue_worker(redis)
    text = await scrape(client)
    assert value(samples(text), "rq_workers", name=worker, queues="permits", state="idle") == 1

    assert exposition_problems(text) == []
    exposed = {name for name, _ in samples(text)}
    made_by_prometheus = set(load_yaml(METRICS)["prometheus"])  # `up`
    for name in metric_names_used() - made_by_prometheus:
        assert {name, name + "_total", name + "_bucket"} & exposed, f"{name} is not exposed"


def queue_worker(redis: fakeredis.FakeRedis) -> str:
    from rq import SimpleWorker

    worker = SimpleWorker([permits_queue(redis)], connection=redis)
    worker.register_birth()
    worker.set_state("idle")
    return str(worker.name)


@needs_promtool
async def test_promtool_accepts_the_real_exposition(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    await client.post(PUSH_PATH, json=make_payload(apiToken=token, LicencePlate=None))
    queue_worker(redis)
    redis.incrby("ingest:stats:permits_stored", 1)
    redis.hset("ingest:stats:db", mapping={"disconnected": 0, "dead_letters": 0})
    text = await scrape(client)
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_scrape_without_redis_still_shows_the_receivers_own_metrics(
    aiohttp_client: Callable[..., object],
) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=0.2)
    client: TestClient = await aiohttp_client(create_app(settings))  # type: ignore[assignment]
    await client.get("/healthz")
    found = samples(await scrape(client))
    names = {name for name, _ in found}
    assert "permit_push_http_requests_total" in names
    assert "rq_jobs" not in names


async def test_openmetrics_when_prometheus_asks_for_it(client: TestClient) -> None:
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).endswith("# EOF\n")


def test_several_processes_are_summed_in_multiprocess_mode(tmp_path: Path) -> None:
    """Two receiver processes count into PROMETHEUS_MULTIPROC_DIR; one scrape sums both."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_99999.db").write_bytes(b"left by an earlier run")
    prepare_multiprocess_dir(str(directory))
    assert list(directory.iterdir()) == []
    code = textwrap.dedent(
        """
        import asyncio, fakeredis
        from aiohttp.test_utils import TestClient, TestServer
        from ingest.app import create_app
        from shared.config import Settings

        async def main():
            settings = Settings.from_env()
            app = create_app(settings, redis=fakeredis.FakeRedis())
            async with TestClient(TestServer(app)) as client:
                for _ in range(3):
                    assert (await client.get("/healthz")).status == 200
        asyncio.run(main())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(2)]
    assert [p.wait(timeout=60) for p in processes] == [0, 0]

    settings = Settings(prometheus_multiproc_dir=str(directory))
    metrics = ReceiverMetrics(settings, fakeredis.FakeRedis())
    found = samples(generate_latest(metrics.registry).decode())
    healthz = {"route": "healthz", "method": "GET", "status": "200"}
    assert value(found, "permit_push_http_requests_total", **healthz) == 6
    assert value(found, "permit_push_http_request_duration_seconds_count", route="healthz") == 6


async def test_a_batch_push_is_timed_and_counted_as_one_batch(
    client: TestClient, redis: fakeredis.FakeRedis, token: str
) -> None:
    batch = [make_payload(apiToken=token, permitNo=f"B{i}") for i in range(3)]
    assert (await client.post(BATCH_PATH, json=batch)).status == 200
    found = samples(await scrape(client))
    assert value(found, "permit_push_batch_size_count") == 1
    assert value(found, "permit_push_batch_size_sum") == 3
    assert value(found, "permit_push_enqueue_duration_seconds_count") == 1
    assert permits_queue(redis).count == 1
