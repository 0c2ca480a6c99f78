"""MES / LIMS file drop: batch-record steps and QC results from files put in a folder.

A manufacturing execution system (MES) or a QC laboratory system (LIMS) exports
``ManufacturingStarted``, ``ManufacturingStepCompleted`` and ``QcResultRecorded`` records
as CSV or JSON files into a watched folder. Each record becomes one signed event on
``<prefix>.ingress.files``; the connector waits for the gatekeeper's verdict on it and
writes a result file that says, per row, what became of it.

Entry point (what ``pcvhub serve`` runs)::

    await FileDrop.serve(settings, folder, stop_event)   # actor mes-kobe, site MFG-KOBE

or, with a ``Connector`` (source ``files``) you opened and started yourself::

    await FileDrop(connector, folder).run(stop_event)   # until stop_event is set

The connector's actor must be registered with roles MANUFACTURER, QC_ANALYST and
CONNECTOR at the plant (``QcResultRecorded`` is accepted only from a QC analyst, signed
REVIEWED), e.g. ``pcvhub keys new mes-kobe --role MANUFACTURER --role QC_ANALYST
--role CONNECTOR --site MFG-KOBE --publish``.

Files are ``NAME.csv`` or ``NAME.json``, dropped, watched and moved as every drop folder's
are (:mod:`.drop_folder`): to ``done/`` once every row is accepted or refused with a
reason, to ``failed/`` if the file cannot be read at all (not UTF-8, not JSON, no CSV
header...); ``NAME.result.json`` beside it says what became of each row.

Input. One record per CSV row or JSON object; the column (key) names are the Avro field
names of the event (``pcvhub/schemas/avro/events``) plus three that every row has:
``event`` (ManufacturingStarted, ManufacturingStepCompleted or QcResultRecorded),
``coi`` (the therapy's chain-of-identity id, check character included) and
``occurred_at`` (ISO 8601 with a UTC offset). JSON is a list of objects or
``{"records": [...]}``; JSON values must have the field's type (a count is a number).

Guarantees:

* One bad row never blocks the good ones: each row is checked on its own and refused
  with its row number, column and what was wrong.
* Nothing is half-applied silently: the result file lists every row; refused rows also
  go to the rejected topic.
* Re-dropping a file applies nothing twice: a row's event id is derived from the file's
  SHA-256 and the row number, and rows already on the canonical log are reported as
  ``already-accepted`` instead of being sent again.
* Rows of one therapy are sent one at a time, each naming the chain head left by the one
  before (R3), so a row the gatekeeper refuses does not break the chain of the next.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pcvhub.connectors.core import EventRequest
from pcvhub.connectors.drop_folder import DropConnector, FileResult
from pcvhub.connectors.identity import deterministic_event_id
from pcvhub.connectors.outcome import Outcome, Problem, Status
from pcvhub.ids import is_valid_coi
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import (
    SchemaValidationError,
    encode_payload,
    to_us,
)
from pcvhub.schemas.envelope import SignatureMeaning
from pcvhub.schemas.policy import meaning_for

log = logging.getLogger(__name__)

#: Event types a MES / LIMS file may carry.
FILE_EVENTS = ("ManufacturingStarted", "ManufacturingStepCompleted", "QcResultRecorded")
#: Columns every row has besides the payload fields.
META_COLUMNS = ("event", "coi", "occurred_at")
SUFFIXES = (".csv", ".json")
#: The rule the connector's own refusals name on the rejected topic.
RULE = "FILE"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# "< 5", "<= 0.5", ">= 90", "> 1.2", "0.8 - 1.2" at the start of a specification
_LIMIT = re.compile(r"^\s*(<=|>=|<|>|≤|≥)\s*(-?\d+(?:\.\d+)?)")
_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:-|–|to)\s*(-?\d+(?:\.\d+)?)")


class UnreadableFile(ValueError):
    """The file as a whole cannot be read as records; it goes to ``failed/``."""


@dataclass(frozen=True)
class SourceRow:
    """One record as read from the file: ``row`` counts records from 1; ``line`` is the
    CSV line it started on (the header is line 1), None for JSON."""

    row: int
    values: Mapping[str, Any]
    raw: bytes  # the row's own text, kept for the rejected topic
    line: int | None = None
    problems: tuple[Problem, ...] = ()  # found while reading (a short CSV row, a non-object)

    @property
    def where(self) -> str:
        return f"row {self.row}" + (f" (line {self.line})" if self.line is not None else "")


@dataclass(frozen=True)
class FileRecord:
    """A row turned into an event to issue: type, therapy, time and the Avro payload."""

    row: SourceRow
    event_type: str
    coi: str
    occurred_at_us: int
    payload: dict[str, Any]

    @property
    def meaning(self) -> SignatureMeaning:
        return meaning_for(self.event_type)  # QC results are Part 11 REVIEWED signatures


@dataclass
class DropFile:
    """A dropped file read into rows; ``sha256`` identifies its exact content."""

    name: str
    sha256: str
    rows: list[SourceRow] = field(default_factory=list)


# -- reading a file --------------------------------------------------------------------

def read_drop_file(name: str, data: bytes) -> DropFile:
    """Rows of a CSV or JSON drop file; ``UnreadableFile`` if it has no rows to speak of."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"the file is not UTF-8 text: byte {exc.start} is "
                             f"0x{data[exc.start]:02x}; export it as UTF-8") from None
    suffix = name[name.rfind("."):].lower() if "." in name else ""
    if suffix == ".csv":
        rows = _csv_rows(text)
    elif suffix == ".json":
        rows = _json_rows(text)
    else:
        raise UnreadableFile(f"{name} is neither .csv nor .json; name the file after its format")
    if not rows:
        raise UnreadableFile("the file holds no records")
    return DropFile(name, digest, rows)


