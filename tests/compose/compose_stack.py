"""`make test-compose`: docker-compose.yml started for real, loaded and faulted.

Not collected by `make test` (the file name does not match `test_*.py`); the Makefile
names it. It needs a Docker engine and `docker compose`: without them it skips, saying
why, and with CI=true it fails instead. If no engine answers and dockerd is installed
(and this is root), it starts one (`dockerd --bridge=none --iptables=false`, log in
$PERMIT_PUSH_CACHE/dockerd.log) and stops it at the end.

Every container runs on the host's network, bound to 127.0.0.1 on ports picked free
here, so all the traffic below stays on 127.0.0.1. The steps run in order; each needs
the ones before it, and a step after a failed one fails at once, naming it. The stack
is torn down (`down -v`) at the end, also after a failure (its logs are printed then).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import rq
import yaml
from redis import Redis
from redis import exceptions as redis_exceptions
from rq.registry import FailedJobRegistry, StartedJobRegistry

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPOSE_FILES = [ROOT / "docker-compose.yml", HERE / "docker-compose.test.yml"]
PROJECT = "permit-push-compose-test"
CACHE = Path(os.environ.get("PERMIT_PUSH_CACHE", "/var/cache/permit-push"))
CI = os.environ.get("CI") == "true"
PUSH_PATH = "/api/OC-TOMA/v1/permits/push"
WORKERS = 3
# The services that must turn healthy (migrate runs once and exits; grafana is left out).
HEALTHY = ["redis", "postgres", "ingest", "worker", "rq-dashboard", "prometheus"]
# The `ha` profile's services and the name its Sentinels watch the primary under.
HA_SERVICES = ["redis-replica-1", "redis-replica-2", "sentinel-1", "sentinel-2", "sentinel-3"]
HA_SERVICE_NAME = "permit-push"
# A killed worker's batch is re-run after ABANDONED_JOB_S + MAINTENANCE_INTERVAL_S
# (30 + 10 s by default), so stored-in-time allows well over that.
STORED_TIMEOUT_S = 180.0
# docker-compose.yml has no default passwords: the run gets fresh ones.
SECRETS = ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


def run(
    args: list[str], *, timeout: float, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"`{' '.join(args)}` exited {result.returncode}:\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-3000:]}",
            pytrace=False,
        )
    return result


def missing(reason: str) -> None:
    if CI:
        pytest.fail(f"{reason} (CI=true: the compose test must run)", pytrace=False)
    pytest.skip(reason)


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


def engine_answers() -> bool:
    try:
        return run(["docker", "info"], timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module")
def engine() -> Iterator[None]:
    """A Docker engine and compose v2; started here (and stopped after) if need be."""
    if shutil.which("docker") is None:
        missing("the docker CLI is not on PATH (apt-get install docker.io)")
    if run(["docker", "compose", "version"], timeout=20, check=False).returncode != 0:
        missing("`docker compose` (v2) is not installed (tests/compose/install.sh installs it)")
    if engine_answers():
        yield
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        missing("no Docker engine answers, and dockerd cannot be started here (needs root)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "dockerd.log", "ab") as log:
        dockerd = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not engine_answers():
            if dockerd.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dockerd did not come up; see {CACHE / 'dockerd.log'}")
            time.sleep(1)
        print(f"\nstarted dockerd (pid {dockerd.pid})")
        yield
    finally:
        dockerd.terminate()
        try:
            dockerd.wait(timeout=60)
        except subprocess.TimeoutExpired:
            dockerd.kill()
            dockerd.wait(timeout=30)


@dataclass
class Stack:
    env: dict[str, str]
    ports: dict[str, int]
    token: str = ""
    # permitNo -> reference_id of every push answered 200, over all steps.
    accepted: dict[str, str] = field(default_factory=dict)
    failed_step: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
        return run(
            ["docker", "compose", "-p", PROJECT, *files, *args],
            timeout=timeout,
            env=self.env,
            check=check,
        )

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def redis(self) -> Redis:
        return Redis(
            port=self.ports["redis"], password=self.env["REDIS_PASSWORD"], socket_timeout=5
        )

    def database(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.ports["postgres"],
            user="permit_push",
            password=self.env["POSTGRES_PASSWORD"],
            dbname="permit_push",
            connect_timeout=5,
            autocommit=True,
        )

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service).stdout
        return out.split()


def prometheus_config(ingest_port: int, prometheus_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with 127.0.0.1 for Docker's DNS names
    (``ingest_port``: the receiver's probes port, where /metrics is)."""
    config: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    )
    # The repository's directory is mounted at /etc/prometheus as in docker-compose.yml.
    config["rule_files"] = [f"/etc/prometheus/{path}" for path in config["rule_files"]]
    targets = {"ingest": ingest_port, "prometheus": prometheus_port}
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
    return config


