"""A digest of every projection table: two files with the same digest hold the same rows.

The digest is SHA-256 over, for each table of schema ``log`` in name order: the table's
name, its column names and types, then every row in the table's key order (log position
for records, CoI for folds, topic and partition for offsets), each row as the Python
``repr`` of its values with timestamps as epoch microseconds and decimals as text, so
that neither the time zone of the session nor DuckDB's text rendering of a type can
change it. Views are not hashed: they are SQL over these tables.

Because rows are pure functions of the log, a file rebuilt from the log and the file a
runner kept live through crashes have the same digest once both have read the same
offsets (the offsets table is hashed too).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pcvhub.projections.schema import Table, all_tables, check_layout
from pcvhub.projections.store import connect

CHUNK = 10_000


@dataclass(frozen=True)
class TableDigest:
    name: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class Digest:
    """The file's digest and the digest and row count of each table."""

    sha256: str
    tables: tuple[TableDigest, ...]

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def _expression(column_name: str, sql_type: str) -> str:
    if sql_type == "TIMESTAMPTZ":
        return f"epoch_us({column_name})"
    if sql_type.startswith("DECIMAL") or sql_type == "DATE":
        return f"CAST({column_name} AS VARCHAR)"
    return column_name


def table_digest(con: duckdb.DuckDBPyConnection, table: Table) -> TableDigest:
    h = hashlib.sha256()
    h.update(repr((table.qualified, [(c.name, c.sql_type) for c in table.columns])).encode())
    select = ", ".join(_expression(c.name, c.sql_type) for c in table.columns)
    cursor = con.execute(
        f"SELECT {select} FROM {table.qualified} ORDER BY {', '.join(table.order_by)}")
    rows = 0
    while chunk := cursor.fetchmany(CHUNK):
        rows += len(chunk)
        for row in chunk:
            h.update(repr(row).encode())
            h.update(b"\n")
    return TableDigest(table.name, rows, h.hexdigest())


def digest_connection(con: duckdb.DuckDBPyConnection) -> Digest:
    tables = tuple(table_digest(con, t) for t in sorted(all_tables(), key=lambda t: t.name))
    overall = hashlib.sha256()
    for t in tables:
        overall.update(f"{t.name} {t.rows} {t.sha256}\n".encode())
    return Digest(overall.hexdigest(), tables)


def digest_file(path: Path) -> Digest:
    """Digest of a projection file, opened read-only (it must not be open for writing)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no projection file at {path}")
    con = connect(Path(path), read_only=True)
    try:
        check_layout(con)
        return digest_connection(con)
    finally:
        con.close()