def _csv_rows(text: str) -> list[SourceRow]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise UnreadableFile("the CSV file is empty: it needs a header line") from None
    except csv.Error as exc:
        raise UnreadableFile(f"line 1 is not CSV: {exc}") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise UnreadableFile("line 1 (the header) names no columns")
    duplicates = sorted({h for h in header if h and header.count(h) > 1})
    if duplicates:
        raise UnreadableFile(f"the header names column(s) {', '.join(duplicates)} twice")
    lines = text.splitlines(keepends=True)
    rows: list[SourceRow] = []
    line = reader.line_num + 1
    try:
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue  # blank lines are layout, not records
            problems: tuple[Problem, ...] = ()
            if len(cells) != len(header):
                problems = (Problem("(row)", f"has {len(cells)} cells but the header has "
                                             f"{len(header)} columns"),)
            values = {h: c for h, c in zip(header, cells, strict=False) if h}
            raw = "".join(lines[start - 1:line - 1]).encode()
            rows.append(SourceRow(len(rows) + 1, values, raw, start, problems))
    except csv.Error as exc:
        raise UnreadableFile(f"line {reader.line_num} is not CSV: {exc}") from None
    return rows


def _json_rows(text: str) -> list[SourceRow]:
    try:
        document = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                             ) from None
    except ValueError:  # json.loads reads a whole number into an int, which has a limit
        raise UnreadableFile(f"not JSON this connector reads: a whole number has more than "
                             f"{sys.get_int_max_str_digits()} digits") from None
    except RecursionError:
        raise UnreadableFile("not JSON this connector reads: arrays or objects are nested "
                             "too deeply") from None
    if isinstance(document, dict) and "records" in document:
        document = document["records"]
    if not isinstance(document, list):
        raise UnreadableFile("the JSON document must be a list of records or an object "
                             "with a \"records\" list")
    rows = []
    for number, item in enumerate(document, start=1):
        # JSON may escape a lone surrogate ("\\ud800"), which UTF-8 cannot encode: keep
        # it as that same escape
        raw = json.dumps(item, default=str, ensure_ascii=False).encode("utf-8",
                                                                       "backslashreplace")
        if isinstance(item, dict):
            broken = _lone_surrogate(item)
            rows.append(SourceRow(number, item, raw, problems=(broken,) if broken else ()))
        else:
            rows.append(SourceRow(number, {}, raw, problems=(Problem(
                "(row)", f"is a JSON {json_kind(item)}, not an object"),)))
    return rows


