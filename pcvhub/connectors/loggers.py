"""Logger uploads: the readings of temperature data loggers, from files put in a folder.

Couriers and sites download the data logger that travelled with a shipment (or the
monitor of a freezer) and drop the export, CSV or JSON, into a watched folder. Each upload
in it becomes one signed ``TemperatureLogRecorded`` on ``<prefix>.ingress.loggers``; the
hub, not the uploader, judges the readings against the therapy type's storage range and
quarantines the items on an excursion (``pcvhub.schemas.specifications.storage_excursion``
in the gatekeeper's case fold). The connector waits for the gatekeeper's verdict on each
upload and writes a result file that says what became of it.

Entry point (what ``pcvhub serve --logger-drop FOLDER`` runs)::

    await LoggerDrop.serve(settings, folder, stop_event)   # actor coldchain-loggers

The connector's actor is registered with role CONNECTOR, e.g. ``pcvhub keys new
coldchain-loggers --role CONNECTOR --site COLDCHAIN --publish``; it signs as the Kafka
principal ``connector-loggers``, which may write ``ingress.loggers`` only.

Files are ``NAME.csv`` or ``NAME.json``, read as the MES drop's are (:func:`.mes.
read_drop_file`: UTF-8, a CSV header line, or a JSON list of objects or ``{"records":
[...]}``), watched and moved as every drop folder's are (:mod:`.drop_folder`).

Input: one reading per CSV row or JSON object, with the columns (keys)

=============  ==============================================================================
``coi``        the therapy's chain-of-identity id (check character included)
``logger_id``  the data logger or monitored freezer
``item_ids``   the samples, batches or doses the logger was with, separated by ``;`` (in
               JSON also a list of strings)
``shipment_id``  the shipment it travelled in (optional)
``at``         when the reading was taken: ISO 8601 with a UTC offset
``celsius``    the temperature read (a number; in JSON also a number)
=============  ==============================================================================

The rows naming the same therapy, logger, items and shipment are one upload, its readings
in file order; its ``occurred_at`` is the time of its last reading, its ``source_ref`` the
file's name and SHA-256.

Guarantees:

* No upload is judged on part of a download: an upload with any bad row (a reading
  without a time, a temperature that is no number, readings out of time order) is refused
  whole, naming the file, every bad row (its number and CSV line) and column, with its
  rows' text on the rejected topic; the other uploads of the file go on. A row that does
  not say whose reading it is (no valid therapy, logger or items) is refused on its own.
* Re-dropping a file applies nothing twice: an upload's event id is derived from the
  file's SHA-256 and the upload's first row, and an upload already on the canonical log is
  reported as ``already-accepted``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any

from pcvhub.connectors.core import EventRequest
from pcvhub.connectors.drop_folder import DropConnector, FileResult
from pcvhub.connectors.identity import deterministic_event_id
from pcvhub.connectors.mes import (
    RULE,
    SUFFIXES,
    DropFile,
    SourceRow,
    UnreadableFile,
    cell_text,
    cell_time,
    json_kind,
    read_drop_file,
)
from pcvhub.connectors.outcome import Outcome, Problem
from pcvhub.ids import is_valid_coi

__all__ = ["LOGGER_COLUMNS", "LoggerDrop", "Upload", "read_uploads"]

#: the columns of a logger export (see the module doc)
LOGGER_COLUMNS = ("coi", "logger_id", "item_ids", "shipment_id", "at", "celsius")
ABSOLUTE_ZERO_C = -273.15

#: what makes rows one upload: therapy, logger, items, shipment
UploadKey = tuple[str, str, tuple[str, ...], str | None]


@dataclass
class Upload:
    """The readings of one logger for one therapy's items, as read from a file."""

    coi: str
    logger_id: str
    item_ids: tuple[str, ...]
    shipment_id: str | None
    rows: list[SourceRow] = field(default_factory=list)
    readings: list[tuple[int, float]] = field(default_factory=list)  # (µs, °C), file order
    last_read: SourceRow | None = None  # the row of the latest reading kept
    problems: list[tuple[SourceRow, Problem]] = field(default_factory=list)

    @property
    def where(self) -> str:
        first, last = self.rows[0], self.rows[-1]
        rows = f"row {first.row}" if first is last else f"rows {first.row}-{last.row}"
        if first.line is not None:
            rows += f" (line {first.line})" if first is last else \
                f" (lines {first.line}-{last.line})"
        return rows


