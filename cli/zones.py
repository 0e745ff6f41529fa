"""`permit-push zones`: zones, aliases, and the permits whose zone name matches none."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
from redis import Redis
from redis.exceptions import RedisError

from cli.checks import connect_redis, database_sessions
from shared.config import Settings
from shared.zone_import import import_zones, read_zone_csv
from shared.zones import (
    add_alias,
    add_zone,
    disconnected_names,
    enqueue_reconcile,
    list_zones,
    rename_zone,
)


@click.group()
def zones() -> None:
    """Parking zones, their aliases, and the permits whose zone matches none.

    Adding a zone or an alias queues a reconcile job: the workers link the disconnected
    permits that now match within seconds. Matching is exact on the normalised name
    (case, outer and repeated white space ignored) or an alias; never fuzzy.
    """


@zones.command()
@click.argument("name")
@click.option("--code", help="The zone's code in other systems (unique).")
@click.pass_obj
def add(settings: Settings, name: str, code: str | None) -> None:
    """Add zone NAME."""
    redis = connect_redis(settings)  # checked before the change: its reconcile is queued after
    with database_sessions(settings) as sessions, sessions.begin() as session:
        zone = add_zone(session, name, code)
        label, normalized = _label(zone.name, zone.code), zone.name_normalized
    click.echo(f"added zone {label}")
    _reconcile_later(redis, settings, [normalized])


@zones.command()
@click.argument("name")
@click.argument("alias")
@click.pass_obj
def alias(settings: Settings, name: str, alias: str) -> None:
    """Make ALIAS another name of zone NAME."""
    redis = connect_redis(settings)
    with database_sessions(settings) as sessions, sessions.begin() as session:
        zone, added = add_alias(session, name, alias)
    if not added:
        click.echo(f"{alias!r} is already an alias of zone {zone.name!r}")
        return
    click.echo(f"added alias {alias!r} to zone {zone.name!r}")
    _reconcile_later(redis, settings, [alias])


@zones.command("list")
@click.pass_obj
def list_(settings: Settings) -> None:
    """List the zones with their codes and aliases."""
    with database_sessions(settings) as sessions, sessions() as session:
        listing = list_zones(session)
    if not listing:
        click.echo("no zones; add one with: permit-push zones add NAME")
        return
    click.echo(f"{'name':<30} {'code':<12} aliases")
    for zone in listing:
        click.echo(f"{zone.name:<30} {zone.code or '-':<12} {'; '.join(zone.aliases) or '-'}")


@zones.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def import_(settings: Settings, file: Path) -> None:
    """Add the zones and aliases of a CSV FILE that are not there yet.

    The header names the columns: name (required), aliases (several separated by ';'),
    code. Safe to run again: what exists already is left alone. On any conflict nothing
    is imported and every conflict is listed.
    """
    with file.open(encoding="utf-8-sig", newline="") as lines:
        entries = read_zone_csv(lines)
    redis = connect_redis(settings)
    with database_sessions(settings) as sessions, sessions.begin() as session:
        report = import_zones(session, entries)
    for name in report.added_zones:
        click.echo(f"added zone {name!r}")
    for zone, alias_ in report.added_aliases:
        click.echo(f"added alias {alias_!r} to zone {zone!r}")
    click.echo(
        f"{len(report.added_zones)} zone(s) and {len(report.added_aliases)} alias(es) added; "
        f"{report.unchanged} row(s) already there"
    )
    if report.reconcile:
        _reconcile_later(redis, settings, report.reconcile)


@zones.command()
@click.argument("old")
@click.argument("new")
@click.option(
    "--keep-old-name/--drop-old-name",
    default=True,
    show_default=True,
    help="Keep OLD as an alias, so meters still sending it stay linked.",
)
@click.pass_obj
def rename(settings: Settings, old: str, new: str, keep_old_name: bool) -> None:
    """Rename zone OLD to NEW; its permits stay linked."""
    redis = connect_redis(settings)
    with database_sessions(settings) as sessions, sessions.begin() as session:
        zone = rename_zone(session, old, new, keep_old_as_alias=keep_old_name)
        normalized = zone.name_normalized
    kept = f"; {old!r} is now an alias" if keep_old_name else ""
    click.echo(f"renamed zone {old!r} to {new!r}{kept}")
    _reconcile_later(redis, settings, [normalized])


@zones.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@click.pass_obj
def disconnected(settings: Settings, limit: int) -> None:
    """List zone names that match no zone, the most frequent first.

    "maybe" lists the zones spelt most alike: suggestions for you to judge, never
    applied. To link a name, add it as an alias: permit-push zones alias ZONE NAME.
    """
    with database_sessions(settings) as sessions, sessions() as session:
        report = disconnected_names(session, limit)
    if not report.names:
        click.echo("no disconnected permits")
        return
    click.echo(f"{'zone as sent':<30} {'permits':>9}  {'first seen':<16}  {'last seen':<16}  maybe")
    for name in report.names:
        click.echo(
            f"{name.sent_as!r:<30} {name.permits:>9}  {name.first_seen:%Y-%m-%d %H:%M}  "
            f"{name.last_seen:%Y-%m-%d %H:%M}  {', '.join(map(repr, name.suggestions)) or '-'}"
        )
    click.echo(
        f"{report.total_permits} disconnected permit(s) under {report.total_names} name(s)"
        + (f"; the first {limit} shown" if report.total_names > limit else "")
    )


@zones.command()
@click.argument("names", nargs=-1)
@click.pass_obj
def reconcile(settings: Settings, names: tuple[str, ...]) -> None:
    """Link the disconnected permits that match a zone now, here and now.

    With NAMES, only permits sent with those zone names. The workers do this by
    themselves after every change; this is for repairs (say, after a restore).
    """
    from worker.reconcile import reconcile as run_reconcile

    with database_sessions(settings) as sessions:
        result = run_reconcile(sessions, names or None)
    click.echo(f"linked {result.linked} permit(s) under {result.names} matching name(s)")


def _reconcile_later(redis: Redis, settings: Settings, names: Sequence[str]) -> None:
    try:
        job_id = enqueue_reconcile(redis, settings, names)
    except RedisError as exc:
        raise click.ClickException(
            f"the change is saved, but the reconcile job could not be queued ({exc}): "
            "run permit-push zones reconcile"
        ) from None
    click.echo(f"reconcile job {job_id} queued: the workers link matching permits")


def _label(name: str, code: str | None) -> str:
    return f"{name!r} (code {code})" if code else repr(name)
