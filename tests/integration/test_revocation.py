"""Revocation, on the real Redis and PostgreSQL (issue 13, "Revocation").

A revoked token is refused within TOKEN_CACHE_S by every receiver process and never comes
back: not through a worker's republish that read the clients before the revoke committed,
and a token entry this version cannot read refuses only its own token.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.multiprocess import MultiProcessCollector
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from ingest.app import create_app
from ingest.routes import PUSH_PATH
from shared.clients import change_and_publish, create_client, publish_tokens, revoke_client
from shared.config import Settings
from shared.constants import TOKENS_KEY
from shared.ports import free_port, wait_for_port
from shared.tokens import hash_token
from tests.factories import make_payload
from tests.support.processes import cli, running


class PausedRedis:
    """Redis whose first pipeline waits for ``go``: a worker paused between its read of
    the clients and its write of the token set."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.reached = threading.Event()
        self.go = threading.Event()

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.set()
        assert self.go.wait(20)
        return self._redis.pipeline(*args, **kwargs)


def test_a_republish_that_read_the_clients_before_a_revoke_never_brings_it_back(
    pg_sessions: sessionmaker[Session], real_redis: Redis
) -> None:
    with pg_sessions.begin() as session:
        token = create_client(session, "meters")
        session.flush()
        publish_tokens(session, real_redis)
    digest = hash_token(token)
    assert real_redis.hexists(TOKENS_KEY, digest)

    # The worker's periodic publish reads the active clients (meters among them) ...
    paused = PausedRedis(real_redis)

    def worker_publish() -> None:
        with pg_sessions() as session:
            publish_tokens(session, paused)  # type: ignore[arg-type]

    worker = threading.Thread(target=worker_publish)
    worker.start()
    assert paused.reached.wait(10)
    # ... then `permit-push tokens revoke meters` runs (commit, then publish) ...
    revoke = threading.Thread(
        target=change_and_publish,
        args=(pg_sessions, real_redis, lambda s: revoke_client(s, "meters")),
    )
    revoke.start()
    revoke.join(1.0)
    revoke_waited = revoke.is_alive()  # it waits for the worker's publish to finish
    # ... and only then the worker writes what it read.
    paused.go.set()
    worker.join(20)
    revoke.join(20)
    assert not worker.is_alive() and not revoke.is_alive()
    assert not real_redis.hexists(TOKENS_KEY, digest), "the republish brought the token back"
    assert revoke_waited


async def test_a_token_entry_with_unknown_fields_or_unreadable_does_not_fail_requests(
    aiohttp_client: Callable[..., Any],
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
) -> None:
    with pg_sessions.begin() as session:
        token = create_client(session, "meters")
        other = create_client(session, "cameras")
        session.flush()
        publish_tokens(session, real_redis)
    # A newer worker (a rolling deploy) publishes a field this receiver does not know, and
    # something wrote an entry that is no client at all.
    entry = json.loads(real_redis.hget(TOKENS_KEY, hash_token(token)) or b"{}")
    real_redis.hset(TOKENS_KEY, hash_token(token), json.dumps({**entry, "region": "east"}))
    real_redis.hset(TOKENS_KEY, hash_token(other), b'{"id": "no name"')
    client: TestClient = await aiohttp_client(create_app(pg_settings, redis=real_redis))
    reply = await client.post(PUSH_PATH, json=make_payload(apiToken=token))
    assert reply.status == 200, await reply.text()
    refused = await client.post(PUSH_PATH, json=make_payload(apiToken=other))
    assert (refused.status, (await refused.json())["ErrorCode"]) == (401, 9002)


def push(port: int, token: str, number: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/OC-TOMA/v1/permits/push",
        data=json.dumps(make_payload(apiToken=token, permitNo=f"R{number}")).encode(),
        headers={"Content-Type": "application/json", "Connection": "close"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def answers_by_process(directory: Path) -> dict[str, dict[str, float]]:
    """Push answers counted by each receiver process (its own metrics file), by status."""
    counts: dict[str, dict[str, float]] = {}
    for path in directory.glob("counter_*.db"):
        pid = path.stem.removeprefix("counter_")
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in metric.samples:
                if sample.name == "permit_push_http_requests_total" and (
                    sample.labels.get("route") == "push"
                ):
                    status = sample.labels["status"]
                    counts.setdefault(pid, {})[status] = sample.value
    return counts


def test_a_revoke_under_load_is_refused_by_every_receiver_process_within_the_cache_time(
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    real_redis: Redis,
    tmp_path: Path,
) -> None:
    cache_s = 1.0
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = {
        "REDIS_URL": pg_settings.redis_url,
        "DATABASE_URL": pg_settings.database_url,
        "TOKEN_CACHE_S": str(cache_s),
        "TOKEN_PUBLISH_S": "0.2",  # the workers republish all the time: the race, often
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "LOG_LEVEL": "WARNING",
    }
    token = cli("tokens", "create", "--name", "fleet", env=env).stdout.splitlines()[-1]
    port = free_port()
    answers: list[tuple[float, int]] = []
    stop = threading.Event()

    def meter(start: int) -> None:
        number = start
        while not stop.is_set():
            status = push(port, token, number)
            answers.append((time.monotonic(), status))
            number += 1000

    with (
        running("serve", "--port", str(port), "--processes", "2", env=env, log=tmp_path / "s.log"),
        running("worker", "--processes", "2", env=env, log=tmp_path / "w.log"),
    ):
        wait_for_port(port, timeout_s=60)
        meters = [threading.Thread(target=meter, args=(i,)) for i in range(4)]
        for thread in meters:
            thread.start()
        time.sleep(2.0)
        assert answers and all(status == 200 for _, status in answers)
        cli("tokens", "revoke", "fleet", env=env)
        revoked_at = time.monotonic()
        time.sleep(cache_s + 0.3)
        settled = answers_by_process(metrics)
        time.sleep(3.0)  # fifteen republishes by the workers meanwhile
        stop.set()
        for thread in meters:
            thread.join(15)
        after = answers_by_process(metrics)

    # After TOKEN_CACHE_S, refusals only: 401, or 429 once an address has sent 20 unknown
    # tokens in 10 s (docs/reliability.md, Hostile clients).
    late = [status for at, status in answers if at > revoked_at + cache_s + 0.3]
    assert late and set(late) <= {401, 429}, sorted(set(late))
    # Each receiver process refused the revoked token (401), and answered no 200 after.
    assert len(after) == 2, after
    for pid, statuses in after.items():
        then = settled.get(pid, {})
        assert statuses.get("401", 0) > 0, (pid, statuses)
        assert statuses.get("200", 0) == then.get("200", 0), (pid, then, statuses)