def read_uploads(drop: DropFile) -> tuple[list[Upload], list[tuple[SourceRow, list[Problem]]]]:
    """The uploads of a file, in the order they first appear, and the rows that name no
    upload (no valid therapy, logger or items) with their problems."""
    uploads: dict[UploadKey, Upload] = {}
    loose: list[tuple[SourceRow, list[Problem]]] = []
    for row in drop.rows:
        key, at, celsius, problems = _reading(row)
        if key is None:
            loose.append((row, problems))
            continue
        upload = uploads.setdefault(key, Upload(*key))
        if at is not None and upload.last_read is not None and at < upload.readings[-1][0]:
            # the times as written: a time near year 1 has no UTC text of its own
            problems.append(Problem("at", f"{cell_text(row.values.get('at'))} is before the "
                                          f"reading of {upload.last_read.where} ("
                                          f"{cell_text(upload.last_read.values.get('at'))}); "
                                          "export the readings in the order the logger took "
                                          "them"))
        upload.rows.append(row)
        upload.problems += [(row, p) for p in problems]
        if at is not None and celsius is not None and not problems:
            upload.readings.append((at, celsius))
            upload.last_read = row
    return list(uploads.values()), loose


def _reading(row: SourceRow) -> tuple[UploadKey | None, int | None, float | None,
                                      list[Problem]]:
    """Whose reading a row is (None: it does not say), its time and temperature, and every
    problem found in it."""
    problems = list(row.problems)
    values = row.values
    named = len(problems)
    coi = cell_text(values.get("coi"))
    if not coi:
        problems.append(Problem("coi", "is missing; every reading names its therapy's "
                                       "chain-of-identity id"))
    elif not is_valid_coi(coi):
        problems.append(Problem("coi", f"{coi!r} is not a chain-of-identity id (or its check "
                                       "character is wrong: a mistyped id)"))
    logger_id = cell_text(values.get("logger_id"))
    if not logger_id:
        problems.append(Problem("logger_id", "is missing; name the data logger or freezer "
                                             "monitor the readings come from"))
    items = _item_ids(values.get("item_ids"), problems)
    shipment = values.get("shipment_id")
    if shipment is not None and not isinstance(shipment, str):
        problems.append(Problem("shipment_id", f"is a JSON {json_kind(shipment)}; write the "
                                               "shipment id as a string"))
    key: UploadKey | None = None
    if len(problems) == named and not row.problems:
        key = (coi, logger_id, items, cell_text(shipment) or None)
    at = cell_time(values.get("at"), problems, "at", "the reading")
    celsius = _celsius(values.get("celsius"), problems)
    unknown = sorted(k for k, v in values.items()
                     if k not in LOGGER_COLUMNS and v is not None
                     and (not isinstance(v, str) or v.strip()))
    if unknown:
        columns = f"(its columns: {', '.join(LOGGER_COLUMNS)})"
        problems.append(
            Problem(unknown[0], f"is not a column of a logger export {columns}")
            if unknown[0].strip() else
            Problem("(row)", f"holds a value under a column without a name {columns}"))
    return key, at, celsius, problems


def _item_ids(raw: Any, problems: list[Problem]) -> tuple[str, ...]:
    if isinstance(raw, list) and all(isinstance(i, str) for i in raw):
        items = [i.strip() for i in raw]
    elif isinstance(raw, str):
        items = [i.strip() for i in raw.split(";")]
    elif raw is None:
        items = []
    else:
        problems.append(Problem("item_ids", f"is a JSON {json_kind(raw)}; list the item ids "
                                            "as strings, or as one string separated by ;"))
        return ()
    items = [i for i in items if i]
    if not items:
        problems.append(Problem("item_ids", "is missing; name the samples, batches or doses "
                                            "the logger was with, separated by ;"))
    return tuple(items)


def _celsius(raw: Any, problems: list[Problem]) -> float | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        problems.append(Problem("celsius", "is required (the temperature read, in degrees "
                                           "Celsius)"))
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, Decimal, str)):
        problems.append(Problem("celsius", f"is a JSON {json_kind(raw)}, not a number"))
        return None
    try:
        number = Decimal(raw.strip()) if isinstance(raw, str) else Decimal(raw)
    except InvalidOperation:
        number = Decimal("NaN")
    # NaN, sNaN (which float() refuses), infinities, and numbers past a double's range
    value = float(number) if number.is_finite() else math.nan
    if not math.isfinite(value):
        problems.append(Problem("celsius", f"{raw!r} is not a number of degrees Celsius"))
        return None
    if value < ABSOLUTE_ZERO_C:
        problems.append(Problem("celsius", f"{raw} is below absolute zero "
                                           f"({ABSOLUTE_ZERO_C:g} C): no reading"))
        return None
    return value