def _lone_surrogate(record: dict[str, Any]) -> Problem | None:
    """A key or value holding half of a UTF-16 surrogate pair (JSON text may escape one,
    ``"\\ud800"``): no character, so no Avro string, nor the reason of a refusal, can
    carry it."""
    def broken(text: str) -> str | None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return ascii(text[exc.start])[1:-1]
        return None

    for key, value in record.items():
        half = broken(key)
        if half is not None:
            return Problem("(row)", f"a column name holds {half}, half of a UTF-16 surrogate "
                                    "pair, which is no character (a broken \\u escape)")
        half = broken(json.dumps(value, default=str, ensure_ascii=False))
        if half is not None:  # a column without a name is named by its row
            return Problem(key if key.strip() else "(row)",
                           f"holds {half}, half of a UTF-16 surrogate pair, which is no "
                           "character (a broken \\u escape)")
    return None


# -- checking a row --------------------------------------------------------------------

def check_row(row: SourceRow) -> FileRecord | Outcome:
    """The record a row describes, or the connector's refusal of it naming every problem
    found in it (not just the first), each at its column."""
    problems = list(row.problems)
    if problems:
        return _refusal(row, problems)
    values = row.values
    event_type = cell_text(values.get("event"))
    if event_type not in FILE_EVENTS:
        got = "is missing" if not event_type else f"is {event_type!r}"
        return _refusal(row, [Problem("event", f"{got}; a MES / LIMS file carries "
                                               f"{', '.join(FILE_EVENTS)}")])
    coi = cell_text(values.get("coi"))
    if not coi:
        problems.append(Problem("coi", "is missing; every row names its therapy's "
                                       "chain-of-identity id"))
    elif not is_valid_coi(coi):
        problems.append(Problem("coi", f"{coi!r} is not a chain-of-identity id (or its check "
                                       "character is wrong: a mistyped id)"))
    occurred_us = cell_time(values.get("occurred_at"), problems)
    known = set(META_COLUMNS)
    schema = load_catalog().schema(event_type).raw
    payload: dict[str, Any] = {}
    for spec in schema["fields"]:
        name = spec["name"]
        known.add(name)
        payload[name] = _field(name, spec["type"], values, problems)
    # A mixed CSV has every type's columns; only a value this event cannot carry is wrong.
    unknown = sorted(k for k, v in values.items()
                     if k not in known and v is not None and (not isinstance(v, str) or v.strip()))
    if unknown:
        problems.append(Problem(unknown[0], f"is not a field of {event_type} (its fields: "
                                            f"{', '.join(f['name'] for f in schema['fields'])})"))
    if not problems:
        problems += _domain_checks(event_type, payload)
    if problems:
        return _refusal(row, problems)
    try:  # the codec has the last word on the payload's shape
        encode_payload(load_catalog().full_name(event_type), payload)
    except SchemaValidationError as exc:
        return _refusal(row, [Problem(exc.field, exc.reason)])
    assert occurred_us is not None
    return FileRecord(row, event_type, coi, occurred_us, payload)


def _refusal(row: SourceRow, problems: list[Problem]) -> Outcome:
    return Outcome.refuse(RULE, "INVALID_ROW", f"{row.where}: "
                          + "; ".join(str(p) for p in problems)
                          + "; the row was not applied: correct it and drop it again", problems)


def cell_text(value: Any) -> str:
    """A cell's text without surrounding blanks; "" for an empty cell or a non-string."""
    return value.strip() if isinstance(value, str) else ""


