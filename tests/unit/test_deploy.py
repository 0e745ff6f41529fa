"""The deployment files: docker-compose.yml, Dockerfile, Prometheus rules, Grafana.

No Docker needed: the files are parsed and cross-checked against each other, against
the `permit-push` CLI and against deploy/metrics.yml (the one list of metric names the
rules and the dashboard may use). The promtool checks run where `promtool` is on PATH
(Debian package `prometheus`) and skip elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import fakeredis
import prometheus_client as client
import pytest
import rq
import yaml

from shared.config import Settings
from tests.support.cli_commands import check_command
from tests.support.metrics import (
    ALERTS,
    DASHBOARD,
    DEPLOY,
    GRAFANA,
    HISTOGRAM_SUFFIXES,
    METRICS,
    PROMTOOL,
    ROOT,
    alert_rules,
    dashboard_exprs,
    dashboard_panels,
    deploy_exprs,
    exposition_problems,
    known_metrics,
    load_yaml,
    metric_names_used,
    needs_promtool,
    promql_selectors,
)

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
RUNNING = ROOT / "docs" / "running.md"
COMPOSE_TEST = ROOT / "tests" / "compose"
COMPOSE_OVERRIDE = COMPOSE_TEST / "docker-compose.test.yml"

# The `ha` profile's services: two replicas of `redis` and three Sentinels.
HA = {"redis-replica-1", "redis-replica-2", "sentinel-1", "sentinel-2", "sentinel-3"}
# Services that run until stopped; `migrate` is the one-shot.
LONG_RUNNING = {
    "redis",
    "postgres",
    "ingest",
    "worker",
    "rq-dashboard",
    "prometheus",
    "grafana",
    *HA,
}
# REDIS_URL of the permit-push services: PERMIT_PUSH_REDIS_URL (the Sentinels, say), else
# the primary's own URL, which is what the wrapper's default holds.
REDIS_URL_CHOICE = re.compile(r"\$\{PERMIT_PUSH_REDIS_URL:-(.*)\}")
# The services built from the Dockerfile's `app` stage, i.e. ENTRYPOINT ["permit-push"].
PERMIT_PUSH_SERVICES = {"migrate", "ingest", "worker"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(COMPOSE)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def argv(value: str | list[str]) -> list[str]:
    """A compose command/test in either form, as a list of arguments."""
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instruction lines (continuations joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(1) or f"stage{len(stages)}", [])
        current.append(line)
    return stages


def instruction(stage: list[str], name: str) -> list[str]:
    """The JSON-form arguments of a stage's last `name` instruction (e.g. ENTRYPOINT)."""
    lines = [line for line in stage if line.upper().startswith(name + " ")]
    assert lines, f"no {name} in the stage"
    return list(json.loads(lines[-1][len(name) :]))


# --- docker-compose.yml ---------------------------------------------------------------


def test_compose_has_the_whole_stack(services: dict[str, Any]) -> None:
    assert set(services) >= LONG_RUNNING | {"migrate"}


def test_every_service_has_a_healthcheck_and_a_restart_policy(
    services: dict[str, Any],
) -> None:
    for name in LONG_RUNNING:
        service = services[name]
        assert service.get("restart") in ("always", "unless-stopped"), name
        check = service.get("healthcheck", {})
        assert not check.get("disable"), name
        assert argv(check["test"])[0] in ("CMD", "CMD-SHELL"), name
    # The one-shot: re-running a failed migration in a loop hides it; its exit code is
    # its health (the others wait for service_completed_successfully).
    migrate = services["migrate"]
    assert migrate["restart"] in ("no", "on-failure")
    assert migrate["healthcheck"] == {"disable": True}


def test_redis_keeps_every_job(services: dict[str, Any]) -> None:
    """AOF on (a restart keeps the queue) and noeviction (a full Redis never drops jobs)."""
    command = argv(services["redis"]["command"])
    options = dict(zip(command[1::2], command[2::2], strict=False))
    assert command[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] in ("always", "everysec")
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])


def test_postgres_is_checked_with_pg_isready(services: dict[str, Any]) -> None:
    assert "pg_isready" in argv(services["postgres"]["healthcheck"]["test"])
    assert any("/var/lib/postgresql/data" in v for v in services["postgres"]["volumes"])


