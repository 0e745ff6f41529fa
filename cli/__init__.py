"""The `permit-push` command: one entry point for the receiver, the workers and operators.

Each command group lives in its own module; this one only assembles them and turns
expected failures (bad settings, services away) into one line and a non-zero exit.
"""

from __future__ import annotations

from typing import Any

import click
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from cli import db, dev, failed, run, status, tokens, zones
from shared.config import Settings
from shared.errors import PermitPushError


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PermitPushError as exc:
            raise click.ClickException(str(exc)) from None
        except RedisError as exc:
            raise click.ClickException(f"Redis: {first_line(exc)}") from None
        except SQLAlchemyError as exc:
            raise click.ClickException(
                f"database: {first_line(getattr(exc, 'orig', exc))}"
            ) from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@click.group(cls=_Commands)
@click.pass_context
def main(ctx: click.Context) -> None:
    """permit-push: accept pushed parking permits and store them.

    Settings come from environment variables (REDIS_URL, DATABASE_URL, ...).
    """
    ctx.obj = Settings.from_env()


for command in (
    *run.COMMANDS,
    dev.dev,
    db.db,
    tokens.tokens,
    zones.zones,
    failed.failed,
    status.status,
):
    main.add_command(command)
