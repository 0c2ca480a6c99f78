"""Data logger files: whatever a file holds, the logger drop writes a result that says,
per upload, what became of it, and never fails on the file.

The refusals of this edge are ``UnreadableFile`` for a file that is not rows at all (to
``failed/``, one refusal recorded), an upload refused whole with every bad row's problems,
and a row that names no upload refused alone. The test drives ``LoggerDrop.handle``
through an offline connector: uploads are signed and encoded for real, and so is every
refusal.

Seeds: a courier's export of two loggers for one therapy, as CSV and as JSON.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pcvhub.connectors.loggers import LoggerDrop
from pcvhub.connectors.outcome import Status
from pcvhub.ids import new_coi
from pcvhub.times import utc_iso

from .mutate import json_bytes, mutated_bytes, mutated_json, mutated_units
from .offline import SITE, OfflineConnector
from .profiles import bounded, fuzz_settings, label

pytestmark = pytest.mark.fuzz

AT_US = 1_768_867_200_000_000  # 2026-01-20T00:00:00Z
COI = new_coi(SITE, 2026)
RECORDS = [{"coi": COI, "logger_id": logger, "item_ids": "DOSE-1;DOSE-2",
            "shipment_id": "SHP-1", "at": utc_iso(AT_US + n * 300_000_000),
            "celsius": str(c)}
           for logger in ("LOG-9", "LOG-10") for n, c in enumerate((-72.0, -71.5, -55.0))]
CSV_SEED = ("coi,logger_id,item_ids,shipment_id,at,celsius\n" + "".join(
    f"{r['coi']},{r['logger_id']},{r['item_ids']},{r['shipment_id']},{r['at']},{r['celsius']}\n"
    for r in RECORDS)).encode()
JSON_SEEDS = [RECORDS, {"records": RECORDS}]
DROP = Path(tempfile.mkdtemp(prefix="pcvhub-fuzz-loggers-"))


@pytest.fixture(scope="module", autouse=True)
def _remove_the_folder():
    yield
    shutil.rmtree(DROP, ignore_errors=True)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, bytes]:
    lines = [line.split(",") for line in CSV_SEED.decode().splitlines()]
    damaged = draw(mutated_units(lines))
    return "log.csv", "\n".join(",".join(cells) for cells in damaged).encode()


FILES = st.one_of(
    csv_files(),
    st.builds(lambda doc: ("log.json", json_bytes(doc)), mutated_json(JSON_SEEDS)),
    mutated_bytes([CSV_SEED]).map(lambda data: ("log.csv", data)),
    st.tuples(st.sampled_from(["log.csv", "log.json"]), st.binary(max_size=64)),
)


def handled_or_refused(name: str, data: bytes) -> dict:
    connector = OfflineConnector("loggers")
    try:
        # verdict_timeout_s=0: no gatekeeper answers, so a written upload stays "pending"
        drop = LoggerDrop(connector, DROP, verdict_timeout_s=0, settle_s=0)
        with bounded(20, f"LoggerDrop.handle({name})"):
            outcome = drop.handle(DROP / name, data)
    finally:
        connector.close()
    result = outcome.result
    json.dumps(result, default=str)  # the drop folder writes it as the result file
    if outcome.failed:
        label("file refused")
        (refusal,) = connector.refusals
        assert refusal.envelope.event_id == result["refusal_event_id"]
        return result
    entries = result["results"]
    assert result["uploads"] == len(entries) > 0
    for entry in entries:
        label(f"upload {entry['status']}")
        assert entry["status"] in (Status.PENDING.value, Status.REFUSED.value), entry
        if entry["status"] == Status.REFUSED.value:
            assert entry["reason"].startswith(f"file {name}")
            assert entry["problems"] and all(p["column"].strip() and p["problem"].strip()
                                             for p in entry["problems"]), entry
    assert [r.envelope.event_id for r in connector.refusals] == \
        [e["refusal_event_id"] for e in entries if e["status"] == Status.REFUSED.value]
    assert {w.envelope.event_id for w in connector.written} == \
        {e["event_id"] for e in entries if e["status"] == Status.PENDING.value}
    return result


def _csv_with(old: bytes, new: bytes) -> tuple[str, bytes]:
    return "log.csv", CSV_SEED.replace(old, new, 1)


# Inputs that broke this property before their fix (found by the long fuzzing profile)
FOUND = [
    # a value under a column without a name: a problem named by no column
    ("log.json", json_bytes([{"": "0"}, *RECORDS[1:]])),
    # ... holding a lone surrogate (the MES reader's check, which both connectors share)
    ("log.json", json_bytes([{"": "\ud800"}, *RECORDS[1:]])),
    # a reading out of order near year 1: OverflowError writing its time as UTC text
    _csv_with(RECORDS[2]["at"].encode(), b"0001-01-01T00:00:00+00:01"),
    # a signalling NaN: ValueError from float()
    _csv_with(b",-72.0\n", b",sNaN\n"),
]


@fuzz_settings(0.5)
@given(FILES)
@example(FOUND[0])
@example(FOUND[1])
@example(FOUND[2])
@example(FOUND[3])
def test_damaged_logger_files_are_applied_upload_by_upload_or_refused(dropped):
    handled_or_refused(*dropped)


def test_the_seeds_are_written_upload_by_upload():
    """Every seed upload gets past every check (else the fuzzing would test the first)."""
    for name, data in [("log.csv", CSV_SEED), *[("log.json", json_bytes(s))
                                                for s in JSON_SEEDS]]:
        result = handled_or_refused(name, data)
        assert result["pending"] == 2 and result["refused"] == 0, result