def test_database_users_wait_for_the_migration(services: dict[str, Any]) -> None:
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("ingest", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_every_dependency_waits_for_a_condition(services: dict[str, Any]) -> None:
    """The short form of depends_on only waits for the container to start."""
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for other, how in depends.items():
            assert how["condition"] in ("service_healthy", "service_completed_successfully"), (
                name,
                other,
            )


def seconds(duration: str) -> float:
    """A compose duration such as 330s, 5m or 1m30s, in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_worker_stop_grace_outlasts_the_longest_batch(services: dict[str, Any]) -> None:
    """SIGTERM lets a worker finish its batch; SIGKILL after the grace would cut it off."""
    grace = seconds(services["worker"]["stop_grace_period"])
    assert grace > Settings().job_timeout_s
    assert "JOB_TIMEOUT_S" not in services["worker"].get("environment", {})


def test_worker_scales(services: dict[str, Any]) -> None:
    """`--scale worker=N` fails on a fixed container name or a published port."""
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert argv(worker["command"]) == ["worker"]


def test_ingest_is_published_and_checked_on_readyz(services: dict[str, Any]) -> None:
    ingest = services["ingest"]
    assert any(str(port).endswith(":8080") for port in ingest["ports"])
    # /readyz and /metrics are on the probes port, which is not published.
    probes = ingest["environment"]["PROBES_PORT"]
    assert f"http://127.0.0.1:{probes}/readyz" in argv(ingest["healthcheck"]["test"])
    assert not any(str(port).endswith(f":{probes}") for port in ingest["ports"])
    prometheus = load_yaml(PROMETHEUS_CONFIG)
    (job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "ingest"]
    assert [sd["port"] for sd in job["dns_sd_configs"]] == [int(probes)]


SECRET = re.compile(
    r"\$\{(REDIS_PASSWORD|POSTGRES_PASSWORD|GRAFANA_ADMIN_PASSWORD)(:?[-?])([^}]*)\}"
)


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_OVERRIDE], ids=["compose", "override"])
def test_no_default_passwords(path: Path) -> None:
    """Every secret is `${VAR:?message}`: a missing one stops `up`, naming it."""
    text = path.read_text(encoding="utf-8")
    uses = SECRET.findall(text)
    assert uses, path
    for name, how, message in uses:
        assert how == ":?", f"{name} has a default ({how})"
        assert message.startswith(f"set {name}"), message
    assert not re.search(r"PASSWORD\w*:\s*['\"]?[A-Za-z0-9_]+['\"]?\s*$", text, re.MULTILINE)


def primary_url(redis_url: str) -> str:
    """The primary's URL in the permit-push services' REDIS_URL (its default)."""
    match = REDIS_URL_CHOICE.fullmatch(redis_url)
    assert match, redis_url
    return match.group(1)


def redis_options(service: dict[str, Any]) -> dict[str, str]:
    command = argv(service["command"])
    assert command[0] == "redis-server"
    return dict(zip(command[1::2], command[2::2], strict=False))


def test_ha_profile_two_replicas_of_the_primary_and_three_sentinels(
    services: dict[str, Any],
) -> None:
    assert {name for name, s in services.items() if "ha" in s.get("profiles", [])} == HA
    primary = redis_options(services["redis"])
    for name in ("redis-replica-1", "redis-replica-2"):
        options = redis_options(services[name])
        # A replica becomes the primary: the same AOF, eviction and password settings.
        assert {k: v for k, v in options.items() if k != "--replicaof"} == primary, name
        assert options["--replicaof"] == "redis"
        assert argv(services[name]["command"])[-1] == "6379"
    assert primary["--masterauth"] == primary["--requirepass"]  # demoted, it must sync
    volumes = [services[n]["volumes"][0] for n in ("redis", "redis-replica-1", "redis-replica-2")]
    assert len({volume.split(":")[0] for volume in volumes}) == 3, volumes
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = argv(services[name]["command"])[0]
        env = services[name]["environment"]
        assert "sentinel monitor permit-push $$PRIMARY_HOST $$PRIMARY_PORT 2" in script, name
        assert (env["PRIMARY_HOST"], env["PRIMARY_PORT"]) == ("redis", "6379"), name
        assert env["REDIS_PASSWORD"] == primary["--requirepass"], name
    # The app is pointed at the Sentinels by PERMIT_PUSH_REDIS_URL, and can wait for a
    # replica's copy before each 200; both default to the single Redis as before.
    env = services["ingest"]["environment"]
    assert primary_url(env["REDIS_URL"]).endswith("@redis:6379/0")
    assert env["DURABLE_ACK"] == "${DURABLE_ACK:-off}"


def test_redis_requires_a_password_and_sits_on_an_internal_network(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    command = argv(services["redis"]["command"])
    password = command[command.index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD:?"), password
    # The healthcheck's redis-cli authenticates through the environment, not its argv.
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == password
    assert compose["networks"]["backend"]["internal"] is True
    assert services["redis"]["networks"] == ["backend"]
    assert services["postgres"]["networks"] == ["backend"]
    assert "ports" not in services["redis"] and "ports" not in services["postgres"]
    # Every service gets its URL with the credentials.
    urls = [primary_url(services["rq-dashboard"]["environment"]["RQ_DASHBOARD_REDIS_URL"])]
    for name in PERMIT_PUSH_SERVICES:
        assert "backend" in services[name]["networks"], name
        env = services[name]["environment"]
        urls += [primary_url(env["REDIS_URL"]), env["DATABASE_URL"]]
    for url in urls:
        assert re.match(r"[a-z+]+://[a-z_]*:\$\{[A-Z_]+_PASSWORD:\?[^}]+\}@", url), url


def test_rq_dashboard_shows_the_queue_the_metrics_report(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    """rq-dashboard counts through RQ's API, as `rq info` does and as /metrics' figures are
    checked to agree (tests/unit/test_queue_stats.py). It shows the same queue if it reads
    the same Redis database, decodes the jobs' JSON and runs the workers' RQ version."""
    dashboard = services["rq-dashboard"]
    environment = dashboard["environment"]
    assert (
        environment["RQ_DASHBOARD_REDIS_URL"]
        == compose["x-permit-push"]["environment"]["REDIS_URL"]
    )
    assert environment["RQ_DASHBOARD_JSON_SERIALIZER"] == "true"
    assert dashboard["build"]["target"] == "rq-dashboard"
    stage = dockerfile_stages()["rq-dashboard"]
    assert re.match(r"FROM base AS rq-dashboard", stage[0], re.IGNORECASE)  # the app's RQ


def test_permit_push_services_share_one_image(services: dict[str, Any]) -> None:
    built_from_app = {
        name
        for name, service in services.items()
        if isinstance(service.get("build"), dict) and service["build"].get("target") == "app"
    }
    assert built_from_app == PERMIT_PUSH_SERVICES
    assert len({services[name]["image"] for name in built_from_app}) == 1
    for name in built_from_app:
        # An entrypoint override would mean the command is not a permit-push command.
        assert "entrypoint" not in services[name], name
        env = services[name]["environment"]
        assert {"REDIS_URL", "DATABASE_URL", "LOG_FORMAT"} <= set(env), name
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://"), name


def permit_push_commands(services: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """Every argument list the stack gives to the `permit-push` entry point."""
    app = dockerfile_stages()["app"]
    yield "Dockerfile CMD", instruction(app, "CMD")
    for name in sorted(PERMIT_PUSH_SERVICES):
        yield name, argv(services[name]["command"])


def test_compose_commands_are_real_permit_push_commands(services: dict[str, Any]) -> None:
    """Resolve each command against the click group, as `permit-push` would parse it."""
    for where, args in permit_push_commands(services):
        check_command(where, args)


# --- tests/compose: the override make test-compose starts the stack with ------------


class ComposeLoader(yaml.SafeLoader):
    """PyYAML plus compose's `!reset` tag (drop the value merged from the base file)."""


ComposeLoader.add_constructor("!reset", lambda loader, node: {"!reset": True})


@pytest.fixture(scope="module")
def override() -> dict[str, Any]:
    text = COMPOSE_OVERRIDE.read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.load(text, Loader=ComposeLoader)  # noqa: S506 (SafeLoader's subclass)
    return loaded["services"]


def test_override_runs_every_container_on_the_host_network_from_local_images(
    services: dict[str, Any], override: dict[str, Any]
) -> None:
    assert set(override) == set(services)
    for name, service in override.items():
        assert service["network_mode"] == "host", name
        # The base file's networks mean nothing on the host network; they are dropped.
        if "networks" in services[name]:
            assert service["networks"] == {"!reset": True}, name
        # Published ports mean nothing on the host network; they are dropped, not kept.
        if "ports" in services[name]:
            assert service["ports"] == {"!reset": True}, name
        if name == "grafana":
            continue
        assert service["pull_policy"] == "never", name
        if "build" in services[name]:
            assert service["build"]["network"] == "host", name
            assert service["build"]["args"]["PYTHON_IMAGE"] == "permit-push-test/python:3.11-slim"
        else:
            assert service["image"].startswith("permit-push-test/"), name
    # Grafana (not packaged by Debian) only runs with its profile, which the test leaves off.
    assert override["grafana"]["profiles"] == ["grafana"]
    assert "profiles" not in services["grafana"]


def test_override_changes_only_addresses_and_ports(
    compose: dict[str, Any], services: dict[str, Any], override: dict[str, Any]
) -> None:
    """What the test runs is docker-compose.yml's Redis and app settings, on 127.0.0.1."""
    redis_port = "${PP_REDIS_PORT:-16379}"
    command = argv(override["redis"]["command"])
    assert command == [
        *argv(services["redis"]["command"]),
        "--bind",
        "127.0.0.1",
        "--port",
        redis_port,
    ]
    for name in PERMIT_PUSH_SERVICES:
        base_env = services[name]["environment"]
        env = override[name]["environment"]
        assert set(env) <= set(base_env), name
        assert env["REDIS_URL"] == base_env["REDIS_URL"].replace(
            "@redis:6379", f"@127.0.0.1:{redis_port}"
        )
        assert env["DATABASE_URL"] == base_env["DATABASE_URL"].replace(
            "@postgres:5432", "@127.0.0.1:${PP_POSTGRES_PORT:-15432}"
        )
    assert (
        override["rq-dashboard"]["environment"]["RQ_DASHBOARD_REDIS_URL"]
        == override["ingest"]["environment"]["REDIS_URL"]
    )
    for name, port in (
        ("redis-replica-1", "PP_REPLICA1_PORT"),
        ("redis-replica-2", "PP_REPLICA2_PORT"),
    ):
        replica_port = "${" + port + ":-" + argv(override[name]["command"])[-1].split(":-")[1]
        base = argv(services[name]["command"])
        assert argv(override[name]["command"]) == [
            *base[:-2], "127.0.0.1", redis_port, "--bind", "127.0.0.1", "--port", replica_port
        ], name  # fmt: skip
        assert f"-p {replica_port}" in argv(override[name]["healthcheck"]["test"])[1], name
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        assert "command" not in override[name], name  # the base's script, other addresses
        assert set(override[name]["environment"]) == {
            "SENTINEL_BIND", "SENTINEL_PORT", "PRIMARY_HOST", "PRIMARY_PORT"
        }, name  # fmt: skip
        assert override[name]["environment"]["PRIMARY_PORT"] == redis_port, name
    # Each probe asks its own service: this host runs its own Redis on 6379.
    assert f"-p {redis_port}" in argv(override["redis"]["healthcheck"]["test"])[1]
    for name, port in (
        ("ingest", "PP_PROBES_PORT"),
        ("rq-dashboard", "PP_DASHBOARD_PORT"),
        ("prometheus", "PP_PROMETHEUS_PORT"),
    ):
        probe = argv(override[name]["healthcheck"]["test"])[-1]
        base_probe = argv(services[name]["healthcheck"]["test"])[-1]
        assert re.sub(r"127\.0\.0\.1:\$\{" + port + r":-\d+\}", "127.0.0.1:PORT", probe) == (
            re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", base_probe)
        ), name


def test_make_test_does_not_collect_the_compose_test() -> None:
    """pytest's default python_files are test_*.py and *_test.py; the Makefile names it."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "python_files" not in pyproject
    scripts = {path.name for path in COMPOSE_TEST.glob("*.py")}
    assert "compose_stack.py" in scripts
    assert not {n for n in scripts if n.startswith("test_") or n.endswith("_test.py")}
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "tests/compose/compose_stack.py" in makefile


# --- Dockerfile -----------------------------------------------------------------------


def test_dockerfile_builds_offline() -> None:
    """A `# syntax=` directive makes BuildKit pull its frontend image from a registry."""
    first_lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()[:5]
    assert not any(re.match(r"#\s*syntax\s*=", line, re.IGNORECASE) for line in first_lines)


def test_dockerfile_installs_the_project_for_a_non_root_user() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "app", "the default build target must be the app"
    base = stages["base"]
    # FROM ${PYTHON_IMAGE}: the official image unless a build arg says otherwise.
    assert base[0].split()[1] == "${PYTHON_IMAGE}"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text(encoding="utf-8")
    assert any(
        re.search(r"pip install --no-deps --no-build-isolation /src\b", line) for line in base
    )
    for name in ("app", "rq-dashboard"):
        users = [line.split()[1] for line in stages[name] if line.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), name
    assert instruction(stages["app"], "ENTRYPOINT") == ["permit-push"]


def test_dockerignore_keeps_what_the_build_needs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    # pip install . reads these; the image copies the healthcheck script.
    for needed in ("pyproject.toml", "README.md", "cli", "ingest", "worker", "shared", "deploy"):
        assert needed not in ignored
    assert "deploy/healthcheck.py" not in ignored
    assert (DEPLOY / "healthcheck.py").is_file()


# --- Healthcheck script ---------------------------------------------------------------


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", DEPLOY / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worker_healthcheck_needs_a_registered_worker_of_this_host() -> None:
    healthcheck = load_healthcheck()
    redis = fakeredis.FakeStrictRedis()
    worker = rq.SimpleWorker(["permits"], connection=redis)
    assert healthcheck.check_rq_worker(redis, worker.hostname) == 1
    worker.register_birth()
    assert healthcheck.check_rq_worker(redis, worker.hostname) == 0
    assert healthcheck.check_rq_worker(redis, "another-container") == 1
    worker.register_death()
    assert healthcheck.check_rq_worker(redis, worker.hostname) == 1


def test_http_healthcheck_fails_when_nothing_listens() -> None:
    healthcheck = load_healthcheck()
    # Port 9 (discard) on loopback: nothing listens there in a test run.
    assert healthcheck.check_http("http://127.0.0.1:9/readyz") == 1
    assert healthcheck.main(["nonsense"]) == 2


# --- Prometheus -----------------------------------------------------------------------


def test_prometheus_loads_the_rules_mounted_from_the_repository(
    services: dict[str, Any],
) -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    mounts = dict(
        volume.split(":")[:2]
        for volume in services["prometheus"]["volumes"]
        if volume.startswith("./")
    )
    # The config dir is mounted whole, so relative rule paths resolve the same way in the
    # container and here.
    assert mounts["./deploy/prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert config["rule_files"]
    for rule_file in config["rule_files"]:
        assert not Path(rule_file).is_absolute(), rule_file
        assert (PROMETHEUS_CONFIG.parent / rule_file).is_file(), rule_file


def test_prometheus_scrapes_every_receiver(services: dict[str, Any]) -> None:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    ingest = jobs["ingest"]
    assert ingest.get("metrics_path", "/metrics") == "/metrics"
    # DNS discovery of the compose service name finds each replica.
    (sd,) = ingest["dns_sd_configs"]
    assert sd["names"] == ["ingest"]
    # The receiver's probes port: /metrics is not served on 8080 in the stack.
    assert sd["port"] == int(services["ingest"]["environment"]["PROBES_PORT"]) == 8081


def test_alerts_cover_what_an_operator_needs() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "PermitPushQueueLagHigh",
        "PermitPushFailedJobsRising",
        "PermitPushNoWorkers",
        "PermitPushReceiverDown",
        "PermitPushBackpressure",
        "PermitPushServerErrors",
    } <= names


def test_every_alert_says_what_it_means_and_where_to_read_more() -> None:
    operations = RUNNING.read_text(encoding="utf-8")
    headings = {
        match.group(1).strip().strip("`")
        for match in re.finditer(r"^#{2,4}\s+(.+)$", operations, re.MULTILINE)
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert len(annotations["description"]) > 80, f"{name}: say what it means and what to do"
        assert annotations["runbook"] == f"docs/running.md#{name.lower()}", name
        assert name in headings, f"docs/running.md has no section for {name}"


@needs_promtool
def test_promtool_accepts_the_config_and_rules() -> None:
    for args in (["check", "config", PROMETHEUS_CONFIG], ["check", "rules", ALERTS]):
        result = subprocess.run(
            [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """`promtool test rules` on alerts.test.yml, comparing labels only (see its header)."""
    rules = load_yaml(ALERTS)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / ALERTS.name).write_text(yaml.safe_dump(rules), encoding="utf-8")
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    result = subprocess.run(
        [PROMTOOL, "test", "rules", ALERT_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Metric names: deploy/metrics.yml is the one list ---------------------------------


def test_promql_scanner_finds_metrics_and_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{route=~"a|b"}[5m])))'
        ' > 0.5 and on() count(up{job="ingest"} == 1) > 0 or vector(0)'
    )
    assert promql_selectors(expr) == [("x_bucket", {"route"}), ("up", {"job"})]


def test_rules_and_dashboard_use_only_listed_metrics_and_labels() -> None:
    metrics = known_metrics()
    target_labels = set(load_yaml(METRICS)["target_labels"])
    for where, expr in deploy_exprs().items():
        for name, labels in promql_selectors(expr):
            suffix = next((s for s in HISTOGRAM_SUFFIXES if name.endswith(s)), "")
            base = name.removesuffix(suffix) if suffix else name
            if base in metrics and metrics[base]["type"] == "histogram" and suffix:
                allowed = set(metrics[base]["labels"]) | ({"le"} if suffix == "_bucket" else set())
            else:
                assert name in metrics, f"{where}: {name} is not in deploy/metrics.yml"
                allowed = set(metrics[name]["labels"])
            unknown = labels - allowed - target_labels
            assert not unknown, f"{where}: {name} has no label {unknown}"


def test_the_dashboard_and_rules_show_what_issue_6_asks_for() -> None:
    used = metric_names_used()
    assert {
        "rq_jobs",  # queue depth by state
        "permit_push_queue_lag_seconds",  # lag
        "permit_push_http_requests_total",  # push rate, 5xx/503
        "permit_push_http_request_duration_seconds",  # p99 latency
        "permit_push_rejected_total",  # errors by ErrorCode
        "rq_workers",  # workers
    } <= used
    # Every listed receiver metric is shown or alerted on somewhere.
    assert set(load_yaml(METRICS)["receiver"]) <= used


def test_exposition_check_accepts_what_prometheus_client_writes() -> None:
    """The check above, on a registry built as the receiver would build it."""
    registry = client.CollectorRegistry()
    for name, metric in load_yaml(METRICS)["receiver"].items():
        kind = {"counter": client.Counter, "gauge": client.Gauge}.get(
            metric["type"], client.Histogram
        )
        made = kind(name, name, metric["labels"], registry=registry)
        if metric["labels"]:
            made.labels(*("x" for _ in metric["labels"]))
    text = client.generate_latest(registry).decode()
    assert exposition_problems(text) == []
    assert exposition_problems(text.replace("rq_workers", "rq_worker")) == [
        "rq_workers: not exposed"
    ]


# --- Grafana --------------------------------------------------------------------------


def test_dashboard_parses_and_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (datasource,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"], panel["id"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]


def test_grafana_provisioning_paths_match_the_compose_mounts(services: dict[str, Any]) -> None:
    mounts = dict(
        volume.split(":")[:2]
        for volume in services["grafana"]["volumes"]
        if volume.startswith("./")
    )
    provisioning = mounts["./deploy/grafana/provisioning"]
    assert provisioning == "/etc/grafana/provisioning"
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "permit-push.yml")[
        "providers"
    ]
    host_dir = next(
        host for host, container in mounts.items() if container == provider["options"]["path"]
    )
    assert (ROOT / host_dir / DASHBOARD.name).is_file()


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool has no PromQL linter of its own, so check them as recording rules."""
    variables = {"$__rate_interval": "1m", "$queue": "permits"}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for variable, value in variables.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown dashboard variable in {expr}"
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
