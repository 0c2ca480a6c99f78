"""MES / LIMS file drop: batch-record steps and QC results from files put in a folder.

A manufacturing execution system (MES) or a QC laboratory system (LIMS) exports
``ManufacturingStarted``, ``ManufacturingStepCompleted`` and ``QcResultRecorded`` records
as CSV or JSON files into a watched folder. Each record becomes one signed event on
``<prefix>.ingress.files``; the connector waits for the gatekeeper's verdict on it and
writes a result file that says, per row, what became of it.

Entry point (what ``pcvhub serve`` runs)::

    await run_file_drop(settings, folder, stop_event)   # actor mes-kobe, site MFG-KOBE

or, with a ``Connector`` (source ``files``) you opened and started yourself::

    await FileDrop(connector, folder).run(stop_event)   # until stop_event is set

The connector's actor must be registered with roles MANUFACTURER, QC_ANALYST and
CONNECTOR at the plant (``QcResultRecorded`` is accepted only from a QC analyst, signed
REVIEWED), e.g. ``pcvhub keys new mes-kobe --role MANUFACTURER --role QC_ANALYST
--role CONNECTOR --site MFG-KOBE --publish``.

Folder layout (``folder`` is created if missing)::

    folder/NAME.csv | NAME.json    dropped here (write to a dot-file or *.part, then rename)
    folder/done/NAME               processed: every row accepted or refused with a reason
    folder/done/NAME.result.json   the result file (also written for failed files)
    folder/failed/NAME             unreadable (not UTF-8, not JSON, no CSV header...)
    folder/failed/NAME.result.json the reason

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

import asyncio
import csv
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from watchfiles import awatch

from pcvhub.config import Settings
from pcvhub.connectors.base import IngressWriteError
from pcvhub.connectors.common import Connector, EventRequest, Refusal, deterministic_event_id
from pcvhub.ids import is_valid_coi
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import (
    SchemaValidationError,
    encode_payload,
    to_us,
)
from pcvhub.schemas.envelope import SignatureMeaning, meaning_for

log = logging.getLogger(__name__)

#: Event types a MES / LIMS file may carry.
FILE_EVENTS = ("ManufacturingStarted", "ManufacturingStepCompleted", "QcResultRecorded")
#: Columns every row has besides the payload fields.
META_COLUMNS = ("event", "coi", "occurred_at")
SUFFIXES = (".csv", ".json")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# "< 5", "<= 0.5", ">= 90", "> 1.2", "0.8 - 1.2" at the start of a specification
_LIMIT = re.compile(r"^\s*(<=|>=|<|>|≤|≥)\s*(-?\d+(?:\.\d+)?)")
_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:-|–|to)\s*(-?\d+(?:\.\d+)?)")


class UnreadableFile(ValueError):
    """The file as a whole cannot be read as records; it goes to ``failed/``."""


@dataclass(frozen=True)
class Problem:
    """What was wrong with one value of one row."""

    column: str
    problem: str

    def __str__(self) -> str:
        return f"{self.column}: {self.problem}"


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
                "(row)", f"is a JSON {_json_kind(item)}, not an object"),)))
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
        if half is not None:
            return Problem(key, f"holds {half}, half of a UTF-16 surrogate pair, which is no "
                                "character (a broken \\u escape)")
    return None


# -- checking a row --------------------------------------------------------------------

def check_row(row: SourceRow) -> FileRecord | list[Problem]:
    """The record a row describes, or every problem found in it (not just the first)."""
    problems = list(row.problems)
    if problems:
        return problems
    values = row.values
    event_type = _text(values.get("event"))
    if event_type not in FILE_EVENTS:
        got = "is missing" if not event_type else f"is {event_type!r}"
        return [Problem("event", f"{got}; a MES / LIMS file carries "
                                 f"{', '.join(FILE_EVENTS)}")]
    coi = _text(values.get("coi"))
    if not coi:
        problems.append(Problem("coi", "is missing; every row names its therapy's "
                                       "chain-of-identity id"))
    elif not is_valid_coi(coi):
        problems.append(Problem("coi", f"{coi!r} is not a chain-of-identity id (or its check "
                                       "character is wrong: a mistyped id)"))
    occurred_us = _timestamp(values.get("occurred_at"), problems)
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
        return problems
    try:  # the codec has the last word on the payload's shape
        encode_payload(load_catalog().full_name(event_type), payload)
    except SchemaValidationError as exc:
        return [Problem(exc.field, exc.reason)]
    assert occurred_us is not None
    return FileRecord(row, event_type, coi, occurred_us, payload)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _timestamp(value: Any, problems: list[Problem]) -> int | None:
    text = _text(value)
    if not text:
        problems.append(Problem("occurred_at", "is missing; give the time of the step as ISO "
                                               "8601 with its UTC offset"))
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        problems.append(Problem("occurred_at", f"{text!r} is not an ISO 8601 date and time, "
                                               "e.g. 2026-01-20T09:30:00+09:00"))
        return None
    if moment.tzinfo is None:
        problems.append(Problem("occurred_at", f"{text!r} has no UTC offset; add one, "
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
        text = _text(raw).upper()
        if text not in symbols:
            problems.append(Problem(name, f"{raw!r} is not one of {', '.join(symbols)}"))
        return text
    if kind != "string":
        problems.append(Problem(name, f"has Avro type {kind}, which a file cannot carry"))
        return None
    if not isinstance(raw, str):
        problems.append(Problem(name, f"is a JSON {_json_kind(raw)} ({raw}); "
                                      "write it as a string"))
        return None
    return raw.strip()


def _whole_number(name: str, raw: Any, problems: list[Problem]) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        problems.append(Problem(name, f"is a JSON {_json_kind(raw)} ({raw}), not a "
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


def _json_kind(value: Any) -> str:
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




# -- the folder ------------------------------------------------------------------------

class TransientFailure(RuntimeError):
    """Processing could not finish for a reason outside the file (Kafka unreachable): the
    file stays where it was dropped and is tried again."""


@dataclass(frozen=True)
class Outcome:
    """What a handler made of one file: the result document and where the file goes."""

    result: dict[str, Any]
    failed: bool = False  # True: unreadable, to failed/; False: processed, to done/
    extra_files: Mapping[str, bytes] = field(default_factory=dict)  # suffix -> content


Handler = Callable[[Path, bytes], Outcome]
RESULT_SUFFIX = ".result.json"


class DropFolder:
    """A folder that files are dropped into, processed once each, and moved out of.

    Watching: ``watchfiles`` (inotify/FSEvents through the Rust ``notify`` crate) wakes
    the loop within ~0.1 s of a change; every wake, and a timeout every ``settle_s``,
    rescans the whole folder, so a missed notification (network shares, a crash) only
    delays a file, never loses it; ``force_polling`` serves folders that send no
    notifications at all. A file is taken once its size and modification time stayed the
    same for ``settle_s`` (writers should still write ``.NAME`` or ``NAME.part`` and
    rename). The result is written (atomically) before the file is moved, so a crash in
    between only means the file is processed again, which the handlers make harmless.
    """

    def __init__(self, folder: Path, suffixes: tuple[str, ...], handle: Handler, *,
                 settle_s: float = 0.3, force_polling: bool = False,
                 retry_s: float = 5.0) -> None:
        self.folder = Path(folder)
        self.done = self.folder / "done"
        self.failed = self.folder / "failed"
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.handle = handle
        self.settle_s = settle_s
        self.force_polling = force_polling
        self.retry_s = retry_s
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> size, mtime, since
        self._retry_after: dict[str, float] = {}
        for where in (self.folder, self.done, self.failed):
            where.mkdir(parents=True, exist_ok=True)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Process files until ``stop_event`` is set; blocking work runs in a thread."""
        await asyncio.to_thread(self.scan)
        async for _ in awatch(self.folder, stop_event=stop_event, recursive=False,
                              debounce=100, step=20, rust_timeout=int(self.settle_s * 1000),
                              yield_on_timeout=True, force_polling=self.force_polling,
                              watch_filter=None):
            await asyncio.to_thread(self.scan)

    def candidates(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir()
                      if p.is_file() and p.name.lower().endswith(self.suffixes)
                      and not p.name.startswith((".", "~"))
                      and not p.name.endswith(RESULT_SUFFIX))

    def scan(self) -> int:
        """Process every settled file once; return how many were processed."""
        now = time.monotonic()
        processed = 0
        present = set()
        for path in self.candidates():
            present.add(path.name)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            seen = self._seen.get(path.name)
            if seen is None or seen[:2] != (stat.st_size, stat.st_mtime_ns):
                self._seen[path.name] = (stat.st_size, stat.st_mtime_ns, now)
                if self.settle_s > 0:
                    continue
            elif now - seen[2] < self.settle_s:
                continue
            if self._retry_after.get(path.name, 0.0) > now:
                continue
            if self.process(path):
                processed += 1
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return processed

    def process(self, path: Path) -> bool:
        """Handle one file and move it out; False if it stays for a retry."""
        try:
            data = path.read_bytes()
            outcome = self.handle(path, data)
        except TransientFailure as exc:
            log.warning("%s stays in %s for another try in %.0f s: %s", path.name, self.folder,
                        self.retry_s, exc)
            self._retry_after[path.name] = time.monotonic() + self.retry_s
            return False
        except FileNotFoundError:
            return False  # taken away while we looked at it
        destination = self._destination(self.failed if outcome.failed else self.done, path.name,
                                        data)
        _write_atomically(destination.with_name(destination.name + RESULT_SUFFIX),
                          json.dumps(outcome.result, indent=1, default=str).encode())
        for suffix, content in outcome.extra_files.items():
            _write_atomically(destination.with_name(destination.name + suffix), content)
        os.replace(path, destination)
        self._seen.pop(path.name, None)
        self._retry_after.pop(path.name, None)
        return True

    @staticmethod
    def _destination(folder: Path, name: str, data: bytes) -> Path:
        """``folder/name``, or with the content digest in the name if that is taken."""
        target = folder / name
        if not target.exists():
            return target
        stem, dot, suffix = name.rpartition(".")
        return folder / f"{stem}.{hashlib.sha256(data).hexdigest()[:12]}{dot}{suffix}"


