"""The MES / LIMS drop file reader: rows in, records or named problems out (no Kafka)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcvhub.connectors.drop_folder import DropFolder, FileResult, TransientFailure
from pcvhub.connectors.mes import FileRecord, UnreadableFile, check_row, read_drop_file
from pcvhub.connectors.outcome import Outcome, Status
from pcvhub.ids import new_coi

COI = new_coi("KYOTO01", 2026)
DESIGN = "de" * 32
HEADER = ("event,coi,occurred_at,batch_id,design_hash,facility_id,planned_dose_count,"
          "batch_record_version,step,operator,equipment_id,parameter_hash,deviation_ref,"
          "test,specification,value,unit,result,method_ref")


def _csv(*rows: str, header: str = HEADER) -> bytes:
    return ("\n".join((header, *rows)) + "\n").encode()


START = (f"ManufacturingStarted,{COI},2026-01-20T09:00:00+09:00,BATCH-1,{DESIGN},MFG-KOBE-1,4,"
         "MBR-7,,,,,,,,,,,")
STEP = (f"ManufacturingStepCompleted,{COI},2026-01-20T11:00:00+09:00,BATCH-1,,,,,IVT,op-7,"
        f"IVT-02,{'9a' * 32},,,,,,,")
QC = (f"QcResultRecorded,{COI},2026-01-22T10:00:00Z,BATCH-1,,,,,,,,,,endotoxin,< 5 EU/mL,"
      "0.8,EU/mL,PASS,Ph. Eur. 2.6.14")


def _checked(data: bytes, name: str = "f.csv") -> list[FileRecord | Outcome]:
    return [check_row(row) for row in read_drop_file(name, data).rows]


def _problems(result: FileRecord | Outcome) -> dict[str, str]:
    assert isinstance(result, Outcome) and result.status is Status.REFUSED, \
        f"expected a refusal, got {result}"
    return {p.where: p.what for p in result.problems}


def test_a_batch_record_csv_becomes_typed_payloads():
    start, step, qc = _checked(_csv(START, STEP, QC))
    assert isinstance(start, FileRecord) and start.event_type == "ManufacturingStarted"
    assert start.payload == {"batch_id": "BATCH-1", "design_hash": DESIGN,
                             "facility_id": "MFG-KOBE-1", "planned_dose_count": 4,
                             "batch_record_version": "MBR-7"}
    assert start.coi == COI
    assert start.occurred_at_us == 1_768_867_200_000_000  # 2026-01-20T00:00:00Z
    assert isinstance(step, FileRecord) and step.payload["deviation_ref"] is None
    assert isinstance(qc, FileRecord) and qc.payload["result"] == "PASS"
    assert qc.meaning.value == "REVIEWED" and start.meaning.value == "AUTHORED"
    assert [r.row.line for r in (start, step, qc)] == [2, 3, 4]


def test_a_missing_column_refuses_only_the_rows_that_need_it():
    header = HEADER.replace(",planned_dose_count", "")
    start = START.replace(",4,MBR-7", ",MBR-7")
    step = STEP.replace(",,,,,IVT", ",,,,IVT")
    refused, accepted = _checked(_csv(start, step, header=header))
    assert _problems(refused) == {"planned_dose_count": "is required (the column is missing)"}
    assert isinstance(accepted, FileRecord)


@pytest.mark.parametrize(("cell", "problem"), [
    ("three", "'three' is not a whole number"),
    ("4.5", "'4.5' is not a whole number"),
    ("0", "is 0; a batch is planned to yield at least one dose"),
])
def test_bad_numbers_are_named(cell, problem):
    (refused,) = _checked(_csv(START.replace(",4,", f",{cell},")))
    assert _problems(refused) == {"planned_dose_count": problem}


def test_every_problem_of_a_row_is_reported_not_only_the_first():
    mistyped = COI[:-1] + ("Y" if COI.endswith("X") else "X")  # COI is random: so may be X
    row = (f"ManufacturingStarted,{mistyped},2026-01-20T09:00:00,BATCH-1,ABC,MFG-KOBE-1,many,"
           ",,,,,,,,,,,")
    problems = _problems(_checked(_csv(row))[0])
    assert set(problems) == {"coi", "occurred_at", "planned_dose_count"}
    assert "check character" in problems["coi"]
    assert "no UTC offset" in problems["occurred_at"]
    # digests are checked once the row is otherwise well-formed
    (refused,) = _checked(_csv(START.replace(DESIGN, "ABC")))
    assert "not a lowercase hex SHA-256" in _problems(refused)["design_hash"]


def test_qc_results_must_agree_with_their_own_numbers():
    not_a_number = QC.replace(",0.8,", ",0,8x,")  # a decimal comma breaks the row apart
    assert "(row)" in _problems(_checked(_csv(not_a_number))[0])
    (bad,) = _checked(_csv(QC.replace(",0.8,", ",n/a,")))
    assert _problems(bad) == {"value": "'n/a' is not a number, but unit EU/mL says the result "
                                       "is numeric"}
    (contradiction,) = _checked(_csv(QC.replace(",0.8,", ",7.5,")))
    assert "does not meet the specification" in _problems(contradiction)["result"]
    (failing,) = _checked(_csv(QC.replace(",0.8,", ",7.5,").replace(",PASS,", ",FAIL,")))
    assert isinstance(failing, FileRecord) and failing.payload["result"] == "FAIL"
    (unknown,) = _checked(_csv(QC.replace(",PASS,", ",UNKNOWN,")))
    assert "is not one of PASS, FAIL" in _problems(unknown)["result"]


def test_unknown_event_and_unknown_column_are_refused():
    (event,) = _checked(_csv(START.replace("ManufacturingStarted", "BatchDispositioned")))
    assert "ManufacturingStarted, ManufacturingStepCompleted, QcResultRecorded" in \
        _problems(event)["event"]
    (extra,) = _checked(_csv(START + ",x", header=HEADER + ",colour"))
    assert "is not a field of ManufacturingStarted" in _problems(extra)["colour"]


def test_a_short_csv_row_is_refused_with_its_line():
    (short,) = read_drop_file("f.csv", _csv(START, "QcResultRecorded,x")).rows[1:]
    assert short.line == 3 and short.raw == b"QcResultRecorded,x\n"
    assert "has 2 cells but the header has 19 columns" in _problems(check_row(short))["(row)"]


def test_json_records_with_wrong_types_are_refused_per_record():
    records = [
        {"event": "ManufacturingStarted", "coi": COI, "occurred_at": "2026-01-20T09:00:00Z",
         "batch_id": "BATCH-1", "design_hash": DESIGN, "facility_id": "F", "planned_dose_count": 4},
        {"event": "ManufacturingStarted", "coi": COI, "occurred_at": "2026-01-20T09:00:00Z",
         "batch_id": 17, "design_hash": DESIGN, "facility_id": "F", "planned_dose_count": 2.5},
        ["not", "an", "object"],
    ]
    good, wrong, array = _checked(json.dumps({"records": records}).encode(), "f.json")
    assert isinstance(good, FileRecord) and good.row.line is None
    assert _problems(wrong) == {
        "batch_id": "is a JSON number (17); write it as a string",
        "planned_dose_count": "is a JSON number (2.5), not a whole number"}
    assert _problems(array) == {"(row)": "is a JSON array, not an object"}


@pytest.mark.parametrize(("name", "data", "message"), [
    ("f.json", b'{"records": [{"event": ', "not JSON: Expecting value at line 1 column 24"),
    ("f.json", b'{"event": "QcResultRecorded"}', "must be a list of records"),
    ("f.csv", b"", "the CSV file is empty"),
    ("f.csv", HEADER.encode() + b"\n", "holds no records"),
    ("f.csv", b"\xff\xfeevent,coi\n", "not UTF-8 text: byte 0 is 0xff"),
    ("f.csv", b"event,coi,event\nx,y,z\n", "names column(s) event twice"),
    ("f.xlsx", b"PK\x03\x04", "neither .csv nor .json"),
])
def test_unreadable_files_say_why(name, data, message):
    with pytest.raises(UnreadableFile, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_drop_file(name, data)


def test_the_same_bytes_have_the_same_digest_and_rows():
    first, again = read_drop_file("a.csv", _csv(START)), read_drop_file("b.csv", _csv(START))
    assert first.sha256 == again.sha256 and first.rows == again.rows
    assert read_drop_file("a.csv", _csv(START, STEP)).sha256 != first.sha256


# -- the folder mechanics, with a plain handler ----------------------------------------

def test_the_folder_takes_settled_files_writes_results_and_moves_them(tmp_path: Path):
    seen: list[str] = []
    attempts = {"flaky.csv": 0}

    def handle(path: Path, data: bytes) -> FileResult:
        if path.name == "flaky.csv" and attempts["flaky.csv"] == 0:
            attempts["flaky.csv"] += 1
            raise TransientFailure("Kafka unreachable")
        seen.append(path.name)
        return FileResult({"file": path.name, "size": len(data)}, failed=path.name == "bad.csv",
                       extra_files={".999": b"ack"} if path.name == "bad.csv" else {})

    folder = DropFolder(tmp_path / "drop", (".csv",), handle, settle_s=0.0, retry_s=0.0)
    for name in ("a.csv", "bad.csv", "flaky.csv", ".hidden.csv", "a.csv.part", "notes.txt"):
        (folder.folder / name).write_text("x")
    assert folder.scan() == 2  # flaky stays for another try
    assert sorted(seen) == ["a.csv", "bad.csv"]
    assert json.loads((folder.done / "a.csv.result.json").read_text()) == {"file": "a.csv",
                                                                           "size": 1}
    assert (folder.failed / "bad.csv").exists() and (folder.failed / "bad.csv.999").exists()
    assert folder.scan() == 1 and (folder.done / "flaky.csv").exists()
    left = sorted(p.name for p in folder.folder.iterdir() if p.is_file())
    assert left == [".hidden.csv", "a.csv.part", "notes.txt"]
    # the same name dropped again keeps both files: the second gets its digest in the name
    (folder.folder / "a.csv").write_text("yy")
    assert folder.scan() == 1
    assert len(list(folder.done.glob("a.*.csv"))) == 1


def test_a_file_still_growing_is_not_taken(tmp_path: Path):
    folder = DropFolder(tmp_path, (".csv",), lambda p, d: FileResult({}), settle_s=60.0)
    (tmp_path / "slow.csv").write_text("half")
    assert folder.scan() == 0 and folder.scan() == 0  # unchanged, but not for 60 s yet
    assert (tmp_path / "slow.csv").exists()