class LoggerDrop(DropConnector):
    """The logger-upload connector: a drop folder whose uploads become signed
    ``TemperatureLogRecorded`` events through a ``Connector`` (source ``loggers``)."""

    source = "loggers"
    suffixes = SUFFIXES
    rule = RULE
    entries = "uploads"
    default_actor = "coldchain-loggers"
    default_site = "COLDCHAIN"

    def handle(self, path: Path, data: bytes) -> FileResult:
        try:
            drop = read_drop_file(path.name, data)
        except UnreadableFile as exc:
            return self.unreadable(path, data, "UNREADABLE_FILE",
                                   f"logger file {path.name} cannot be read: {exc}; none of "
                                   "its readings was applied: fix the export and drop it "
                                   "again", str(exc))
        uploads, loose = read_uploads(drop)
        endpoint = f"file://{path}"
        # in file order (an upload where its first row is), on the log as in the result
        work: list[tuple[int, Callable[[], dict[str, Any]]]] = [
            *((row.row, partial(self._loose, path.name, row, problems, endpoint))
              for row, problems in loose),
            *((upload.rows[0].row, partial(self._upload, drop, upload, endpoint))
              for upload in uploads)]
        entries = [entry() for _, entry in sorted(work, key=lambda w: w[0])]
        return FileResult(self.result(path.name, drop.sha256, entries))

    def _upload(self, drop: DropFile, upload: Upload, endpoint: str) -> dict[str, Any]:
        """Send one upload and wait for its verdict, or refuse it whole; its entry."""
        entry: dict[str, Any] = {
            "rows": [r.row for r in upload.rows], "coi": upload.coi,
            "logger_id": upload.logger_id, "item_ids": list(upload.item_ids),
            "shipment_id": upload.shipment_id, "readings": len(upload.readings)}
        if upload.problems:
            refusal = Outcome.refuse(
                self.rule, "INVALID_UPLOAD",
                f"file {drop.name}, logger {upload.logger_id} for therapy {upload.coi} "
                f"({upload.where}): " + "; ".join(f"{row.where}: {p}"
                                                  for row, p in upload.problems)
                + "; none of this upload's readings was applied (a part of a download is "
                "not judged): correct the file and drop it again",
                [Problem(f"{row.where} {p.where}", p.what) for row, p in upload.problems])
            original = b"".join(r.raw if r.raw.endswith(b"\n") else r.raw + b"\n"
                                for r in upload.rows)
            first, last = upload.rows[0].row, upload.rows[-1].row
            entry.update(refusal.as_result(refused_by="connector"),
                         problems=[{"row": row.row, "line": row.line, "column": p.where,
                                    "problem": p.what} for row, p in upload.problems],
                         refusal_event_id=self.refuse(
                             original, f"{endpoint}#rows={first}-{last}", refusal,
                             coi=upload.coi, event_type="TemperatureLogRecorded"))
            return entry
        event_id = deterministic_event_id("logger-drop", drop.sha256, str(upload.rows[0].row))
        entry.update(self.post(EventRequest("TemperatureLogRecorded", upload.coi, {
            "logger_id": upload.logger_id, "item_ids": list(upload.item_ids),
            "shipment_id": upload.shipment_id,
            "readings": [{"at": at, "celsius": c} for at, c in upload.readings],
            "source_ref": f"{drop.name} sha256:{drop.sha256}"},
            occurred_at_us=upload.readings[-1][0], event_id=event_id)))
        return entry

    def _loose(self, name: str, row: SourceRow, problems: list[Problem],
               endpoint: str) -> dict[str, Any]:
        """Refuse a row that names no upload; its entry."""
        refusal = Outcome.refuse(
            self.rule, "INVALID_ROW",
            f"file {name}, {row.where}: " + "; ".join(str(p) for p in problems)
            + "; the reading was not applied: correct it and drop the file again", problems)
        coi = cell_text(row.values.get("coi"))
        refusal_id = self.refuse(row.raw, f"{endpoint}#row={row.row}", refusal,
                                 coi=coi if is_valid_coi(coi) else None,
                                 event_type="TemperatureLogRecorded")
        return {"rows": [row.row], **refusal.as_result(refused_by="connector"),
                "problems": [{"row": row.row, "line": row.line, "column": p.where,
                              "problem": p.what} for p in problems],
                "refusal_event_id": refusal_id}
