"""Where the dashboard reads: a projection file, opened read-only for one request at a time.

The file is one the projection runner wrote (``pcvhub project``), a rebuilt one
(``pcvhub projections rebuild --out FILE``) or a whole copy of one: the dashboard queries
the documented views of :mod:`pcvhub.projections.views` and, for the identifiers of the
chain of identity that no view exposes yet, a few columns of the ``log`` tables (see
:mod:`pcvhub.web.identity`). It never writes.

Why a connection per request rather than one held open: DuckDB lets one process write a
file and nobody else open it meanwhile. A dashboard holding the file would stop a runner
from starting on it, and it would never see a copy replaced by rename (as published
copies are). A read-only open costs about 20 ms, which a person clicking does not notice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from pcvhub.projections.store import ProjectionFileBusy, connect

#: views and table macros the pages query (all defined in pcvhub.projections.views)
VIEWS = ("case_status", "audit_trail", "alerts", "rejections", "inventory",
         "inventory_by_site", "inventory_lots", "billing_claims", "receivables_ageing",
         "qc_results", "turnaround", "turnaround_by_site")
MACROS = ("audit",)
#: log tables the chain of identity reads identifiers from (see pcvhub.web.identity)
LOG_TABLES = ("patient_enrolled", "sample_collected", "sample_received",
              "custody_transferred", "sequencing_completed", "variant_calls_produced",
              "neoantigen_design_produced", "design_approved", "manufacturing_started",
              "batch_dispositioned", "shipment_dispatched", "shipment_received",
              "inventory_placed", "dose_dispensed", "temperature_excursion", "dose_expired",
              "dose_destroyed", "identity_verified", "dose_administered")


class DashboardError(RuntimeError):
    """The file cannot be served: missing, busy, or not a projection file."""


Row = dict[str, Any]


class Reader:
    """One read-only connection, for the queries of one request."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def rows(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> list[Row]:
        cursor = self.con.execute(sql, params or [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def row(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> Row | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def value(self, sql: str, params: list[Any] | None = None) -> Any:
        """The first column of the first row (a query that always returns one row)."""
        row = self.con.execute(sql, params or []).fetchone()
        assert row is not None, sql
        return row[0]


class ProjectionSource:
    """A projection file the dashboard serves; checked once when the dashboard starts."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with self.read() as reader:
            missing = self._missing(reader)
        if missing:
            raise DashboardError(
                f"{self.path} is not a projection file (it lacks {', '.join(missing)}): "
                "serve the file `pcvhub project` writes, or one made by "
                "`pcvhub projections rebuild --out FILE`")

    @contextmanager
    def read(self) -> Iterator[Reader]:
        """A read-only connection, closed (and the file's lock released) on exit."""
        if not self.path.is_file():
            raise DashboardError(
                f"projection file {self.path} does not exist: run `pcvhub project` (or "
                "`pcvhub projections rebuild --out FILE`) to build one")
        try:
            con = connect(self.path, read_only=True)
        except ProjectionFileBusy as exc:
            raise DashboardError(str(exc)) from exc
        except duckdb.Error as exc:
            raise DashboardError(f"{self.path} cannot be opened as a DuckDB file: {exc}") from exc
        try:
            yield Reader(con)
        finally:
            con.close()

    def _missing(self, reader: Reader) -> list[str]:
        views = {r["view_name"] for r in reader.rows(
            "SELECT view_name FROM duckdb_views() WHERE schema_name = 'main'")}
        macros = {r["function_name"] for r in reader.rows(
            "SELECT function_name FROM duckdb_functions() WHERE function_type = 'table_macro'")}
        tables = {r["table_name"] for r in reader.rows(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'log'")}
        return ([f"view {v}" for v in VIEWS if v not in views]
                + [f"macro {m}()" for m in MACROS if m not in macros]
                + [f"table log.{t}" for t in LOG_TABLES if t not in tables])
