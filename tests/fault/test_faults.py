"""Fault scenarios on real processes: each ends by counting every 200 against the database.

The fleet resends each permit until it gets a 200 (as meters do), so the count can be
exact: every acknowledged permit stored once, under the id it was given; nothing stored
that was not acknowledged; no permit stored twice (counted by permit number, so a second
reference id for the same permit would show too).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections import Counter
from functools import partial

import psycopg
import pytest
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from harness.load import Count, Fleet, count, stored_rows, wait_for_count
from harness.services import Proc, wait_until
from shared.config import Settings
from shared.constants import TOKENS_LOADED_KEY
from shared.ports import free_port, wait_for_port
from tests.fault.conftest import Stack, fault_table_line
from worker.lean_worker import IDLE_STOP_DEADLINE_S

# The faults of docs/reliability.md's table run once per DURABLE_ACK mode this machine's
# Redis can do (7.0: no WAITAOF, so not waitaof).
ACK_MODES = pytest.mark.parametrize("durable_ack", ["off", "replica"])


def assert_exact(result: Count, stack: Stack | None = None, fleet: Fleet | None = None) -> None:
    where = whereabouts(stack, fleet) if stack and fleet and not result.exact else ""
    assert result.exact, f"{result} {where}"
    assert result.acknowledged == result.sent, result


def exact_count(fault: str, stack: Stack, fleet: Fleet, fault_at: float) -> Count:
    """Wait until every 200 of ``fleet`` is stored, print the fault table's row (the 503s
    from ``fault_at`` on), and assert the count is exact."""
    result = wait_for_count(fleet, stack.pg.url, timeout_s=60)
    fault_table_line(fault, stack, fleet.refused_at, fault_at, result.lost, result.duplicates)
    assert_exact(result, stack, fleet)
    return result


def whereabouts(stack: Stack, fleet: Fleet) -> str:
    """Where RQ holds the acknowledged permits that are not stored (for the failure message)."""
    stored = {ref for _, ref in stored_rows(stack.pg.url, fleet.prefix)}
    missing = set(fleet.acked.values()) - stored
    redis = stack.redis.client()
    queue = queue_of(stack)
    places = {
        "queued": set(queue.get_job_ids()),
        "intermediate": {i.decode() for i in redis.lrange(queue.key + ":intermediate", 0, -1)},
        "started": set(StartedJobRegistry(queue=queue).get_job_ids(cleanup=False)),
        "scheduled": set(queue.scheduled_job_registry.get_job_ids()),
        "failed": set(FailedJobRegistry(queue=queue).get_job_ids()),
        "finished": set(queue.finished_job_registry.get_job_ids()),
    }
    found: dict[str, str] = {}
    for key in redis.scan_iter("rq:job:*"):
        job_id = key.decode().removeprefix("rq:job:")
        if ":" in job_id:
            continue
        with contextlib.suppress(Exception):
            job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
            for permit in job.kwargs.get("permits", []):
                if permit["reference_id"] in missing:
                    place = [name for name, ids in places.items() if job_id in ids]
                    found[permit["reference_id"]] = f"{job_id}:{place}:{job.get_status()}"
    return f"missing={len(missing)} in_jobs={found} not_in_any_job={len(missing - found.keys())}"


def assert_token_kept_secret(stack: Stack) -> None:
    """Never in a log line (debug level), never in clear in the database or in Redis."""
    assert stack.token not in stack.logs()
    with psycopg.connect(stack.pg.dsn()) as connection:
        dump = str(connection.execute("SELECT * FROM api_clients").fetchall())
    assert stack.token not in dump
    redis = stack.redis.client()
    for key in redis.scan_iter(count=1000):
        kind = redis.type(key).decode()
        value: object = b""
        if kind == "string":
            value = redis.get(key)
        elif kind == "hash":
            value = redis.hgetall(key)
        elif kind == "list":
            value = redis.lrange(key, 0, -1)
        assert stack.token.encode() not in key + str(value).encode(), key


def queue_of(stack: Stack) -> Queue:
    return Queue("permits", connection=stack.redis.client())


@ACK_MODES
def test_worker_sigkilled_mid_batch_has_its_batch_rerun(stack: Stack) -> None:
    serve = stack.serve()
    worker_a = stack.worker("worker-a")
    wait_for_port(stack.port)
    # Worker A past its start-up first: the start-up's counts read the permits table, and
    # under the lock below it would never reach the queue (seen once in CI).
    queue = queue_of(stack)
    wait_until(lambda: Worker.count(queue=queue) >= 1, 30, "worker A working the queue")
    # Hold the permits table so that worker A is stuck inside its batch when it is killed.
    with psycopg.connect(stack.pg.dsn()) as blocker:
        blocker.execute("LOCK TABLE permits IN ACCESS EXCLUSIVE MODE")
        fleet = Fleet(stack.base_url, stack.token, count=150, prefix="kill", deadline_s=30)
        fleet.start()
        fleet.join(40)
        started = StartedJobRegistry(queue=queue_of(stack))
        wait_until(lambda: started.count >= 1, 15, "worker A has a batch in hand")
        worker_a.kill()
        killed_at = time.monotonic()
        blocker.rollback()
    stack.worker("worker-b")
    exact_count("worker SIGKILL", stack, fleet, fault_at=0.0)
    recovered_s = time.monotonic() - killed_at
    # ABANDONED_JOB_S=4 here: seconds, not RQ's default of up to ~16 minutes.
    assert recovered_s < 30, recovered_s
    assert FailedJobRegistry(queue=queue_of(stack)).count == 0
    assert fleet.mismatched_resends == 0
    assert serve.alive
    assert_token_kept_secret(stack)


def test_worker_sigkilled_mid_set_has_every_batch_of_the_set_rerun(stack: Stack) -> None:
    """A worker runs the batches waiting in the queue as one set (WORKER_JOBS_PER_TXN):
    killed inside the set's transaction, every batch of it is re-run and stored once."""
    stack.serve()
    worker_a = stack.worker("worker-a")
    wait_for_port(stack.port)
    queue = queue_of(stack)
    wait_until(lambda: Worker.count(queue=queue) >= 1, 30, "worker A working the queue")
    worker_a.signal(signal.SIGSTOP)  # batches queue up behind it: its next take is a set
    try:
        fleet = Fleet(stack.base_url, stack.token, count=150, prefix="set", deadline_s=30)
        fleet.start()
        fleet.join(40)
        queued = queue.count
        with psycopg.connect(stack.pg.dsn()) as blocker:
            blocker.execute("LOCK TABLE permits IN ACCESS EXCLUSIVE MODE")
            worker_a.signal(signal.SIGCONT)
            started = StartedJobRegistry(queue=queue)
            wait_until(lambda: started.count >= 2, 15, "worker A has a set of batches in hand")
            time.sleep(0.5)  # the set is taken at once; let it reach the lock
            in_hand = started.count
            worker_a.kill()
            killed_at = time.monotonic()
            blocker.rollback()
    finally:
        worker_a.signal(signal.SIGCONT)
    stack.worker("worker-b")
    exact_count("worker SIGKILL mid-set", stack, fleet, fault_at=0.0)
    recovered_s = time.monotonic() - killed_at
    print(f"worker SIGKILL mid-set: {in_hand} batches in hand, {queued} were queued")
    # The set: up to WORKER_JOBS_PER_TXN (16) of the batches waiting.
    assert min(16, queued) <= in_hand <= 16, (in_hand, queued)
    assert recovered_s < 30, recovered_s
    assert FailedJobRegistry(queue=queue).count == 0
    assert fleet.mismatched_resends == 0


