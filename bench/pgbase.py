"""The benchmark's own PostgreSQL database, row counting, and the raw psycopg baseline."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.procs import CpuMeter

RAW_TABLE = "bench_permits_raw"


@dataclass(frozen=True, slots=True)
class PgTarget:
    """Where the benchmark's database lives; it is created and dropped by the run."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    dbname: str = "permit_bench"

    def conninfo(self, dbname: str | None = None) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname or self.dbname}"

    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{self.dbname}"


def recreate_database(target: PgTarget) -> None:
    """Drop and create the benchmark database (FORCE ends sessions left by a killed run)."""
    with psycopg.connect(target.conninfo("postgres"), autocommit=True) as conn:
        name = sql.Identifier(target.dbname)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def drop_database(target: PgTarget) -> None:
    with psycopg.connect(target.conninfo("postgres"), autocommit=True) as conn:
        name = sql.Identifier(target.dbname)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def postmaster_pid(conninfo: str) -> int | None:
    """PostgreSQL's postmaster pid (superuser only), to count the server's CPU."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        text = Path(str(row[0] if row else ""), "postmaster.pid").read_text()
        return int(text.split()[0])
    except (psycopg.Error, OSError, ValueError, IndexError):
        return None


def count_rows(conn: psycopg.Connection[Any], table: str = "permits") -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0


def truncate(conn: psycopg.Connection[Any], tables: Sequence[str]) -> None:
    """Empty tables between phases, so each drain starts from the same state."""
    idents = sql.SQL(", ").join(sql.Identifier(t) for t in tables)
    conn.execute(sql.SQL("TRUNCATE {}").format(idents))


def insertable_columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """Columns a writer supplies: not serial/identity/generated (the database fills those)."""
    rows = conn.execute(
        """
        SELECT column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = %s
          AND coalesce(column_default, '') NOT LIKE 'nextval(%%'
          AND is_identity = 'NO' AND is_generated = 'NEVER'
        ORDER BY ordinal_position
        """,
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


@dataclass(frozen=True, slots=True)
class RawResult:
    rows: int
    seconds: float
    pg_cpu_us: float  # PostgreSQL's CPU per row

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def raw_executemany_rate(conninfo: str, source: str = "permits", batch: int = 100) -> RawResult:
    """Re-insert source's rows into a copy of its table with plain psycopg executemany.

    The copy has the same columns, defaults, checks and indexes (LIKE ... INCLUDING ALL);
    PostgreSQL never copies foreign keys that way, so the baseline skips their checks.
    Rows are read before the clock starts; one transaction per `batch` rows.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        columns = insertable_columns(conn, source)
        raw, src = sql.Identifier(RAW_TABLE), sql.Identifier(source)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(raw))
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(raw, src))
        col_list = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        rows = conn.execute(sql.SQL("SELECT {} FROM {}").format(col_list, src)).fetchall()
        insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            raw, col_list, sql.SQL(", ").join(sql.Placeholder() * len(columns))
        )
        postmaster = postmaster_pid(conninfo)
        meter = CpuMeter([postmaster] if postmaster else [])
        started = time.perf_counter()
        with conn.cursor() as cur:
            for offset in range(0, len(rows), batch):
                with conn.transaction():
                    cur.executemany(insert, rows[offset : offset + batch])
        elapsed = time.perf_counter() - started
        pg_cpu_us = 1e6 * meter.used() / max(len(rows), 1)
        conn.execute(sql.SQL("DROP TABLE {}").format(raw))
    return RawResult(len(rows), elapsed, pg_cpu_us)