def _write_atomically(path: Path, content: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


# -- the MES / LIMS connector ----------------------------------------------------------

ACCEPTED, ALREADY_ACCEPTED, REFUSED, PENDING = "accepted", "already-accepted", "refused", "pending"


class FileDrop:
    """The MES / LIMS file-drop connector: a ``DropFolder`` whose handler turns rows into
    signed events through a ``Connector`` (source ``files``)."""

    def __init__(self, connector: Connector, folder: Path, *, verdict_timeout_s: float = 30.0,
                 settle_s: float = 0.3, force_polling: bool = False) -> None:
        self.connector = connector
        self.verdict_timeout_s = verdict_timeout_s
        self.drop = DropFolder(folder, SUFFIXES, self.handle, settle_s=settle_s,
                               force_polling=force_polling)

    @property
    def folder(self) -> Path:
        return self.drop.folder

    async def run(self, stop_event: asyncio.Event) -> None:
        await self.drop.run(stop_event)

    # -- one file ------------------------------------------------------------------

    def handle(self, path: Path, data: bytes) -> Outcome:
        endpoint = f"file://{path}"
        try:
            drop = read_drop_file(path.name, data)
        except UnreadableFile as exc:
            refusal = self._refuse(data, endpoint, "UNREADABLE_FILE",
                                   f"file {path.name} cannot be read: {exc}; nothing in it was "
                                   "applied: fix the export and drop it again")
            return Outcome(self._result(path.name, hashlib.sha256(data).hexdigest(), [],
                                        error=str(exc), refusal=refusal), failed=True)
        rows = self._apply(drop, endpoint)
        return Outcome(self._result(path.name, drop.sha256, rows))

    def _apply(self, drop: DropFile, endpoint: str) -> list[dict[str, Any]]:
        """Every row to a result entry; valid rows issued, one therapy's rows in order."""
        results: list[dict[str, Any]] = []
        waiting: dict[str, tuple[str, dict[str, Any]]] = {}  # coi -> (event id, its entry)
        for row in drop.rows:
            checked = check_row(row)
            if isinstance(checked, list):
                results.append(self._refuse_row(row, checked, endpoint))
                continue
            entry: dict[str, Any] = {"row": row.row, "line": row.line,
                                     "event_type": checked.event_type, "coi": checked.coi}
            results.append(entry)
            event_id = deterministic_event_id("file-drop", drop.sha256, str(row.row))
            entry["event_id"] = event_id
            if self.connector.is_accepted(event_id):
                entry["status"] = ALREADY_ACCEPTED
                continue
            if checked.coi in waiting:  # chain onto a settled head of this therapy
                self._settle(*waiting.pop(checked.coi))
            self.connector.expect(event_id)
            try:
                self.connector.emit([EventRequest(
                    checked.event_type, checked.coi, checked.payload,
                    occurred_at_us=checked.occurred_at_us, event_id=event_id,
                    meaning=checked.meaning)])
            except IngressWriteError as exc:
                raise TransientFailure(str(exc)) from exc
            waiting[checked.coi] = (event_id, entry)
        for event_id, entry in waiting.values():
            self._settle(event_id, entry)
        return results

    def _settle(self, event_id: str, entry: dict[str, Any]) -> None:
        verdict = self.connector.wait_verdict(event_id, self.verdict_timeout_s)
        if verdict is True:
            entry["status"] = ACCEPTED
        elif isinstance(verdict, Refusal):
            entry.update(status=REFUSED, refused_by="gatekeeper", rule=verdict.rule,
                         reason_code=verdict.reason_code, reason=verdict.reason)
        else:
            entry.update(status=PENDING, reason=(
                f"written to the hub; the gatekeeper's verdict did not arrive within "
                f"{self.verdict_timeout_s:.0f} s: it will be on the canonical or the rejected "
                "topic; drop the file again later to see it here"))

    def _refuse_row(self, row: SourceRow, problems: list[Problem], endpoint: str
                    ) -> dict[str, Any]:
        event_type = _text(row.values.get("event")) or None
        coi = _text(row.values.get("coi"))
        reason = (f"{row.where}: " + "; ".join(str(p) for p in problems)
                  + "; the row was not applied: correct it and drop it again")
        refusal = self._refuse(row.raw, f"{endpoint}#row={row.row}", "INVALID_ROW", reason,
                               coi=coi if is_valid_coi(coi) else None,
                               event_type=event_type if event_type in FILE_EVENTS else None)
        return {"row": row.row, "line": row.line, "status": REFUSED, "refused_by": "connector",
                "event_type": event_type, "problems": [
                    {"column": p.column, "problem": p.problem} for p in problems],
                "reason": reason, "refusal_event_id": refusal}

    def _refuse(self, original: bytes, endpoint: str, code: str, reason: str, *,
                coi: str | None = None, event_type: str | None = None) -> str:
        try:
            issued = self.connector.record_refusal(original, endpoint, "FILE", code, reason,
                                                   coi=coi, event_type=event_type)
        except IngressWriteError as exc:
            raise TransientFailure(str(exc)) from exc
        return issued.envelope.event_id

    def _result(self, name: str, sha256: str, rows: list[dict[str, Any]], *,
                error: str | None = None, refusal: str | None = None) -> dict[str, Any]:
        counts = {status: sum(1 for r in rows if r["status"] == status)
                  for status in (ACCEPTED, ALREADY_ACCEPTED, REFUSED, PENDING)}
        result: dict[str, Any] = {
            "file": name, "sha256": sha256, "connector": self.connector.actor_id,
            "processed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "rows": len(rows), **counts, "results": rows}
        if error is not None:
            result.update(error=error, refusal_event_id=refusal)
        return result


#: Who the file-drop connector is by default (``pcvhub serve`` may say otherwise).
DEFAULT_ACTOR = "mes-kobe"
DEFAULT_SITE = "MFG-KOBE"


async def run_file_drop(settings: Settings, folder: Path, stop_event: asyncio.Event, *,
                        actor_id: str = DEFAULT_ACTOR, site_id: str = DEFAULT_SITE,
                        force_polling: bool = False) -> None:
    """Open the connector, follow the log, watch ``folder`` until ``stop_event`` is set."""
    connector = await asyncio.to_thread(
        lambda: Connector.open(settings, actor_id, "files", site_id=site_id).start())
    try:
        await FileDrop(connector, folder, force_polling=force_polling).run(stop_event)
    finally:
        connector.close()