@ACK_MODES
def test_redis_killed_and_restarted_from_its_aof(stack: Stack) -> None:
    serve = stack.serve()
    worker = stack.worker()
    wait_for_port(stack.port)
    fleet = Fleet(stack.base_url, stack.token, count=800, prefix="redis", deadline_s=60)
    fleet.start()
    wait_until(lambda: fleet.acked_count >= 300, 30, "first permits acknowledged")
    stack.redis.kill()  # SIGKILL: whatever the AOF holds is all that survives
    killed_at = time.monotonic()
    down_at = fleet.outcomes["503"]
    time.sleep(3)
    stack.redis.start()
    fleet.join(70)
    exact_count(
        "Redis SIGKILL, restarted from its AOF (3 s down)", stack, fleet, fault_at=killed_at
    )
    # While Redis was away the receiver refused quickly, then recovered by itself.
    assert fleet.outcomes["503"] > down_at, fleet.outcomes
    assert fleet.slow_refusals == [], fleet.slow_refusals
    assert not any(status.startswith("5") and status != "503" for status in fleet.outcomes)
    assert fleet.mismatched_resends == 0
    assert serve.alive and worker.alive
    assert_token_kept_secret(stack)


@ACK_MODES
def test_postgres_stopped_ten_seconds(stack: Stack) -> None:
    serve = stack.serve()
    worker = stack.worker()
    wait_for_port(stack.port)
    fleet = Fleet(stack.base_url, stack.token, count=600, prefix="pg", deadline_s=60)
    fleet.start()
    wait_until(lambda: fleet.acked_count >= 300, 30, "first permits acknowledged")
    stack.pg.stop("immediate")  # a crash: recovery on start
    stopped_at = time.monotonic()
    try:
        time.sleep(10)
    finally:
        stack.pg.start()
    fleet.join(70)
    exact_count("PostgreSQL stopped (immediate) 10 s", stack, fleet, fault_at=stopped_at)
    # The receiver does not need the database: no permit was refused meanwhile.
    assert set(fleet.outcomes) == {"200"}, fleet.outcomes
    assert FailedJobRegistry(queue=queue_of(stack)).count == 0
    assert serve.alive and worker.alive
    assert "database_unavailable_retrying" in (stack.log_dir / "worker.log").read_text()
    assert_token_kept_secret(stack)


