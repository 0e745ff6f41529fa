"""The CLI's failure modes: one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli import main


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["db", "upgrade"], {"DATABASE_URL": "nonsense"}, "DATABASE_URL"),
        (
            ["db", "upgrade"],
            {"DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"},
            "database",
        ),
        (["tokens", "create", "--name", "x"], {"REDIS_URL": "http://wrong"}, "REDIS_URL"),
        (["tokens", "create", "--name", "x"], {"REDIS_URL": "redis://127.0.0.1:1/0"}, "Redis"),
        (["tokens", "list"], {"REDIS_URL": "redis://host:port/0"}, "REDIS_URL"),
        (["tokens", "list"], {"DATABASE_URL": "sqlite:////nonexistent/dir/x.db"}, "database"),
        (["serve"], {"REDIS_URL": "redis://127.0.0.1:1/0"}, "cannot reach Redis"),
        (["worker"], {"REDIS_URL": "redis://127.0.0.1:1/0"}, "cannot reach Redis"),
        (["serve"], {"BATCH_WINDOW_MS": "soon"}, "BATCH_WINDOW_MS"),
    ],
)
def test_bad_settings_and_unreachable_services_fail_in_one_line(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    result = run(*args, **env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and expected in lines[0]


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for args in (
        ["serve"],
        ["worker"],
        ["dev"],
        ["db", "upgrade"],
        ["tokens", "create"],
        ["tokens", "list"],
        ["tokens", "revoke"],
    ):
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