@pytest.fixture(scope="module")
def stack(
    engine: None, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    names = ["redis", "postgres", "ingest", "probes", "rq-dashboard", "prometheus"]
    names += ["replica1", "replica2", "sentinel1", "sentinel2", "sentinel3"]  # profile ha
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    config_dir = tmp_path_factory.mktemp("prometheus")
    config_dir.chmod(0o755)
    (config_dir / "prometheus.yml").write_text(
        yaml.safe_dump(prometheus_config(ports["probes"], ports["prometheus"])), encoding="utf-8"
    )
    (config_dir / "prometheus.yml").chmod(0o644)
    env = {
        **os.environ,
        "PP_REDIS_PORT": str(ports["redis"]),
        "PP_POSTGRES_PORT": str(ports["postgres"]),
        "PP_INGEST_PORT": str(ports["ingest"]),
        "PP_PROBES_PORT": str(ports["probes"]),
        "PP_DASHBOARD_PORT": str(ports["rq-dashboard"]),
        "PP_PROMETHEUS_PORT": str(ports["prometheus"]),
        "PP_PROMETHEUS_CONFIG_DIR": str(config_dir),
        "PP_REPLICA1_PORT": str(ports["replica1"]),
        "PP_REPLICA2_PORT": str(ports["replica2"]),
        "PP_SENTINEL1_PORT": str(ports["sentinel1"]),
        "PP_SENTINEL2_PORT": str(ports["sentinel2"]),
        "PP_SENTINEL3_PORT": str(ports["sentinel3"]),
        **{name: secrets.token_hex(16) for name in SECRETS},
    }
    stack = Stack(env=env, ports=ports)
    print(f"\nports: {ports}")
    # A leftover of an interrupted run would hold the same names and volumes.
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=120)
    try:
        yield stack
    finally:
        if stack.failed_step:
            ha = HA_SERVICES if stack.env.get("COMPOSE_PROFILES") == "ha" else []
            for service in HEALTHY + ha:
                logs = stack.compose(
                    "logs", "--no-color", "--tail", "15", service, timeout=60, check=False
                )
                print(f"\n--- {service}: last log lines ---\n{logs.stdout[-4000:]}")
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "60", timeout=300, check=False)
        for name, seconds in stack.seconds.items():
            print(f"{name}: {seconds:.1f} s")


