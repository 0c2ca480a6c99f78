"""The projection file: a DuckDB database written by one runner, one transaction per batch.

A batch's rows and the offsets after it are written in one transaction, in this order:

1. rows of every table (``INSERT``), typed columns filled from column lists in one
   statement per table (``unnest``): row-by-row inserts (``executemany``) measured
   about sixty times slower;
2. the folds of the chains the batch moved (``INSERT OR REPLACE`` by CoI);
3. the next offset of every partition the batch read (``INSERT OR REPLACE``);
4. ``COMMIT``. A crash before it leaves none of the batch in the file; after it, all.

DuckDB lets one process write a file and no one else open it meanwhile; analysts read
published copies instead (see :mod:`pcvhub.projections.publish`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from pcvhub.projections import schema, views
from pcvhub.projections.lifecycle import TherapyProgress
from pcvhub.projections.projector import RowBatch, from_us
from pcvhub.projections.schema import (
    ENVELOPES,
    OFFSETS,
    RECORD_COLUMNS,
    THERAPY_PROGRESS,
    TRUST_ANCHOR,
    Table,
    all_tables,
)
from pcvhub.trust.registry import REGISTRY_COI, REGISTRY_EVENTS, KeyRegistry


class ProjectionFileBusy(RuntimeError):
    """Another process holds the file (DuckDB allows one writer and no reader beside it)."""


def connect(path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open a projection file; UTC so that timestamps print the same for everyone."""
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise ProjectionFileBusy(
                f"{path} is open in another process (a running `pcvhub project`?): DuckDB "
                "allows one writer and no reader beside it; query a published snapshot "
                "(`pcvhub project --publish-dir`), or stop the runner first") from exc
        raise
    con.execute("SET TimeZone = 'UTC'")
    return con


def _insert_sql(table: Table) -> str:
    casts = ", ".join(f"unnest(${i}::{c.sql_type}[])"
                      for i, c in enumerate(table.columns, start=1))
    verb = "INSERT OR REPLACE" if table.primary_key else "INSERT"
    return f"{verb} INTO {table.qualified} SELECT {casts}"


class ProjectionStore:
    """One projection file, opened for writing (creating its tables if it is new).

    :param meta: what the file must be built for (``topic_prefix``, ``trust_anchor``); a
        file built for another deployment or anchor, or by another table layout, is
        refused (``LayoutError``).
    :param anchor: the registry of the trust anchor, recorded in a new file.
    """

    def __init__(self, path: Path, meta: dict[str, str],
                 anchor: KeyRegistry | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = connect(self.path, read_only=False)
        self._tables = {t.name: t for t in all_tables()}
        self._sql = {name: _insert_sql(t) for name, t in self._tables.items()}
        fresh = not self.con.execute(
            "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = ?",
            [schema.SCHEMA]).fetchall()[0][0]
        self.con.execute("BEGIN")
        try:
            if fresh:
                schema.create(self.con, meta)
                if anchor is not None:
                    self._record_anchor(anchor)
            else:
                schema.check(self.con, meta)
            views.install(self.con)  # views follow the code, whatever built the tables
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            self.con.close()
            raise

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> ProjectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading what the file already holds --------------------------------------------

    def offsets(self) -> dict[tuple[str, int], int]:
        rows = self.con.execute(
            f"SELECT topic, partition, next_offset FROM {OFFSETS.qualified}").fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def progress(self) -> dict[str, TherapyProgress]:
        rows = self.con.execute(
            f"SELECT coi, chain_seq, head, stage, state FROM {THERAPY_PROGRESS.qualified}"
        ).fetchall()
        return {coi: TherapyProgress.restore(seq, head, stage, state)
                for coi, seq, head, stage, state in rows}

    def fold_registry(self, registry: KeyRegistry) -> KeyRegistry:
        """Fold the registry events already projected (admitted by the log reader) into
        ``registry``, in log order, as the verifier folded them when it read them."""
        events: list[tuple[int, int, str, str, dict[str, Any]]] = []
        for event_type in sorted(REGISTRY_EVENTS):
            table = schema.payload_table(event_type)
            fields = [c.name for c in table.columns[len(RECORD_COLUMNS):]]
            rows = self.con.execute(
                f"SELECT t.log_partition, t.log_offset, t.event_id, "
                f"{', '.join('t.' + f for f in fields)} "
                f"FROM {table.qualified} t JOIN {ENVELOPES.qualified} e "
                "USING (log_topic, log_partition, log_offset) "
                "WHERE t.log_topic = 'events' AND t.coi = ? "
                "AND e.signature_check = 'VERIFIED'", [REGISTRY_COI]).fetchall()
            events += [(row[0], row[1], event_type, row[2],
                        dict(zip(fields, row[3:], strict=True))) for row in rows]
        for _, _, event_type, event_id, payload in sorted(events, key=lambda e: e[:2]):
            registry.apply_event(event_id, event_type, payload)
        return registry

    # -- writing a batch ------------------------------------------------------------------

    def write(self, batch: RowBatch) -> None:
        """Rows, folds and offsets of one batch in one transaction (see the module doc)."""
        self.con.execute("BEGIN")
        try:
            for name in sorted(batch.rows):
                self._insert(name, batch.rows[name])
            if batch.progress:
                self._insert(THERAPY_PROGRESS.name, [
                    (coi, p.chain_seq, p.head, p.stage.value, p.state_json())
                    for coi, p in sorted(batch.progress.items())])
            if batch.offsets:
                self._insert(OFFSETS.name, [
                    (topic, partition, offset)
                    for (topic, partition), offset in sorted(batch.offsets.items())])
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def _insert(self, name: str, rows: list[tuple[Any, ...]]) -> None:
        columns = [list(column) for column in zip(*rows, strict=True)]
        self.con.execute(self._sql[name], columns)

    def _record_anchor(self, anchor: KeyRegistry) -> None:
        rows = []
        for actor in sorted(anchor.actors.values(), key=lambda a: a.actor_id):
            for (actor_id, key_id), key in sorted(anchor.keys.items()):
                if actor_id == actor.actor_id:
                    rows.append((actor.actor_id, actor.display_name, sorted(actor.roles),
                                 actor.site_id, key_id, from_us(key.valid_from_us)))
        if rows:
            self._insert(TRUST_ANCHOR.name, rows)

