"""deploy/kubernetes/: the kustomize base, checked without a cluster.

Core resources (Deployment, Service, HPA, PDB, Job) are validated by kubernetes-validate
in strict mode (an unknown or misspelt field fails) against the schemas of
KUBERNETES_VERSION. kubernetes-validate knows no custom resources, so KEDA's ScaledObject
and TriggerAuthentication are NOT schema-validated: `check_keda` checks them field by
field instead, against the fields and types KEDA's CRDs (keda.sh/v1alpha1) declare,
rejecting any spec field it does not know. The rest cross-checks the manifests against
the code: the queue name, the job timeout, the CLI, the image's user.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import rq
import yaml

from ingest.server import SHUTDOWN_TIMEOUT_S
from shared.config import Settings
from tests.support.cli_commands import check_command

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - the dev extra installs it
    kubernetes_validate = None

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
# The base against Redis under Sentinel: DURABLE_ACK=replica, KEDA's redis-sentinel scaler.
SENTINEL_OVERLAY = ROOT / "deploy" / "kubernetes-sentinel"
KUSTOMIZATION = BASE / "kustomization.yaml"
DOCKERFILE = ROOT / "Dockerfile"

# The oldest Kubernetes these files are meant for; its schemas are the ones checked.
KUBERNETES_VERSION = "1.31.0"
KEDA_API = "keda.sh/v1alpha1"
# The one Secret the README tells operators to create.
SECRET_NAME = "permit-push"
# Settings that carry credentials (shared/config.py): only ever from a secretKeyRef.
SECRET_ENV = {"REDIS_URL", "DATABASE_URL", "READ_DATABASE_URL"}

# A laptop without the dev extra skips the schema check; CI (CI=true) must run it.
needs_kubernetes_validate = pytest.mark.skipif(
    kubernetes_validate is None and os.environ.get("CI") != "true",
    reason="kubernetes-validate is not installed (make install-dev)",
)


# kustomize builds what `kubectl apply -k` would apply; CI installs it
# (tests/compose/install.sh), a laptop without it skips.
needs_kustomize = pytest.mark.skipif(
    shutil.which("kustomize") is None and os.environ.get("CI") != "true",
    reason="kustomize is not installed (tests/compose/install.sh installs it)",
)


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    assert shutil.which("kustomize"), "kustomize is missing: tests/compose/install.sh"
    out = subprocess.run(
        ["kustomize", "build", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind_and_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomization() -> dict[str, Any]:
    (loaded,) = load_all(KUSTOMIZATION)
    return loaded


def resources() -> list[dict[str, Any]]:
    """Every object the base applies, in kustomization.yaml's order."""
    return [doc for name in kustomization()["resources"] for doc in load_all(BASE / name)]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for resource in resources():
        if resource["kind"] in ("Deployment", "Job"):
            yield resource["metadata"]["name"], resource["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in pod_specs():
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{name}/{container['name']}", container


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def container_settings(container: dict[str, Any]) -> Settings:
    """The settings the container's literal env gives (the Secret's URLs aside)."""
    return Settings.from_env(literal_env(container))


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


# --- kustomization.yaml ---------------------------------------------------------------


def test_kustomization_lists_every_file_of_the_folder_and_only_those() -> None:
    loaded = kustomization()
    assert loaded["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert loaded["kind"] == "Kustomization"
    listed = loaded["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    on_disk = {p.name for p in BASE.iterdir()} - {"kustomization.yaml", "README.md"}
    assert set(listed) == on_disk, (
        f"not listed: {sorted(on_disk - set(listed))}; missing: {sorted(set(listed) - on_disk)}"
    )
    # Every container's image is the placeholder that `images` rewrites.
    (image,) = loaded["images"]
    assert {c["image"] for _, c in containers()} == {image["name"]}
    assert image["newName"] and image["newTag"]
    # The README names the Kubernetes version the schemas are checked for.
    minor = ".".join(KUBERNETES_VERSION.split(".")[:2])
    assert f"Kubernetes {minor}'s schemas" in (BASE / "README.md").read_text(encoding="utf-8")


# --- Schemas --------------------------------------------------------------------------


def validator() -> Any:
    """kubernetes_validate; with CI=true its absence fails the test instead of skipping it."""
    assert kubernetes_validate is not None, "kubernetes-validate is missing: make install-dev"
    return kubernetes_validate


def validate(resource: dict[str, Any]) -> None:
    validator().validate(resource, KUBERNETES_VERSION, strict=True)


@needs_kubernetes_validate
def test_core_resources_are_valid_for_the_pinned_kubernetes_version() -> None:
    kv = validator()
    checked = set()
    for resource in resources():
        if resource["apiVersion"] == KEDA_API:
            continue  # no schema in kubernetes-validate: test_keda_resources_* below
        where = f"{resource['kind']}/{resource['metadata']['name']}"
        try:
            validate(resource)
        except kv.ValidationError as exc:
            path = ".".join(map(str, exc.path))
            pytest.fail(f"{where}: {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            # Never a silent pass: a kind with no schema must be checked some other way.
            pytest.fail(f"{where}: {exc.message}")
        checked.add(resource["kind"])
    wanted = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"}
    assert checked == wanted


@needs_kubernetes_validate
def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The check above can fail: strict mode refuses a field Kubernetes does not know."""
    kv = validator()
    deployment = one("Deployment", "permit-push-worker")
    validate(deployment)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContex"] = container.pop("securityContext")
    with pytest.raises(kv.ValidationError, match="securityContex"):
        validate(deployment)
    with pytest.raises(kv.ValidationError):
        validate({**one("Service", "permit-push-receiver"), "spec": {"ports": "8080"}})


# --- KEDA -----------------------------------------------------------------------------

# The spec fields of KEDA's CRDs (keda.sh/v1alpha1) this base may use; a typo such as
# `minReplicas` (the HPA's name) would be dropped silently by KEDA, so it fails here.
SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "idleReplicaCount",
    "initialCooldownPeriod",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
TRIGGER_FIELDS = {"type", "name", "metadata", "authenticationRef", "useCachedMetrics", "metricType"}
TRIGGER_AUTH_SPEC = {"secretTargetRef", "env", "podIdentity"}
# Connection parameters of KEDA's Redis scaler that carry credentials or the address:
# they come from the TriggerAuthentication, never from the ScaledObject's metadata.
REDIS_AUTH_PARAMETERS = {"address", "host", "port", "username", "password"}


def check_keda(scaled: dict[str, Any], auths: dict[str, dict[str, Any]]) -> list[str]:
    """What a ScaledObject and its TriggerAuthentications lack of what KEDA requires."""
    problems = []
    spec = scaled.get("spec", {})
    problems += [f"unknown spec field {f}" for f in sorted(set(spec) - SCALED_OBJECT_SPEC)]
    target = spec.get("scaleTargetRef", {})
    if not isinstance(target.get("name"), str):
        problems.append("spec.scaleTargetRef.name is required")
    for field in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        if field in spec and not isinstance(spec[field], int):
            problems.append(f"spec.{field} must be an integer")
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        problems.append("minReplicaCount > maxReplicaCount")
    triggers = spec.get("triggers")
    if not triggers:
        problems.append("spec.triggers is required")
    for i, trigger in enumerate(triggers or []):
        problems += [f"triggers[{i}]: unknown field {f}" for f in set(trigger) - TRIGGER_FIELDS]
        if not isinstance(trigger.get("type"), str):
            problems.append(f"triggers[{i}].type is required")
        metadata = trigger.get("metadata")
        if not isinstance(metadata, dict):
            problems.append(f"triggers[{i}].metadata is required")
            continue
        # The CRD types metadata as map[string]string: `listLength: 300` is refused.
        problems += [
            f"triggers[{i}].metadata.{k} must be a string"
            for k, v in metadata.items()
            if not isinstance(v, str)
        ]
        ref = trigger.get("authenticationRef", {}).get("name")
        if ref not in auths:
            problems.append(f"triggers[{i}].authenticationRef names no TriggerAuthentication")
    for name, auth in auths.items():
        spec = auth.get("spec", {})
        problems += [f"{name}: unknown spec field {f}" for f in set(spec) - TRIGGER_AUTH_SPEC]
        for j, ref in enumerate(spec.get("secretTargetRef", [])):
            for field in ("parameter", "name", "key"):
                if not isinstance(ref.get(field), str):
                    problems.append(f"{name}: secretTargetRef[{j}].{field} is required")
    return problems


def keda_resources() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    (scaled,) = [r for r in resources() if r["kind"] == "ScaledObject"]
    auths = {r["metadata"]["name"]: r for r in resources() if r["kind"] == "TriggerAuthentication"}
    assert scaled["apiVersion"] == KEDA_API
    assert {a["apiVersion"] for a in auths.values()} == {KEDA_API}
    return scaled, auths


def test_keda_resources_have_the_fields_keda_requires() -> None:
    scaled, auths = keda_resources()
    assert check_keda(scaled, auths) == []
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    assert int(metadata["listLength"]) > 0
    assert metadata["enableTLS"] in ("true", "false")
    parameters = {
        ref["parameter"]
        for ref in auths[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
    }
    assert "address" in parameters or {"host", "port"} <= parameters


def test_keda_check_finds_what_keda_would_refuse() -> None:
    scaled, auths = keda_resources()
    broken = yaml.safe_load(yaml.safe_dump(scaled))
    broken["spec"]["minReplicas"] = 1
    broken["spec"]["triggers"][0]["metadata"]["listLength"] = 300
    broken["spec"]["triggers"][0]["authenticationRef"]["name"] = "nobody"
    del broken["spec"]["scaleTargetRef"]["name"]
    assert check_keda(broken, auths) == [
        "unknown spec field minReplicas",
        "spec.scaleTargetRef.name is required",
        "triggers[0].metadata.listLength must be a string",
        "triggers[0].authenticationRef names no TriggerAuthentication",
    ]


@needs_kubernetes_validate
def test_keda_scaling_behaviour_is_a_valid_hpa_behaviour() -> None:
    """KEDA copies `advanced.horizontalPodAutoscalerConfig.behavior` into its HPA."""
    scaled, _ = keda_resources()
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    hpa = one("HorizontalPodAutoscaler", "permit-push-receiver")
    validate({**hpa, "spec": {**hpa["spec"], "behavior": behavior}})


def test_scaled_object_counts_the_queue_the_workers_drain() -> None:
    scaled, _ = keda_resources()
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    worker = one("Deployment", target["name"])
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "worker"
    # The queue the workers drain and the receivers fill: QUEUE_NAME where the manifests
    # set it, else the default of shared/config.py; they must agree.
    queues = {container_settings(c).queue_name for _, c in containers() if c["args"][0] != "db"}
    (queue_name,) = queues
    # RQ's own name for the queue's list of waiting job ids.
    key = rq.Queue(queue_name, connection=fakeredis.FakeRedis()).key
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["listName"] == key
    assert key == f"rq:queue:{Settings().queue_name}"  # the README's figure, as RQ spells it


# --- Shutdown -------------------------------------------------------------------------


def test_worker_grace_period_outlasts_the_longest_batch() -> None:
    # The receivers set each batch job's timeout at enqueue (ingest/queue.py), so the
    # longest one any container here would set is the bound.
    job_timeout_s = max(container_settings(c).job_timeout_s for _, c in containers())
    assert job_timeout_s >= Settings().job_timeout_s
    worker = one("Deployment", "permit-push-worker")["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > job_timeout_s


def test_receiver_grace_period_covers_the_drain_of_in_flight_requests() -> None:
    receiver = one("Deployment", "permit-push-receiver")["spec"]["template"]["spec"]
    (container,) = receiver["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert receiver["terminationGracePeriodSeconds"] > int(command[1]) + SHUTDOWN_TIMEOUT_S


# --- Secrets --------------------------------------------------------------------------


def secret_refs() -> Iterator[tuple[str, str, str]]:
    """(where, Secret name, key) of every reference to a Secret in the base and in the
    Sentinel overlay's patches."""
    for where, container in containers():
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield f"{where} {env['name']}", ref["name"], ref["key"]
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                yield f"{where} envFrom", source["secretRef"]["name"], "*"
    overlay = [doc for path in sorted(SENTINEL_OVERLAY.glob("*.yaml")) for doc in load_all(path)]
    for resource in resources() + overlay:
        if resource["kind"] == "TriggerAuthentication":
            for ref in resource["spec"].get("secretTargetRef", []):
                yield f"{resource['metadata']['name']} {ref['parameter']}", ref["name"], ref["key"]


def test_no_secret_value_is_inlined() -> None:
    assert "Secret" not in {r["kind"] for r in resources()}
    assert not {"secretGenerator", "configMapGenerator"} & set(kustomization())
    for where, container in containers():
        for env in container.get("env", []):
            if env["name"] in SECRET_ENV:
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{where}: {env['name']}"
    scaled, _ = keda_resources()
    for trigger in scaled["spec"]["triggers"]:
        inlined = set(trigger["metadata"]) & {
            *REDIS_AUTH_PARAMETERS,
            *(f"{p}FromEnv" for p in REDIS_AUTH_PARAMETERS),
        }
        assert not inlined, f"KEDA's Redis {inlined} must come from the TriggerAuthentication"
    # No URL with a user or password, anywhere (comments are not loaded, so the files'
    # strings are what the cluster would get).
    for path in sorted(BASE.glob("*.yaml")):
        for text in strings(load_all(path)):
            assert not re.search(r"://[^/\s@]*@", text), f"{path.name}: credentials in {text!r}"


def test_every_secret_reference_is_to_the_secret_the_readme_creates() -> None:
    readme = (BASE / "README.md").read_text(encoding="utf-8")
    created = set(re.findall(r"--from-literal=([\w.-]+)=", readme))
    refs = list(secret_refs())
    assert refs
    for where, name, key in refs:
        assert name == SECRET_NAME, where
        assert key in created, f"{where}: key {key} is not in the README's kubectl create"
    assert f"kubectl create secret generic {SECRET_NAME}" in readme
    assert created == {key for _, _, key in refs}, "the README creates a key nothing reads"


# --- Pods -----------------------------------------------------------------------------


def image_uid() -> int:
    (uid,) = re.findall(r"useradd\b.*--uid (\d+)", DOCKERFILE.read_text(encoding="utf-8"))
    return int(uid)


def test_pods_run_as_the_image_user_without_privileges() -> None:
    for name, spec in pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] == image_uid(), name
        assert spec["automountServiceAccountToken"] is False, name
    for where, container in containers():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["capabilities"]["drop"] == ["ALL"], where
        assert "add" not in context["capabilities"], where
        resources_ = container["resources"]
        assert {"cpu", "memory"} <= set(resources_["requests"]), where
        assert "memory" in resources_["limits"], where


def test_writable_paths_are_empty_dirs() -> None:
    """With a read-only root, PROMETHEUS_MULTIPROC_DIR must be a mounted emptyDir."""
    for name, spec in pod_specs():
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            directory = literal_env(container).get("PROMETHEUS_MULTIPROC_DIR")
            if container["args"][0] == "serve":
                assert directory, f"{name}: the receiver needs PROMETHEUS_MULTIPROC_DIR"
            if directory:
                assert mounts.get(directory) in empty_dirs, f"{name}: {directory} is not mounted"


def test_receiver_probes_and_service_reach_the_receiver() -> None:
    deployment = one("Deployment", "permit-push-receiver")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    port = int(args[args.index("--port") + 1])
    (named,) = container["ports"]
    assert named["containerPort"] == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in (named["name"], port), probe
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one("Service", "permit-push-receiver")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in (named["name"], port)
    pdb = one("PodDisruptionBudget", "permit-push-receiver")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one("HorizontalPodAutoscaler", "permit-push-receiver")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "replicas" not in deployment["spec"], "the HPA sets the count; apply would reset it"
    assert "replicas" not in one("Deployment", "permit-push-worker")["spec"], "KEDA sets it"


def test_worker_liveness_uses_the_image_healthcheck() -> None:
    worker = one("Deployment", "permit-push-worker")["spec"]["template"]["spec"]
    (container,) = worker["containers"]
    command = container["livenessProbe"]["exec"]["command"]
    assert command == ["permit-push-healthcheck", "rq-worker"]
    assert "/usr/local/bin/permit-push-healthcheck" in DOCKERFILE.read_text(encoding="utf-8")


def test_container_args_are_real_permit_push_commands() -> None:
    """Each container's args, parsed by the click group as the image's entrypoint would."""
    for where, container in containers():
        assert "command" not in container, f"{where}: the entrypoint must stay permit-push"
        check_command(where, container["args"])
    assert {c["args"][0] for _, c in containers()} == {"serve", "worker", "db"}


# --- The Sentinel overlay (deploy/kubernetes-sentinel) ---------------------------------


@needs_kustomize
def test_kustomize_builds_the_base_these_tests_read() -> None:
    built = by_kind_and_name(kustomize_build(BASE))
    read = by_kind_and_name(resources())
    assert set(built) == set(read)
    deployment = ("Deployment", "permit-push-worker")
    assert built[deployment]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "{newName}:{newTag}".format(**kustomization()["images"][0])
    )


def without_overlay_changes(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` less what the Sentinel overlay may change: DURABLE_ACK in the pods'
    env, the ScaledObject's triggers and the TriggerAuthentication's secret references."""
    resource = copy.deepcopy(resource)
    spec = resource["spec"]
    if resource["kind"] == "Deployment":
        for container in spec["template"]["spec"]["containers"]:
            container["env"] = [e for e in container["env"] if e["name"] != "DURABLE_ACK"]
    spec.pop("triggers", None)
    spec.pop("secretTargetRef", None)
    return resource


@needs_kustomize
@needs_kubernetes_validate
def test_sentinel_overlay_acknowledges_on_a_replica_and_points_keda_at_the_sentinels() -> None:
    built = by_kind_and_name(kustomize_build(SENTINEL_OVERLAY))
    base = by_kind_and_name(kustomize_build(BASE))
    # The same objects as the base, changed only where the overlay means to.
    assert set(built) == set(base)
    for key, resource in built.items():
        assert without_overlay_changes(resource) == without_overlay_changes(base[key]), key
        if resource["apiVersion"] != KEDA_API:
            validate(resource)
    # Receivers and workers wait for a replica's copy; the setting is one the code takes.
    for name in ("permit-push-receiver", "permit-push-worker"):
        (container,) = built[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        assert container_settings(container).durable_ack == "replica", name
    # KEDA: the base's list and target, read through the Sentinels; every address and
    # credential from the Secret.
    scaled = built[("ScaledObject", "permit-push-worker")]
    auths = {name: r for (kind, name), r in built.items() if kind == "TriggerAuthentication"}
    assert check_keda(scaled, auths) == []
    (trigger,) = scaled["spec"]["triggers"]
    (base_trigger,) = base[("ScaledObject", "permit-push-worker")]["spec"]["triggers"]
    assert trigger["type"] == "redis-sentinel"
    assert trigger["metadata"] == base_trigger["metadata"]
    parameters = {
        ref["parameter"]
        for ref in auths[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
    }
    assert parameters == {"addresses", "sentinelMaster", "password"}
    secret_parameters = {*REDIS_AUTH_PARAMETERS, "addresses", "hosts", "ports", "sentinelMaster"}
    assert not set(trigger["metadata"]) & secret_parameters
