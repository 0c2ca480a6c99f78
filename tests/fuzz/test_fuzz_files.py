"""MES / LIMS drop files: whatever a file holds, the connector writes a result that says,
per row, what became of it, and never fails on the file.

The refusals of this edge are ``UnreadableFile`` for a file that is not rows at all (to
``failed/``, one refusal recorded) and, per row, the list of ``Problem`` (column and
what was wrong) that ``check_row`` returns (the row refused with its row number, the
other rows go on). The test drives ``FileDrop.handle``, what the drop folder calls with
each settled file, through an offline connector: rows are checked, signed and encoded
for real, and so is every refusal (a reason the Avro codec could not write would fail).

Seeds are the demo's MES / LIMS export (a batch start, its steps and QC results) as CSV
and as JSON (a list, and an object with "records").
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pcvhub.connectors.mes import FileDrop
from pcvhub.connectors.outcome import Status
from pcvhub.demo import messages as demo
from pcvhub.ids import new_coi

from .mutate import json_bytes, mutated_bytes, mutated_json, mutated_units
from .offline import SITE, OfflineConnector
from .profiles import bounded, fuzz_settings, label

pytestmark = pytest.mark.fuzz

AT_US = 1_768_867_200_000_000  # 2026-01-20T00:00:00Z
COI = new_coi(SITE, 2026)
RECORDS = [demo.batch_started(COI, AT_US, "BATCH-1", "de" * 32, 4),
           *demo.batch_steps(COI, AT_US, "BATCH-1", "op-7"),
           *demo.qc_results(COI, AT_US, "BATCH-1", "de" * 32)]
CSV_SEED = demo.mes_file(RECORDS)
JSON_SEEDS = [RECORDS, {"records": RECORDS}]
DROP = Path(tempfile.mkdtemp(prefix="pcvhub-fuzz-drop-"))


@pytest.fixture(scope="module", autouse=True)
def _remove_the_folder():
    """A scratch folder: handle() writes nothing in it, DropFolder only makes done/, failed/."""
    yield
    shutil.rmtree(DROP, ignore_errors=True)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """The seed CSV with lines and cells damaged (the seed has no quoted cells, so
    splitting on commas is splitting into cells)."""
    lines = [line.split(",") for line in CSV_SEED.decode().splitlines()]
    damaged = draw(mutated_units(lines))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    return "mes.csv", newline.join(",".join(cells) for cells in damaged).encode()


@st.composite
def json_files(draw: st.DrawFn) -> tuple[str, bytes]:
    return "mes.json", json_bytes(draw(mutated_json(JSON_SEEDS)))


FILES = st.one_of(
    csv_files(),
    json_files(),
    mutated_bytes([CSV_SEED]).map(lambda data: ("mes.csv", data)),
    mutated_bytes([json_bytes(s) for s in JSON_SEEDS]).map(lambda data: ("mes.json", data)),
    st.tuples(st.sampled_from(["mes.csv", "mes.json", "mes.CSV", "mes"]), st.binary(max_size=64)),
)


def handled_or_refused(name: str, data: bytes) -> None:
    """Every row of the file is pending (written) or refused with named problems; a file
    that is not rows is refused whole; each refusal is recorded exactly once."""
    connector = OfflineConnector("files")
    try:
        # verdict_timeout_s=0: no gatekeeper answers, so a written row stays "pending"
        drop = FileDrop(connector, DROP, verdict_timeout_s=0, settle_s=0)
        with bounded(20, f"FileDrop.handle({name})"):
            outcome = drop.handle(DROP / name, data)
    finally:
        connector.close()
    result = outcome.result
    json.dumps(result, default=str)  # the drop folder writes it as the result file
    if outcome.failed:
        label("file refused")
        assert result["error"].strip() and result["rows"] == 0
        (refusal,) = connector.refusals
        assert refusal.envelope.event_id == result["refusal_event_id"]
        return
    entries = result["results"]
    assert result["rows"] == len(entries) > 0
    for entry in entries:
        label(f"row {entry['status']}")
        assert entry["status"] in (Status.PENDING.value, Status.REFUSED.value), entry
        if entry["status"] == Status.REFUSED.value:
            assert entry["refused_by"] == "connector"
            assert entry["problems"], entry
            for problem in entry["problems"]:
                assert problem["column"].strip() and problem["problem"].strip(), problem
            assert entry["reason"].startswith(f"row {entry['row']}")
    refused = [e for e in entries if e["status"] == Status.REFUSED.value]
    assert [r.envelope.event_id for r in connector.refusals] == \
        [e["refusal_event_id"] for e in refused]
    assert {w.envelope.event_id for w in connector.written} == \
        {e["event_id"] for e in entries if e["status"] == Status.PENDING.value}


def _json_with(**changes: object) -> tuple[str, bytes]:
    return "mes.json", json_bytes([{**RECORDS[0], **changes}])


# Inputs that broke this property before their fix (found by the fuzzing, or by probing
# the same property by hand): each raised from FileDrop.handle instead of a refusal.
FOUND = [
    # nested deeper than json.loads reads: RecursionError
    ("mes.json", b"[" * 100_000),
    # a lone surrogate escape in a value, then in a column name: UnicodeEncodeError when
    # the row's text, the payload or the refusal's reason was encoded
    _json_with(batch_id="\ud800"),
    _json_with(**{"\ud800": "x"}),
    # a CoI with Arabic-Indic digits as its year: ValueError from ids.is_valid_coi
    _json_with(coi="PCV-KYOTO01-\u0662\u0660\u0662\u0666-0123456789ABX"),
    # a count of 5000 digits: ValueError from int() (CSV) and json.loads (JSON)
    ("mes.csv", CSV_SEED.replace(b",4,", b"," + b"9" * 5000 + b",")),
    ("mes.json", json_bytes(RECORDS).replace(b": 4,", b": " + b"9" * 5000 + b",")),
]


@fuzz_settings(1.0)
@given(FILES)
@example(FOUND[0])
@example(FOUND[1])
@example(FOUND[2])
@example(FOUND[3])
@example(FOUND[4])
@example(FOUND[5])
def test_damaged_drop_files_are_applied_row_by_row_or_refused(dropped):
    handled_or_refused(*dropped)


def test_the_seeds_are_written_row_by_row():
    """Every seed row gets past every check (else the fuzzing would test the first)."""
    for name, data in [("mes.csv", CSV_SEED),
                       *[("mes.json", json_bytes(s)) for s in JSON_SEEDS]]:
        connector = OfflineConnector("files")
        result = FileDrop(connector, DROP, verdict_timeout_s=0).handle(DROP / name, data).result
        connector.close()
        assert result["pending"] == len(RECORDS) and result["refused"] == 0, result
