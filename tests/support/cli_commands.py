"""Check that a deploy file's arguments are a real `permit-push` command line."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import click
import pytest

import cli


def check_command(where: str, args: Sequence[str]) -> None:
    """Fail unless `permit-push ARGS` parses (the command exists, its options are known),
    without running it."""
    group = cli.main
    assert isinstance(group, click.Group)
    command: click.Command = group
    path, rest = ["permit-push"], list(args)
    while isinstance(command, click.Group):
        assert rest, f"{where}: `{' '.join(path)}` needs a subcommand"
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"{where}: `{' '.join(path)}` has no command {rest[0]!r}"
        path.append(rest.pop(0))
        command = sub
    try:
        with command.make_context(" ".join(path), rest):
            pass
    except click.UsageError as exc:
        pytest.fail(f"{where}: `permit-push {shlex.join(args)}`: {exc.format_message()}")
