"""The lock files: every install (make, the Dockerfile, CI) takes hashed, pinned packages.

`make lock` writes them with pip-compile --generate-hashes; these tests check they are
complete, agree with pyproject.toml and with each other, and are what installs read, through
deploy/install-locked, which puts the locked installer in place first.
"""

from __future__ import annotations

import re
import subprocess
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
INSTALLER_LOCK = "deploy/installer.lock"
INSTALL_LOCKED = ROOT / "deploy" / "install-locked"
INSTALLER_LOCK_PATH = str(ROOT / INSTALLER_LOCK)  # as the script names it
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
    for name in [*LOCKS, DASHBOARD_LOCK, INSTALLER_LOCK]:
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


def test_the_installer_lock_pins_pip_and_the_build_backend() -> None:
    installer = entries(INSTALLER_LOCK)
    assert {"pip", "setuptools", "wheel"} <= set(installer)
    for package, (_, hashes) in installer.items():
        assert hashes, f"{INSTALLER_LOCK}: {package} has no hash"
    build_requires: list[str] = pyproject()["build-system"]["requires"]  # type: ignore[index]
    for requirement in map(Requirement, build_requires):
        version = installer[canonicalize_name(requirement.name)][0]
        assert requirement.specifier.contains(version), (requirement, version)


def test_installs_read_the_locks_through_the_locked_installer() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "INSTALL_LOCKED := deploy/install-locked" in makefile
    for lock in ("requirements-embedded.lock", "requirements-dev.lock"):
        assert f"$(INSTALL_LOCKED) $(BIN)/python {lock}" in makefile, lock
    # Nothing is installed from a lock by the venv's own pip, around the locked installer.
    assert not re.search(r"pip install[^\n]*-r ", makefile)
    assert "--no-deps --no-build-isolation -e ." in makefile
    # No install of the project with its dependencies resolved afresh.
    assert not re.search(r"pip install[^\n]*-e '\.\[", makefile)
    for target in ("lock", "audit", "check-locks"):
        assert re.search(rf"^{target}: ", makefile, re.MULTILINE), target
    assert "-o deploy/installer.lock" in makefile  # make lock writes the installer's lock
    assert "--strict" in makefile  # a package the advisory service did not answer for fails
    dockerfile = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    runs = [line for line in dockerfile.splitlines() if line.startswith("RUN ")]
    installs = [line for line in runs if ".lock" in line]
    assert len(installs) == 2, installs
    for line in installs:
        assert line.startswith("RUN /src/deploy/install-locked python /src/"), line
    assert not any("--require-hashes" in line for line in runs)  # only through the script
    assert "pip install --no-deps --no-build-isolation /src" in dockerfile
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # A fresh venv installs every lock before anything else runs.
    makes = re.findall(r"^make [a-z -]+", ci, re.MULTILINE)
    assert makes[0] == "make check-locks", makes
    # CI runs the audit, and a known advisory fails it.
    assert re.search(r"^if ! make audit\b", ci, re.MULTILINE)
    assert "known vulnerabilit" in ci


# A stand-in Python for deploy/install-locked: its pip is 26.3, installs the installer's
# lock, and refuses any other lock as pip 23.2 refused requirements-dev.lock.
STUB_PYTHON = """#!/bin/sh
echo "$*" >> "$0.calls"
case "$*" in
  "-m pip --version") echo "pip 26.3 from /stub (python 3.11)" ;;
  *"-r ${INSTALLER_LOCK_REFUSED:-none}"*) echo "ERROR: no matching distribution" >&2; exit 1 ;;
  *installer.lock*) ;;
  *) echo "ERROR: In --require-hashes mode, all requirements must be pinned" >&2; exit 1 ;;
esac
"""


def run_install_locked(
    tmp_path: Path, *locks: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    python = tmp_path / "python"
    python.write_text(STUB_PYTHON, encoding="utf-8")
    python.chmod(0o755)
    result = subprocess.run(
        [str(INSTALL_LOCKED), str(python), *locks],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )
    calls = (tmp_path / "python.calls").read_text(encoding="utf-8").splitlines()
    return result, calls


def test_install_locked_installs_the_installer_first_then_says_what_to_run(
    tmp_path: Path,
) -> None:
    result, calls = run_install_locked(tmp_path, "requirements-dev.lock")
    assert result.returncode == 1
    # The locked installer first, with its hashes checked; then the lock, by that pip.
    installs = [call for call in calls if " install " in f" {call} "]
    assert installs[0].endswith(f"--require-hashes -r {INSTALLER_LOCK_PATH}")
    assert installs[1].endswith("--require-hashes -r requirements-dev.lock")
    assert "ERROR: In --require-hashes mode" in result.stderr  # pip's own error is kept
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("install-locked: pip 26.3 could not install requirements-dev.lock")
    assert "`make lock`" in last


def test_install_locked_names_the_pip_to_install_when_the_installer_fails(
    tmp_path: Path,
) -> None:
    result, calls = run_install_locked(
        tmp_path,
        "requirements-dev.lock",
        env={"INSTALLER_LOCK_REFUSED": INSTALLER_LOCK_PATH},
    )
    assert result.returncode == 1
    assert not any("requirements-dev.lock" in call for call in calls)  # stopped before it
    locked_pip = entries(INSTALLER_LOCK)["pip"][0]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("install-locked: pip 26.3 of ")
    assert f"install pip=={locked_pip} into that environment by hand" in last