def cell_time(value: Any, problems: list[Problem], column: str = "occurred_at",
              what: str = "the step") -> int | None:
    """A cell's ISO 8601 time with its UTC offset (epoch µs), or None with a problem noted
    at ``column`` (``what``: what the time is of, for the person fixing the file)."""
    text = cell_text(value)
    if not text:
        problems.append(Problem(column, f"is missing; give the time of {what} as ISO "
                                        "8601 with its UTC offset"))
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        problems.append(Problem(column, f"{text!r} is not an ISO 8601 date and time, "
                                        "e.g. 2026-01-20T09:30:00+09:00"))
        return None
    if moment.tzinfo is None:
        problems.append(Problem(column, f"{text!r} has no UTC offset; add one, "
                                        "e.g. +09:00 or Z"))
        return None
    return to_us(moment)


def _field(name: str, avro_type: Any, values: Mapping[str, Any], problems: list[Problem]
           ) -> Any:
    """The payload value of one Avro field from a row, or None with a problem noted."""
    optional = isinstance(avro_type, list) and "null" in avro_type
    kind = next((t for t in avro_type if t != "null"), None) if optional else avro_type
    raw = values.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if not optional:
            where = "the column is missing" if name not in values else "the cell is empty"
            problems.append(Problem(name, f"is required ({where})"))
        return None
    if kind == "int":
        return _whole_number(name, raw, problems)
    if isinstance(kind, dict) and kind.get("type") == "enum":
        # UNKNOWN exists for old readers of newer values; a writer never sends it
        symbols = [s for s in kind["symbols"] if s != "UNKNOWN"]
        text = cell_text(raw).upper()
        if text not in symbols:
            problems.append(Problem(name, f"{raw!r} is not one of {', '.join(symbols)}"))
        return text
    if kind != "string":
        problems.append(Problem(name, f"has Avro type {kind}, which a file cannot carry"))
        return None
    if not isinstance(raw, str):
        problems.append(Problem(name, f"is a JSON {json_kind(raw)} ({raw}); "
                                      "write it as a string"))
        return None
    return raw.strip()


def _whole_number(name: str, raw: Any, problems: list[Problem]) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        problems.append(Problem(name, f"is a JSON {json_kind(raw)} ({raw}), not a "
                                      "whole number"))
        return None
    if isinstance(raw, int):
        return raw
    text = raw.strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        problems.append(Problem(name, f"{raw!r} is not a whole number"))
        return None
    digits = len(text.lstrip("+-").lstrip("0"))
    if digits > 10:  # no Avro int has more; int() refuses more than 4300
        problems.append(Problem(name, f"has {digits} digits: out of range for a count"))
        return None
    return int(text)


