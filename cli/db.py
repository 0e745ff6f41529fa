"""`permit-push db`: schema migrations."""

from __future__ import annotations

import click

from cli.checks import require_database
from shared.config import Settings
from shared.db import make_engine, upgrade_database


@click.group()
def db() -> None:
    """Database schema."""


@db.command()
@click.option("--revision", default="head", show_default=True)
@click.pass_obj
def upgrade(settings: Settings, revision: str) -> None:
    """Run the migrations (safe to run again)."""
    engine = make_engine(settings)
    require_database(engine)
    upgrade_database(engine, revision)
    click.echo(f"database at {engine.url.render_as_string(hide_password=True)} is up to date")
