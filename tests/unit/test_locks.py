"""The lock files: every install (make, the Dockerfile, CI) takes hashed, pinned packages.

`make lock` writes them with pip-compile --generate-hashes; these tests check they are
complete, agree with pyproject.toml and with each other, and are what installs read.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {
    "requirements.lock": (),
    "requirements-embedded.lock": ("embedded",),
    "requirements-dev.lock": ("dev", "embedded"),
}
DASHBOARD_LOCK = "deploy/rq-dashboard.lock"
# Known advisories below these (aiohttp: the 3.13.3 fixes; setuptools: CVE-2025-47273).
FLOORS = {"aiohttp": Version("3.13.3"), "setuptools": Version("78.1.1")}


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def entries(name: str) -> dict[str, tuple[Version, list[str]]]:
    """package -> (pinned version, its hashes) of a pip-compile --generate-hashes file."""
    path = ROOT / name
    assert path.is_file(), f"{name} is missing (make lock)"
    text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
    pinned: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        # No --index-url/--find-links: a lock must not point installs at this machine.
        assert not line.startswith("-"), f"{name}: option line {line!r}"
        match = re.match(r"([A-Za-z0-9._-]+)==([^ ;]+)", line)
        assert match, f"{name}: not an exact pin: {line!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        pinned[canonicalize_name(match.group(1))] = (Version(match.group(2)), hashes)
    return pinned


def wanted(extras: tuple[str, ...]) -> list[Requirement]:
    config = pyproject()
    project: dict[str, list[str]] = config["project"]  # type: ignore[assignment]
    optional: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += optional[extra]
    lines += config["build-system"]["requires"]  # type: ignore[index]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_lock_pins_every_requirement_with_hashes(name: str) -> None:
    pinned = entries(name)
    for package, (_, hashes) in pinned.items():
        assert hashes, f"{name}: {package} has no hash"
    for requirement in wanted(LOCKS[name]):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        package = canonicalize_name(requirement.name)
        assert package in pinned, f"{name} lacks {requirement} (make lock)"
        version = pinned[package][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}: {package}=={version} is outside pyproject.toml's {requirement} (make lock)"
        )
    # The project itself is installed from the checkout with --no-deps, never locked.
    assert "permit-push" not in pinned


def test_locks_agree_and_sit_above_the_advisory_floors() -> None:
    full = entries("requirements-dev.lock")
    for name in [*LOCKS, DASHBOARD_LOCK]:
        for package, (version, _) in entries(name).items():
            if name != DASHBOARD_LOCK:
                assert package in full, f"{package} of {name} is not in requirements-dev.lock"
            if package in full:
                assert full[package][0] == version, f"{name}: {package} differs"
            if package in FLOORS:
                assert version >= FLOORS[package], (name, package, version)
    runtime = {r.name: r for r in wanted(())}
    assert not runtime["aiohttp"].specifier.contains("3.13.2")
    assert runtime["aiohttp"].specifier.contains("3.13.3")


def test_the_dashboard_lock_keeps_the_workers_rq() -> None:
    dashboard = entries(DASHBOARD_LOCK)
    runtime = entries("requirements.lock")
    assert {"rq-dashboard", "six", "rq", "redis"} <= set(dashboard)
    for package in ("rq", "redis"):
        assert dashboard[package][0] == runtime[package][0], package


def test_installs_read_the_locks_with_require_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--require-hashes" in makefile
    for lock in ("requirements-embedded.lock", "requirements-dev.lock"):
        assert f"-r {lock}" in makefile, lock
    assert "--no-deps --no-build-isolation -e ." in makefile
    # No install of the project with its dependencies resolved afresh.
    assert not re.search(r"pip install[^\n]*-e '\.\[", makefile)
    for target in ("lock", "audit"):
        assert re.search(rf"^{target}: ", makefile, re.MULTILINE), target
    assert "--strict" in makefile  # a package the advisory service did not answer for fails
    dockerfile = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    runs = [line for line in dockerfile.splitlines() if line.startswith("RUN pip install")]
    assert runs
    for line in runs:
        assert "--require-hashes -r /src/" in line, line
    assert "pip install --no-deps --no-build-isolation /src" in dockerfile
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # CI runs the audit, and a known advisory fails it.
    assert re.search(r"^if ! make audit\b", ci, re.MULTILINE)
    assert "known vulnerabilit" in ci