def json_kind(value: Any) -> str:
    """JSON's name for the type of a value ``json.loads`` returned."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip().replace(" ", ""))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _domain_checks(event_type: str, p: dict[str, Any]) -> list[Problem]:
    """What the schema cannot say: digests are SHA-256 hex, counts positive, QC verdicts
    consistent with their own numbers."""
    problems = [Problem(name, f"{p[name]!r} is not a lowercase hex SHA-256 digest "
                              "(64 characters 0-9a-f)")
                for name in ("design_hash", "parameter_hash")
                if name in p and not _HEX64.match(p[name])]
    if event_type == "ManufacturingStarted" and p["planned_dose_count"] < 1:
        problems.append(Problem("planned_dose_count", f"is {p['planned_dose_count']}; a batch "
                                                      "is planned to yield at least one dose"))
    if event_type == "QcResultRecorded":
        problems += _qc_checks(p)
    return problems


def _qc_checks(p: dict[str, Any]) -> list[Problem]:
    """A numeric result (one with a unit) must be a number, and a PASS/FAIL against a
    numeric limit must agree with the number: a LIMS export that contradicts itself is
    not recorded as a GxP fact."""
    if p["unit"] is None:
        return []
    value = _number(p["value"])
    if value is None:
        return [Problem("value", f"{p['value']!r} is not a number, but unit {p['unit']} says "
                                 "the result is numeric")]
    passes = _meets(value, p["specification"])
    if passes is None or (p["result"] == "PASS") == passes:
        return []
    return [Problem("result", f"is {p['result']}, but value {p['value']} {p['unit']} "
                              f"{'meets' if passes else 'does not meet'} the specification "
                              f"{p['specification']!r}; correct the value or the result")]


def _meets(value: Decimal, specification: str) -> bool | None:
    """Whether ``value`` meets a numeric specification; None if it is not one we read."""
    limit = _LIMIT.match(specification)
    if limit:
        op, bound = limit.group(1), Decimal(limit.group(2))
        return {"<": value < bound, "<=": value <= bound, "≤": value <= bound,
                ">": value > bound, ">=": value >= bound, "≥": value >= bound}[op]
    span = _RANGE.match(specification)
    if span:
        return Decimal(span.group(1)) <= value <= Decimal(span.group(2))
    return None


# -- the MES / LIMS connector ----------------------------------------------------------

class FileDrop(DropConnector):
    """The MES / LIMS file-drop connector: a drop folder whose rows become signed events
    through a ``Connector`` (source ``files``)."""

    source = "files"
    suffixes = SUFFIXES
    rule = RULE
    entries = "rows"
    default_actor = "mes-kobe"
    default_site = "MFG-KOBE"

    def handle(self, path: Path, data: bytes) -> FileResult:
        try:
            drop = read_drop_file(path.name, data)
        except UnreadableFile as exc:
            return self.unreadable(path, data, "UNREADABLE_FILE",
                                   f"file {path.name} cannot be read: {exc}; nothing in it was "
                                   "applied: fix the export and drop it again", str(exc))
        rows = self._apply(drop, f"file://{path}")
        return FileResult(self.result(path.name, drop.sha256, rows))

    def _apply(self, drop: DropFile, endpoint: str) -> list[dict[str, Any]]:
        """Every row to a result entry; valid rows issued, one therapy's rows in order."""
        results: list[dict[str, Any]] = []
        waiting: dict[str, tuple[str, dict[str, Any]]] = {}  # coi -> (event id, its entry)
        for row in drop.rows:
            checked = check_row(row)
            if isinstance(checked, Outcome):
                results.append(self._refused_row(row, checked, endpoint))
                continue
            event_id = deterministic_event_id("file-drop", drop.sha256, str(row.row))
            entry: dict[str, Any] = {"row": row.row, "line": row.line,
                                     "event_type": checked.event_type, "coi": checked.coi,
                                     "event_id": event_id}
            results.append(entry)
            if self.connector.is_accepted(event_id):
                entry["status"] = Status.ALREADY_ACCEPTED.value
                continue
            if checked.coi in waiting:  # chain onto a settled head of this therapy
                settled_id, settled = waiting.pop(checked.coi)
                settled.update(self.verdict(settled_id))
            self.send(EventRequest(checked.event_type, checked.coi, checked.payload,
                                   occurred_at_us=checked.occurred_at_us, event_id=event_id,
                                   meaning=checked.meaning))
            waiting[checked.coi] = (event_id, entry)
        for event_id, entry in waiting.values():
            entry.update(self.verdict(event_id))
        return results

    def _refused_row(self, row: SourceRow, refusal: Outcome, endpoint: str) -> dict[str, Any]:
        """Record a row refused by ``check_row``; its result entry, problem by problem."""
        event_type = cell_text(row.values.get("event")) or None
        coi = cell_text(row.values.get("coi"))
        refusal_id = self.refuse(row.raw, f"{endpoint}#row={row.row}", refusal,
                                 coi=coi if is_valid_coi(coi) else None,
                                 event_type=event_type if event_type in FILE_EVENTS else None)
        return {"row": row.row, "line": row.line, **refusal.as_result(refused_by="connector"),
                "event_type": event_type,
                "problems": [{"column": p.where, "problem": p.what} for p in refusal.problems],
                "refusal_event_id": refusal_id}