DEDUP_READ_TIMEOUT_S = Settings().dedup_read_timeout_s  # the stack runs with the default


@ACK_MODES
def test_postgres_restart_kills_every_pooled_connection_under_load(stack: Stack) -> None:
    """PostgreSQL restarts under load: every connection of the receiver's reads and of the
    workers is dead at once, and both workers are inside a batch's transaction.

    A table lock holds the workers' inserts, so the restart lands mid-transaction: those
    batches must be re-run, and stored once. The receiver's de-dup reads (a read per
    micro-batch of new permits) find their connections dead and fall back to the new id
    at once, so pushes keep getting 200 in well under DEDUP_READ_TIMEOUT_S.
    """
    serve = stack.serve()
    workers = [stack.worker("worker-a"), stack.worker("worker-b")]
    wait_for_port(stack.port)
    fleet = Fleet(stack.base_url, stack.token, count=1500, prefix="pgre", deadline_s=60)
    fleet.start()
    wait_until(lambda: fleet.acked_count >= 300, 30, "first permits acknowledged")
    locker = psycopg.connect(stack.pg.dsn())
    locker.execute("LOCK TABLE permits IN EXCLUSIVE MODE")
    wait_until(lambda: blocked_on_locks(stack) >= 2, 20, "both workers waiting mid-transaction")
    stack.pg.stop("immediate")  # every connection dies, the locker's too
    stopped_at = time.monotonic()
    stack.pg.start()
    locker.close()
    fleet.join(70)
    result = exact_count(
        "PostgreSQL restarted under load, workers mid-transaction",
        stack,
        fleet,
        fault_at=stopped_at,
    )
    print(
        f"\nPostgreSQL restart under load: {result.stored} stored once of {result.acknowledged}"
        f" acknowledged; slowest 200 {fleet.slowest_ok_s * 1000:.0f} ms"
    )
    assert set(fleet.outcomes) == {"200"}, fleet.outcomes
    assert fleet.slowest_ok_s < DEDUP_READ_TIMEOUT_S, fleet.slowest_ok_s
    assert FailedJobRegistry(queue=queue_of(stack)).count == 0
    assert serve.alive and all(worker.alive for worker in workers)
    worker_logs = "".join(
        (stack.log_dir / f"{w}.log").read_text() for w in ("worker-a", "worker-b")
    )
    assert worker_logs.count("database_unavailable_retrying") >= 2  # both batches re-run
    assert "first_id_lookup_failed" in (stack.log_dir / "serve.log").read_text()


def blocked_on_locks(stack: Stack) -> int:
    with psycopg.connect(stack.pg.dsn()) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_receiver_sigterm_under_load_finishes_in_flight_requests(stack: Stack) -> None:
    # A long batch window: at the SIGTERM, requests are waiting in the batcher.
    first = stack.serve("serve-a", BATCH_WINDOW_MS="300")
    stack.worker()
    wait_for_port(stack.port)
    fleet = Fleet(stack.base_url, stack.token, count=800, prefix="term", concurrency=40)
    fleet.start()
    wait_until(lambda: fleet.acked_count >= 200, 30, "first permits acknowledged")
    first.signal(signal.SIGTERM)
    sigterm_at = time.monotonic()
    assert first.process.wait(timeout=35) == 0
    answered_after_sigterm = sum(1 for t in fleet.ok_after if t > sigterm_at)
    stack.serve("serve-b")  # meters keep resending; a new receiver takes over
    fleet.join(90)
    result = wait_for_count(fleet, stack.pg.url, timeout_s=60)
    assert_exact(result, stack, fleet)
    # The requests waiting in the batch when the SIGTERM came were answered, not dropped.
    assert answered_after_sigterm > 0
    assert not any(status.startswith("5") for status in fleet.outcomes), fleet.outcomes
    assert_token_kept_secret(stack)


