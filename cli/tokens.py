"""`permit-push tokens`: API clients and their tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from sqlalchemy.orm import Session

from cli.checks import connect_redis, database_sessions
from shared.clients import (
    change_and_publish,
    create_client,
    list_clients,
    revoke_client,
    set_rate_limit,
)
from shared.config import Settings
from shared.constants import PERMIT_TYPES, TOKEN_SCOPES

T = TypeVar("T")


@click.group()
def tokens() -> None:
    """API clients and their tokens."""


@tokens.command()
@click.option("--name", required=True, help="Who pushes with this token (unique).")
@click.option(
    "--permit-type",
    type=click.Choice(PERMIT_TYPES),
    default="Standard",
    show_default=True,
    help="Type given to this client's permits (the push carries none).",
)
@click.option(
    "--scope",
    type=click.Choice(TOKEN_SCOPES),
    default="push",
    show_default=True,
    help="push: pushes, updates, deletes, reads its own permits; "
    "enforcement: looks up any plate, cannot push.",
)
@click.pass_obj
def create(settings: Settings, name: str, permit_type: str, scope: str) -> None:
    """Create an API client; its token is printed once, on the last line."""
    token = _change_and_publish(settings, lambda s: create_client(s, name, permit_type, scope))
    click.echo(
        f"created API client {name!r} ({permit_type}, scope {scope}); its token, shown only once:",
        err=True,
    )
    click.echo(token)


@tokens.command("list")
@click.pass_obj
def list_(settings: Settings) -> None:
    """List API clients (tokens are never shown again)."""
    with database_sessions(settings) as sessions, sessions() as session:
        clients = list_clients(session)
    if not clients:
        click.echo("no API clients; create one with: permit-push tokens create --name NAME")
        return
    click.echo(f"{'name':<30} {'permit type':<12} {'scope':<12} {'active':<7} created")
    for client in clients:
        active = "yes" if client.active else "no"
        created = f"{client.created_at:%Y-%m-%d %H:%M}"
        click.echo(
            f"{client.name:<30} {client.permit_type:<12} {client.scope:<12} {active:<7} {created}"
        )


@tokens.command()
@click.argument("name")
@click.pass_obj
def revoke(settings: Settings, name: str) -> None:
    """Revoke a client's token; receivers refuse it within seconds."""
    _change_and_publish(settings, lambda s: revoke_client(s, name))
    click.echo(f"revoked API client {name!r}")


@tokens.command()
@click.argument("name")
@click.option("--per-s", type=float, help="Sustained requests (permits) a second; 0: no limit.")
@click.option("--burst", type=click.IntRange(min=1), help="Requests it may send at once.")
@click.pass_obj
def limit(settings: Settings, name: str, per_s: float | None, burst: int | None) -> None:
    """Set a client's rate limit; without options, back to RATE_LIMIT_PER_S/_BURST."""
    _change_and_publish(settings, lambda s: set_rate_limit(s, name, per_s, burst))
    shown = "the default" if per_s is None and burst is None else f"{per_s}/s, burst {burst}"
    click.echo(f"rate limit of API client {name!r}: {shown} (receivers apply it within seconds)")


def _change_and_publish(settings: Settings, change: Callable[[Session], T]) -> T:
    """Apply ``change`` to the clients, commit, then publish the token set.

    Redis is checked first: a new token must work, and a revoked one stop, at once.
    The order and the lock that keeps a worker's republish from undoing the change are in
    shared/clients.py.
    """
    redis = connect_redis(settings)
    with database_sessions(settings) as sessions:
        return change_and_publish(sessions, redis, change)
