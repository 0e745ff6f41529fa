"""`zones import`: zones and aliases from a CSV file; idempotent, reporting what it added.

The file has a header row naming its columns: `name` (required), `aliases` (optional,
several separated by `;`) and `code` (optional). A second import of the same file adds
nothing. Conflicts (an alias that is another zone's name or alias, a code another zone
holds, a code that differs from the zone's) are all reported and nothing is added:
a half-applied file is harder to reason about than a refused one.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.errors import ZoneConflictError
from shared.models import Zone, ZoneAlias
from shared.zones import CODE_MAX_CHARS, begin_change, checked_name

COLUMNS = ("name", "aliases", "code")
ALIAS_SEPARATOR = ";"


@dataclass(frozen=True, slots=True)
class ZoneEntry:
    """One row of the file."""

    line: int
    name: str
    aliases: tuple[str, ...] = ()
    code: str | None = None


@dataclass(slots=True)
class ImportReport:
    added_zones: list[str] = field(default_factory=list)
    added_aliases: list[tuple[str, str]] = field(default_factory=list)  # (zone, alias)
    unchanged: int = 0  # rows that added nothing
    reconcile: list[str] = field(default_factory=list)  # normalised names now matching


def read_zone_csv(lines: Iterable[str]) -> list[ZoneEntry]:
    """Parse the file's rows; a bad header or a row without a name raises ZoneConflictError."""
    reader = csv.DictReader(lines)
    header = [(column or "").strip().lower() for column in reader.fieldnames or ()]
    if "name" not in header:
        raise ZoneConflictError("the first row must be a header with a name column")
    if unknown := sorted(set(header) - set(COLUMNS)):
        raise ZoneConflictError(
            f"unknown column(s) {', '.join(unknown)}; the columns are {', '.join(COLUMNS)}"
        )
    reader.fieldnames = header
    entries: list[ZoneEntry] = []
    for row in reader:
        cells = {key: (value or "").strip() for key, value in row.items() if key is not None}
        if not any(cells.values()):
            continue  # blank line
        if not cells.get("name"):
            raise ZoneConflictError(f"line {reader.line_num}: the name is empty")
        aliases = tuple(
            alias.strip()
            for alias in cells.get("aliases", "").split(ALIAS_SEPARATOR)
            if alias.strip()
        )
        entries.append(
            ZoneEntry(reader.line_num, cells["name"], aliases, cells.get("code") or None)
        )
    return entries


def import_zones(session: Session, entries: Sequence[ZoneEntry]) -> ImportReport:
    """Add what ``entries`` has that the catalog lacks; raise on any conflict, adding nothing.

    Runs in the caller's transaction: on a conflict the caller's rollback undoes the rows
    already added.
    """
    begin_change(session)
    zones = {zone.name_normalized: zone for zone in session.scalars(select(Zone))}
    codes = {zone.code: zone for zone in zones.values() if zone.code}
    owners = {
        alias: zone
        for alias, zone in session.execute(
            select(ZoneAlias.alias_normalized, Zone).join(Zone, ZoneAlias.zone_id == Zone.id)
        )
    }
    report = ImportReport()
    conflicts: list[str] = []
    for entry in entries:
        before = len(report.added_zones) + len(report.added_aliases)
        try:
            zone = _zone(session, entry, zones, codes, owners, report)
            for alias in entry.aliases:
                _alias(session, alias, zone, zones, owners, report)
        except ZoneConflictError as exc:
            conflicts.append(f"line {entry.line}: {exc}")
            continue
        if len(report.added_zones) + len(report.added_aliases) == before:
            report.unchanged += 1
    if conflicts:
        raise ZoneConflictError(
            f"nothing imported; {len(conflicts)} conflict(s): " + "; ".join(conflicts)
        )
    return report


def _zone(
    session: Session,
    entry: ZoneEntry,
    zones: dict[str, Zone],
    codes: dict[str, Zone],
    owners: dict[str, Zone],
    report: ImportReport,
) -> Zone:
    normalized = checked_name(entry.name)
    if (owner := owners.get(normalized)) is not None:
        raise ZoneConflictError(f"{entry.name!r} is an alias of zone {owner.name!r}")
    zone = zones.get(normalized)
    if zone is not None:
        if entry.code is not None and zone.code != entry.code:
            raise ZoneConflictError(
                f"zone {zone.name!r} has code {zone.code!r}, the file says {entry.code!r}"
            )
        return zone
    if entry.code is not None and len(entry.code) > CODE_MAX_CHARS:
        raise ZoneConflictError(f"a zone code is at most {CODE_MAX_CHARS} characters")
    if entry.code is not None and (holder := codes.get(entry.code)) is not None:
        raise ZoneConflictError(f"code {entry.code!r} belongs to zone {holder.name!r}")
    zone = Zone(name=entry.name, name_normalized=normalized, code=entry.code)
    session.add(zone)
    session.flush()  # its id, for its aliases
    zones[normalized] = zone
    if entry.code is not None:
        codes[entry.code] = zone
    report.added_zones.append(zone.name)
    report.reconcile.append(normalized)
    return zone


def _alias(
    session: Session,
    alias: str,
    zone: Zone,
    zones: dict[str, Zone],
    owners: dict[str, Zone],
    report: ImportReport,
) -> None:
    normalized = checked_name(alias)
    if normalized == zone.name_normalized or owners.get(normalized) is zone:
        return
    if (other := zones.get(normalized)) is not None:
        raise ZoneConflictError(f"alias {alias!r} is the name of zone {other.name!r}")
    if (owner := owners.get(normalized)) is not None:
        raise ZoneConflictError(f"{alias!r} is already an alias of zone {owner.name!r}")
    session.add(ZoneAlias(alias=alias, alias_normalized=normalized, zone_id=zone.id))
    owners[normalized] = zone
    report.added_aliases.append((zone.name, alias))
    report.reconcile.append(normalized)