@pytest.fixture
def step(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Each test is a step of one run: a step after a failed one fails at once."""
    if stack.failed_step:
        pytest.fail(f"an earlier step failed: {stack.failed_step}", pytrace=False)
    failed_before = request.session.testsfailed
    started = time.monotonic()
    yield stack
    stack.seconds[request.node.name] = time.monotonic() - started
    # The call's report is logged (and counted) before this teardown runs.
    if request.session.testsfailed > failed_before:
        stack.failed_step = request.node.name


# --- helpers for the steps ------------------------------------------------------------


def wait_until(what: str, check: Any, timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout:.0f} s (last: {last!r})", pytrace=False)


def health(stack: Stack) -> dict[str, str]:
    """Container name -> its health status (or state, for one without a healthcheck)."""
    ids = stack.compose("ps", "-q").stdout.split()
    if not ids:
        return {}
    out = run(
        [
            "docker",
            "inspect",
            "-f",
            "{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}"
            "{{.State.Status}}{{end}}",
            *ids,
        ],
        timeout=30,
    ).stdout
    return dict(line.lstrip("/").split(" ", 1) for line in out.splitlines())


def all_healthy(stack: Stack, workers: int) -> dict[str, str] | None:
    states = health(stack)
    wanted = [f"{PROJECT}-{name}-1" for name in HEALTHY if name != "worker"]
    wanted += [f"{PROJECT}-worker-{i}" for i in range(1, workers + 1)]
    ok = all(states.get(name) == "healthy" for name in wanted)
    return states if ok else None


def http_status(url: str) -> int:
    async def get() -> int:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(url) as response,
        ):
            return response.status

    return asyncio.run(get())


def make_permit(token: str, permit_no: str) -> dict[str, str]:
    return {
        "apiToken": token,
        "Amount": "14.50",
        "CurrencyID": "CAD",
        "LicencePlate": "PL8RDR",
        "zone": "Lot 4",
        "permitNo": permit_no,
        "startTime": "2018-07-02T09:00:00",
        "endTime": "2018-07-02T09:30:00",
    }


@dataclass
class LoadResult:
    accepted: dict[str, str] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)  # final status -> count
    retries: int = 0


async def push_all(
    url: str,
    token: str,
    permit_nos: list[str],
    *,
    concurrency: int = 16,
    on_progress: Any = None,
    max_tries: int = 30,
    deadline_s: float = 240,
) -> LoadResult:
    """POST each permit once; 503/429 and connection errors are retried (as meters do),
    each permit at most max_tries times and the whole load within deadline_s."""
    result = LoadResult()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for permit_no in permit_nos:
        queue.put_nowait(permit_no)
    end = time.monotonic() + deadline_s
    timeout = aiohttp.ClientTimeout(total=10)

    async def one(session: aiohttp.ClientSession, permit_no: str) -> None:
        for _ in range(max_tries):
            if time.monotonic() > end:
                break
            try:
                async with session.post(url, json=make_permit(token, permit_no)) as response:
                    body = await response.json(content_type=None)
                    if response.status == 200 and body.get("status") == "success":
                        result.accepted[permit_no] = body["reference_id"]
                        if on_progress is not None:
                            await on_progress(len(result.accepted))
                        return
                    if response.status not in (429, 503):
                        result.refused[response.status] = result.refused.get(response.status, 0) + 1
                        return
                    delay = float(response.headers.get("Retry-After", "1"))
            except (TimeoutError, aiohttp.ClientError):
                delay = 0.5
            result.retries += 1
            await asyncio.sleep(min(delay, 2.0))
        result.refused[0] = result.refused.get(0, 0) + 1  # gave up

    async def pusher(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            await one(session, queue.get_nowait())

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(pusher(session) for _ in range(concurrency)))
    return result


def stored(stack: Stack) -> tuple[int, int, set[str]]:
    """(rows, distinct reference ids, the reference ids) in `permits`."""
    with stack.database() as connection:
        rows, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT reference_id) FROM permits"
        ).fetchone() or (0, 0)
        refs = {ref for (ref,) in connection.execute("SELECT reference_id FROM permits")}
    return rows, distinct, refs


def assert_each_stored_once(stack: Stack, accepted: dict[str, str]) -> None:
    """Wait until every accepted permit is in PostgreSQL; then each must be there once
    and nothing else may be (only this test pushes to this stack)."""
    stack.accepted.update(accepted)
    expected = set(stack.accepted.values())
    assert len(expected) == len(stack.accepted), "two permits got one reference_id"

    def all_there() -> bool:
        return expected <= stored(stack)[2]

    try:
        wait_until(f"all {len(expected)} accepted permits stored", all_there, STORED_TIMEOUT_S)
    finally:
        rows, distinct, refs = stored(stack)
        print(
            f"permits: {rows} rows, {distinct} distinct; accepted {len(expected)};"
            f" missing {len(expected - refs)}"
        )
    time.sleep(2)  # a late duplicate would land now
    rows, distinct, refs = stored(stack)
    assert refs == expected, f"stored but never accepted: {len(refs - expected)}"
    assert rows == distinct == len(expected)


def permit_numbers(prefix: str, count: int) -> list[str]:
    run_id = uuid.uuid4().hex[:8]
    return [f"{prefix}-{run_id}-{i:05d}" for i in range(count)]


def queue_figures(stack: Stack) -> dict[str, int]:
    connection = stack.redis()
    queue = rq.Queue("permits", connection=connection)
    return {
        "queued": queue.count,
        "started": StartedJobRegistry(queue=queue).count,
        "failed": FailedJobRegistry(queue=queue).count,
    }


# --- the steps ------------------------------------------------------------------------


def test_1_images_build(step: Stack) -> None:
    started = time.monotonic()
    run([str(HERE / "images.sh")], timeout=1200)
    step.seconds["stand-in images"] = time.monotonic() - started
    started = time.monotonic()
    # migrate, ingest and worker share permit-push:local: building it once (through
    # migrate) spares two identical builds, each of which leaves an untagged image behind.
    step.compose("build", "migrate", "rq-dashboard", timeout=900)
    step.seconds["compose build"] = time.monotonic() - started
    out = run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"], timeout=30
    ).stdout
    print("\n" + out)
    for image in ("permit-push:local", "permit-push-rq-dashboard:local"):
        assert f"\n{image} " in f"\n{out}", image


def test_2_migrate_then_three_workers(step: Stack) -> None:
    # No default passwords: without one of them compose refuses to start, naming it.
    for name in SECRETS:
        env = {key: value for key, value in step.env.items() if key != name}
        files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
        refused = run(
            ["docker", "compose", "-p", PROJECT, *files, "up", "--no-start"],
            timeout=60,
            env=env,
            check=False,
        )
        assert refused.returncode != 0, name
        assert f"set {name}" in refused.stderr, refused.stderr
    step.compose("up", "-d", "--pull", "never", "--wait", "postgres", timeout=180)
    step.compose("run", "--rm", "--no-deps", "migrate", timeout=180)
    step.compose("up", "-d", "--pull", "never", "--scale", f"worker={WORKERS}", timeout=300)
    wait_until("every service healthy", lambda: all_healthy(step, WORKERS), 180, 2)
    # Host networking only: no network of this project, every container on `host`.
    networks = run(
        [
            "docker",
            "network",
            "ls",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
        ],
        timeout=30,
    ).stdout.split()
    assert networks == []
    ids = step.compose("ps", "-q").stdout.split()
    modes = run(
        ["docker", "inspect", "-f", "{{.HostConfig.NetworkMode}}", *ids], timeout=30
    ).stdout.split()
    assert set(modes) == {"host"}, modes
    assert len(step.containers("worker")) == WORKERS
    workers = wait_until(
        "three RQ workers registered",
        lambda: len(rq.Worker.all(connection=step.redis())) == WORKERS,
        60,
    )
    assert workers
    # Redis requires its password, also on the host network; the receiver's probes are on
    # their own port only.
    with pytest.raises(redis_exceptions.AuthenticationError):
        Redis(port=step.ports["redis"], socket_timeout=5).ping()
    for path, main_status in (("/readyz", 404), ("/metrics", 404), ("/healthz", 200)):
        assert http_status(step.url("ingest", path)) == main_status, path
        assert http_status(step.url("probes", path)) == 200, path
    # The running Redis keeps every job, as docker-compose.yml asks.
    config = step.redis().config_get("*")
    assert (config["appendonly"], config["appendfsync"], config["maxmemory-policy"]) == (
        "yes",
        "always",
        "noeviction",
    )


def test_3_token_from_the_cli_in_the_image(step: Stack) -> None:
    out = step.compose(
        "run",
        "--rm",
        "--no-deps",
        "migrate",
        "tokens",
        "create",
        "--name",
        "compose-test",
        timeout=120,
    ).stdout
    step.token = out.strip().splitlines()[-1].strip()
    assert len(step.token) >= 20, out
    url = step.url("ingest", PUSH_PATH)

    # The receiver picks the new token up within TOKEN_CACHE_S (5 s): 401 until then.
    async def first() -> int:
        permit_no = f"first-{uuid.uuid4().hex[:8]}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=make_permit(step.token, permit_no)) as response,
        ):
            if response.status == 200:
                step.accepted[permit_no] = (await response.json())["reference_id"]
            return response.status

    wait_until("the new token accepted", lambda: asyncio.run(first()) == 200, 30)


def test_4_two_thousand_permits_stored_once(step: Stack) -> None:
    numbers = permit_numbers("load", 2000)
    started = time.monotonic()
    result = asyncio.run(push_all(step.url("ingest", PUSH_PATH), step.token, numbers))
    print(
        f"\n2000 pushes in {time.monotonic() - started:.1f} s, {result.retries} retries,"
        f" refused {result.refused}"
    )
    assert len(result.accepted) == 2000, result.refused
    assert_each_stored_once(step, result.accepted)


def busy_worker_container(stack: Stack) -> tuple[str, str] | None:
    """(container id, worker name) of a worker busy with a batch, else None.

    Under host networking every container has the host's hostname, so a worker is traced
    to its container through its Redis connection: RQ names the connection after the
    worker, the connection's local port belongs to one process, and the process's cgroup
    names its container."""
    connection = stack.redis()
    busy = {w.name for w in rq.Worker.all(connection=connection) if w.get_state() == "busy"}
    # `addr` is the client's end of the connection, i.e. the worker's local port.
    ports = {
        int(client["addr"].rsplit(":", 1)[1]): client["name"]
        for client in connection.client_list()
        if client.get("name") in busy
    }
    if not ports:
        return None
    sockets = run(
        ["ss", "-tnpH", "state", "established", "dport", "=", f":{stack.ports['redis']}"],
        timeout=10,
    ).stdout
    containers = set(stack.containers("worker"))
    for line in sockets.splitlines():
        fields = line.split()
        local_port = int(fields[2].rsplit(":", 1)[1])
        if local_port not in ports or "pid=" not in line:
            continue
        pid = line.split("pid=", 1)[1].split(",", 1)[0]
        cgroup = Path(f"/proc/{pid}/cgroup").read_text(encoding="utf-8")
        for container in containers:
            if container[:12] in cgroup:
                full = run(["docker", "inspect", "-f", "{{.Id}}", container], timeout=10)
                return full.stdout.strip(), ports[local_port]
    return None


def test_5_worker_killed_under_load_loses_nothing(step: Stack) -> None:
    numbers = permit_numbers("kill", 3000)
    killed: dict[str, Any] = {}

    async def kill_at_half(done: int) -> None:
        if done < 1000 or killed:
            return
        killed["at"] = done
        found = None
        for _ in range(30):  # a batch takes milliseconds: look a few times
            found = await asyncio.to_thread(busy_worker_container, step)
            if found:
                break
            await asyncio.sleep(0.05)
        target = found[0] if found else step.containers("worker")[0]
        killed.update(container=target, busy=found is not None, queue=queue_figures(step))
        await asyncio.to_thread(run, ["docker", "kill", target], timeout=30)

    result = asyncio.run(
        push_all(step.url("ingest", PUSH_PATH), step.token, numbers, on_progress=kill_at_half)
    )
    print(f"\nkilled {killed}; refused {result.refused}")
    assert killed, "the load ended before the kill"
    assert killed["busy"], "no worker was busy with a batch when killed"
    assert len(result.accepted) == len(numbers), result.refused
    assert_each_stored_once(step, result.accepted)
    state = run(
        [
            "docker",
            "inspect",
            "-f",
            "{{.State.Status}} restarts={{.RestartCount}}",
            killed["container"],
        ],
        timeout=30,
    ).stdout.strip()
    print(f"killed worker container now: {state}; queue {queue_figures(step)}")
    # Back to three workers for the next step (docker kill counts as a manual stop).
    step.compose(
        "up", "-d", "--pull", "never", "--no-recreate", "--scale", f"worker={WORKERS}", timeout=300
    )


def test_6_redis_restart_with_aof_loses_nothing(step: Stack) -> None:
    """Queued jobs survive `docker compose restart redis` (AOF): the workers are stopped
    first so that the jobs are in Redis, and not already stored, when it restarts."""
    step.compose("stop", "worker", timeout=400)
    numbers = permit_numbers("aof", 1000)
    result = asyncio.run(push_all(step.url("ingest", PUSH_PATH), step.token, numbers))
    assert len(result.accepted) == len(numbers), result.refused
    before = queue_figures(step)
    assert before["queued"] > 0, before
    step.compose("restart", "redis", timeout=120)
    wait_until(
        "Redis healthy again", lambda: health(step).get(f"{PROJECT}-redis-1") == "healthy", 60
    )
    after = queue_figures(step)
    print(f"\nqueue before restart {before}, after {after}")
    assert after["queued"] == before["queued"]
    # Pushes go on while the workers come back.
    step.compose("start", "worker", timeout=120)
    more = asyncio.run(
        push_all(step.url("ingest", PUSH_PATH), step.token, permit_numbers("aof-after", 200))
    )
    assert len(more.accepted) == 200, more.refused
    assert_each_stored_once(step, {**result.accepted, **more.accepted})


def test_7_dashboards_answer_and_prometheus_scrapes_the_receiver(step: Stack) -> None:
    async def get_json(url: str) -> Any:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(url) as response,
        ):
            assert response.status == 200, url
            return await response.json(content_type=None)

    queues = asyncio.run(get_json(step.url("rq-dashboard", "/0/data/queues.json")))
    assert "permits" in {queue["name"] for queue in queues["queues"]}, queues
    # Not /0/data/workers.json: rq-dashboard 0.9 reads each worker's current job with
    # pickle whatever RQ_DASHBOARD_JSON_SERIALIZER says, so it fails (500) while any
    # worker holds a job (docs/running.md, "Dashboards and alerts").

    def receiver_up() -> list[dict[str, Any]] | None:
        targets = asyncio.run(get_json(step.url("prometheus", "/api/v1/targets")))
        active = targets["data"]["activeTargets"]
        ingest = [t for t in active if t["labels"]["job"] == "ingest"]
        return ingest if ingest and all(t["health"] == "up" for t in ingest) else None

    ingest = wait_until("Prometheus scraping the receiver", receiver_up, 60, 2)
    assert ingest[0]["labels"]["instance"] == f"127.0.0.1:{step.ports['probes']}"
    # And what it scraped is the receiver's own figures.
    query = step.url("prometheus", "/api/v1/query?query=permit_push_http_requests_total")
    wait_until(
        "the receiver's request counter in Prometheus",
        lambda: asyncio.run(get_json(query))["data"]["result"],
        60,
        2,
    )


def sentinel_view(stack: Stack) -> dict[str, Any]:
    """What the first Sentinel knows of the primary (its port, replicas, other Sentinels)."""
    sentinel = Redis(port=stack.ports["sentinel1"], socket_timeout=5)
    return dict(sentinel.sentinel_master(HA_SERVICE_NAME))  # type: ignore[no-untyped-call]


def test_8_ha_profile_primary_killed_under_load_loses_no_200(step: Stack) -> None:
    """`--profile ha` with the services pointed at the Sentinels and DURABLE_ACK=replica:
    the primary's container is `docker kill`ed under load; a replica takes over, pushes
    get 200 again, and every permit that got a 200 is stored exactly once."""
    sentinels = ",".join(f"127.0.0.1:{step.ports[f'sentinel{i}']}" for i in (1, 2, 3))
    password = step.env["REDIS_PASSWORD"]
    step.env.update(
        COMPOSE_PROFILES="ha",  # every compose call from here on, the teardown's too
        PERMIT_PUSH_REDIS_URL=f"redis+sentinel://:{password}@{sentinels}/{HA_SERVICE_NAME}/0",
        DURABLE_ACK="replica",
    )
    step.compose("up", "-d", "--pull", "never", "--wait", *HA_SERVICES, timeout=180)
    wait_until(
        "the Sentinels see both replicas and each other",
        lambda: (
            (view := sentinel_view(step))["num-slaves"] == 2 and view["num-other-sentinels"] == 2
        ),
        60,
    )
    # The receiver and the workers are recreated with the Sentinel URL and the ack.
    step.compose("up", "-d", "--pull", "never", "--scale", f"worker={WORKERS}", timeout=300)
    wait_until("every service healthy", lambda: all_healthy(step, WORKERS), 180, 2)
    primary = step.containers("redis")[0]
    killed: dict[str, Any] = {}
    accepted_at: list[float] = []

    async def kill_at_a_third(done: int) -> None:
        accepted_at.append(time.monotonic())
        if done < 1000 or killed:
            return
        killed["at"] = time.monotonic()
        await asyncio.to_thread(run, ["docker", "kill", primary], timeout=30)

    numbers = permit_numbers("ha", 3000)
    started = time.monotonic()
    result = asyncio.run(
        push_all(step.url("ingest", PUSH_PATH), step.token, numbers, on_progress=kill_at_a_third)
    )
    view = sentinel_view(step)
    after = [t for t in accepted_at if t > killed.get("at", float("inf"))]
    # The longest stretch without a 200 after the kill: the failover as meters saw it.
    gaps = [b - a for a, b in zip([killed.get("at", 0.0), *after], after, strict=False)]
    print(
        f"\n3000 pushes in {time.monotonic() - started:.1f} s, primary killed at 1000;"
        f" longest stretch without a 200 after the kill {max(gaps, default=0):.1f} s;"
        f" {result.retries} retries (503s and dropped connections); refused {result.refused};"
        f" primary now on port {view['port']} (was {step.ports['redis']})"
    )
    assert killed, "the load ended before the kill"
    assert after, "no 200 after the kill"
    assert int(view["port"]) != step.ports["redis"], view
    assert len(result.accepted) == len(numbers), result.refused
    assert_each_stored_once(step, result.accepted)