def test_worker_sigterm_finishes_its_batch(stack: Stack) -> None:
    stack.serve()
    worker = stack.worker()
    wait_for_port(stack.port)
    with psycopg.connect(stack.pg.dsn()) as blocker:
        blocker.execute("LOCK TABLE permits IN ACCESS EXCLUSIVE MODE")
        fleet = Fleet(stack.base_url, stack.token, count=50, prefix="wterm", deadline_s=20)
        fleet.start()
        fleet.join(30)
        started = StartedJobRegistry(queue=queue_of(stack))
        wait_until(lambda: started.count >= 1, 15, "the worker has a batch in hand")
        worker.signal(signal.SIGTERM)
        time.sleep(1)
        assert worker.alive  # warm shutdown: it waits for its batch
        blocker.rollback()
    assert worker.process.wait(timeout=20) == 0
    stored_by_then = wait_for_count(fleet, stack.pg.url, timeout_s=0).stored
    assert stored_by_then > 0  # the batch in hand was finished before the exit
    stack.worker("worker-2")  # the rest of the queue
    assert_exact(wait_for_count(fleet, stack.pg.url, timeout_s=30), stack, fleet)
    assert FailedJobRegistry(queue=queue_of(stack)).count == 0


def _call(
    stack: Stack, method: str, path: str, body: object = None
) -> tuple[int, dict[str, object]]:
    """One HTTP request to the receiver; (status, JSON body)."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
        stack.base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {stack.token}"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_resend_the_receiver_could_not_know_becomes_an_alias(stack: Stack) -> None:
    """Redis flushed AND the database stopped: the resend gets a new id; once the database is
    back the worker stores no second row and the new id names the same permit."""
    from harness.payloads import make_payload

    push = "/api/OC-TOMA/v1/permits/push"
    stack.serve()
    stack.worker()
    wait_for_port(stack.port)
    payload = make_payload(apiToken=stack.token, permitNo="alias-1")
    status, first = _call(stack, "POST", push, payload)
    assert status == 200, first
    wait_until(lambda: len(_permit_rows(stack)) == 1, 20, "P stored")
    stack.pg.stop("immediate")
    try:
        stack.redis.client().flushdb()
        # Pushes are accepted again once a worker has republished the tokens.
        wait_until(lambda: _call(stack, "POST", push, payload)[0] == 200, 20, "accepted again")
        status, second = _call(stack, "POST", push, payload)
        assert status == 200, second
    finally:
        stack.pg.start()
    first_id, second_id = str(first["reference_id"]), str(second["reference_id"])
    assert second_id != first_id  # nobody could know the first id
    wait_until(lambda: _aliases(stack).get(second_id) == first_id, 60, "alias recorded")
    assert [ref for ref, _ in _permit_rows(stack)] == [first_id]  # one row
    for reference_id in (first_id, second_id):
        status, body = _call(stack, "GET", f"/api/OC-TOMA/v1/permits/{reference_id}")
        assert status == 200, body
        assert body["permit_status"] in ("stored", "disconnected"), body
    update = {"apiToken": stack.token, "referenceID": second_id, "Amount": "20.00"}
    assert _call(stack, "POST", "/api/OC-TOMA/v1/permits/update", update)[0] == 200
    delete = {"apiToken": stack.token, "referenceID": first_id}
    assert _call(stack, "POST", "/api/OC-TOMA/v1/permits/delete", delete)[0] == 200

    def applied() -> bool:
        _, body = _call(stack, "GET", f"/api/OC-TOMA/v1/permits/{second_id}")
        return body.get("permit_status") == "deleted"

    wait_until(applied, 30, "update and delete applied")
    rows = _permit_rows(stack)
    assert len(rows) == 1 and rows[0][1] == "20.00", rows


@ACK_MODES
def test_redis_restarted_without_its_aof_stores_nothing_twice(stack: Stack) -> None:
    """Redis comes back EMPTY (its AOF gone: a new host, a failover to an empty replica).

    What is lost is exactly what was only in the queue: permits acknowledged while no
    worker ran. Everything stored before stays stored once, and resending it gets the
    first reference id (from the database, since Redis forgot it) and no second row.
    """
    stack.serve()
    worker = stack.worker()
    wait_for_port(stack.port)
    stored = Fleet(stack.base_url, stack.token, count=200, prefix="kept", deadline_s=30)
    stored.start()
    stored.join(40)
    assert_exact(wait_for_count(stored, stack.pg.url, timeout_s=30), stack, stored)
    assert worker.stop() == 0
    queued = Fleet(stack.base_url, stack.token, count=100, prefix="queued", deadline_s=30)
    queued.start()
    queued.join(40)
    assert len(queued.acked) == 100  # acknowledged: in Redis's queue, and nowhere else
    stack.redis.kill()
    shutil.rmtree(stack.redis.dir)  # the AOF with it
    stack.redis.dir.mkdir()
    stack.redis.start()
    stack.worker("worker-after")  # republishes the tokens, so pushes are accepted again
    resent = Fleet(stack.base_url, stack.token, count=200, prefix="kept", deadline_s=60)
    resent.start()
    resent.join(70)
    assert resent.acked == stored.acked  # every resend got its FIRST reference id
    after = wait_for_count(resent, stack.pg.url, timeout_s=30)
    assert after.exact and after.duplicates == 0, after
    lost = count(queued, stack.pg.url)
    fault_table_line(
        "Redis restarted without its AOF (100 acknowledged, queued, no worker)",
        stack,
        queued.refused_at + resent.refused_at,
        0.0,
        lost.lost,
        lost.duplicates + after.duplicates,
    )
    # The permits that were only in the lost queue: documented in docs/reliability.md.
    # With DURABLE_ACK=replica too: the replica follows its primary, empty.
    assert (lost.stored, lost.lost, lost.duplicates) == (0, 100, 0), lost


def _permit_rows(stack: Stack) -> list[tuple[str, str]]:
    with psycopg.connect(stack.pg.dsn()) as connection:
        found = connection.execute("SELECT reference_id, amount::text FROM permits").fetchall()
    return [(str(ref), str(amount)) for ref, amount in found]


def _aliases(stack: Stack) -> dict[str, str]:
    with psycopg.connect(stack.pg.dsn()) as connection:
        found = connection.execute(
            "SELECT reference_id, permit_reference_id FROM permit_aliases"
        ).fetchall()
    return {str(alias): str(permit) for alias, permit in found}


def all_stored(numbers: set[str], database_url: str, prefix: str) -> bool:
    return numbers <= {no for no, _ in stored_rows(database_url, prefix)}


LOAD_S = 20.0  # the fleets' run, the flush a few seconds in


@ACK_MODES
def test_flushall_under_load_refuses_pushes_for_at_most_two_seconds(stack: Stack) -> None:
    """Redis loses everything (FLUSHALL) while 2 receivers and 2 workers run under load.

    The receivers keep the token set they read, the workers see the loss within
    LOSS_CHECK_S and rebuild it, and re-register with RQ: no operator acts. TOKEN_PUBLISH_S
    is the default here, so the old periodic republish cannot be what brings it back.
    """
    # The cache expires a second after the flush: a receiver that took the missing set for
    # an empty one would refuse every push from then until the 30 s republish.
    slow_publish = {"TOKEN_PUBLISH_S": "30", "TOKEN_CACHE_S": "1"}
    second_port = free_port()
    stack.serve("serve-a", **slow_publish)
    serve_b = Proc(
        "serve-b",
        ["serve", "--port", str(second_port)],
        stack.env(**slow_publish),
        stack.log_dir,
    )
    stack.procs.append(serve_b)
    stack.worker("worker-a", **slow_publish)
    stack.worker("worker-b", **slow_publish)
    wait_for_port(stack.port)
    wait_for_port(second_port)
    queue = queue_of(stack)
    wait_until(lambda: Worker.count(queue=queue) == 2, 30, "both workers registered")
    fleets = [
        # Bounded by time, not count: the load goes on well past the flush on any box.
        Fleet(url, stack.token, count=50_000, prefix=f"flush{n}", deadline_s=LOAD_S)
        for n, url in enumerate([stack.base_url, f"http://127.0.0.1:{second_port}"])
    ]
    for fleet in fleets:
        fleet.start()
    wait_until(lambda: all(f.acked_count >= 200 for f in fleets), 30, "pushes acknowledged")
    redis = stack.redis.client()
    redis.flushall()
    # Once FLUSHALL has returned: a push sent before that may have been written just
    # before the server ran it (measured: sent 6-7 ms after the call began, then lost).
    flushed_at = time.monotonic()
    for fleet in fleets:
        fleet.join(LOAD_S + 30)
    refused = sorted(t for f in fleets for t in f.refused_at if t >= flushed_at)
    refused_s = refused[-1] - refused[0] if refused else 0.0
    print(f"\nFLUSHALL under load: {len(refused)} pushes refused (503) over {refused_s:.2f} s")
    assert refused_s <= 2.0, refused_s
    last_ok_s = max(t for f in fleets for t in f.ok_after) - flushed_at
    assert last_ok_s > 5, f"the last 200 came {last_ok_s:.1f} s after the flush: too soon to tell"
    assert not any(s.startswith("5") and s != "503" for f in fleets for s in f.outcomes)
    # Every 200 given after the flush is stored, once, under the id it was given.
    lost_in_all, doubled_in_all = 0, 0
    for fleet in fleets:
        # By the send of the request that got the 200: one sent before the flush may have
        # been written to the queue the flush then emptied.
        after = {no for no, sent in fleet.acked_sent_at.items() if sent > flushed_at}
        assert after, "no 200 after the flush"
        wait_until(
            partial(all_stored, after, stack.pg.url, fleet.prefix),
            60,
            f"{fleet.prefix}: every permit acknowledged after the flush stored",
        )
        rows = stored_rows(stack.pg.url, fleet.prefix)
        per_permit = Counter(no for no, _ in rows)
        stored = dict(rows)
        assert {no: per_permit[no] for no in after if per_permit[no] != 1} == {}
        assert [no for no in after if stored[no] != fleet.acked[no]] == []
        lost_before = sum(1 for no in fleet.acked.keys() - after if no not in stored)
        lost_in_all += lost_before
        doubled_in_all += sum(n - 1 for n in per_permit.values())
        print(
            f"{fleet.prefix}: {len(after)} acknowledged after the flush, all stored once; "
            f"{lost_before} acknowledged before it were only in the flushed queue"
        )
    fault_table_line(
        "FLUSHALL under load",
        stack,
        [t for f in fleets for t in f.refused_at],
        flushed_at,
        lost_in_all,
        doubled_in_all,
    )
    # No operator: the state is back, the workers are registered and working.
    assert redis.exists(TOKENS_LOADED_KEY)
    wait_until(lambda: Worker.count(queue=queue) == 2, 10, "workers registered again")
    assert all(proc.alive for proc in stack.procs)
    assert "redis_data_lost" in stack.logs()


@pytest.mark.parametrize("gone", ["killed", "hung"])
def test_a_worker_whose_redis_is_gone_stops_soon_after_sigterm(stack: Stack, gone: str) -> None:
    """`docker stop` and a Kubernetes roll send SIGTERM; a worker must not outwait them.

    RQ's stop writes to Redis (the worker's death, the scheduler's lock): on a Redis that
    refuses (killed, or a Sentinel with no primary) that failed and the runner took it for
    a lost Redis and waited for it; on a hung one (SIGSTOP) it blocked. Neither ended.
    """
    worker = stack.worker()
    queue = queue_of(stack)
    wait_until(lambda: Worker.count(queue=queue) == 1, 30, "the worker registered")
    # Idle in its loop: RQ's signal handlers are in place (they come after its start-up).
    wait_until(
        lambda: [w.get_state() for w in Worker.all(queue=queue)] == ["idle"],
        30,
        "the worker idle, waiting for jobs",
    )
    redis_process = stack.redis.process
    assert redis_process is not None
    if gone == "killed":
        stack.redis.kill()
    else:
        redis_process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2)  # the worker is now retrying, or blocked on the hung server
        started = time.monotonic()
        status = worker.stop(timeout_s=30)
        took_s = time.monotonic() - started
    finally:
        if gone == "hung":
            redis_process.send_signal(signal.SIGCONT)
    print(f"\nworker, Redis {gone}: exited {status} {took_s:.1f} s after SIGTERM")
    assert status == 0
    assert took_s < IDLE_STOP_DEADLINE_S + 2, took_s
