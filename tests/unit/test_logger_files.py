"""Data logger files read into uploads: given a courier's or site's logger export, when it is
read, then its readings are grouped into one upload per therapy, logger, items and
shipment, and every malformed reading is named by row, line and column (the upload it
belongs to is refused whole; a row that names no upload stands alone)."""

from __future__ import annotations

import json

import pytest

from pcvhub.connectors.loggers import read_uploads
from pcvhub.connectors.mes import UnreadableFile, read_drop_file
from pcvhub.ids import new_coi

COI = new_coi("KYOTO01", 2026)
OTHER = new_coi("OSAKA02", 2026)
HEADER = "coi,logger_id,item_ids,shipment_id,at,celsius"


def _csv(*rows: str) -> bytes:
    return ("\n".join((HEADER, *rows)) + "\n").encode()


def _read(name: str, data: bytes):
    return read_uploads(read_drop_file(name, data))


def test_rows_of_one_logger_and_items_are_one_upload_in_file_order() -> None:
    uploads, loose = _read("LOG-9.csv", _csv(
        f"{COI},LOG-9,DOSE-1;DOSE-2,SHP-1,2026-01-20T09:00:00+09:00,-72.5",
        f"{OTHER},FRZ-2,DOSE-1,,2026-01-20T09:00:00Z,-70",
        f"{COI},LOG-9,DOSE-1;DOSE-2,SHP-1,2026-01-20T09:05:00+09:00,-55.0"))
    assert loose == []
    first, second = uploads
    assert (first.coi, first.logger_id, first.item_ids, first.shipment_id) == (
        COI, "LOG-9", ("DOSE-1", "DOSE-2"), "SHP-1")
    assert [c for _, c in first.readings] == [-72.5, -55.0]
    assert first.readings[1][0] - first.readings[0][0] == 300_000_000
    assert first.problems == [] and first.where == "rows 1-3 (lines 2-4)"
    assert (second.coi, second.shipment_id, second.item_ids) == (OTHER, None, ("DOSE-1",))


def test_json_readings_may_list_items_and_give_numbers() -> None:
    records = [{"coi": COI, "logger_id": "LOG-9", "item_ids": ["BATCH-1"],
                "at": f"2026-01-20T09:0{n}:00Z", "celsius": c}
               for n, c in enumerate((-71, -70.5))]
    uploads, loose = _read("log.json", json.dumps({"records": records}).encode())
    assert loose == [] and len(uploads) == 1
    assert [c for _, c in uploads[0].readings] == [-71.0, -70.5]
    assert uploads[0].where == "rows 1-2"


def test_a_bad_reading_is_named_by_row_line_and_column_and_spoils_its_upload() -> None:
    uploads, loose = _read("LOG-9.csv", _csv(
        f"{COI},LOG-9,DOSE-1,SHP-1,2026-01-20T09:00:00+09:00,-72.5",
        f"{COI},LOG-9,DOSE-1,SHP-1,2026-01-20T09:05:00,warm",
        f"{COI},LOG-9,DOSE-1,SHP-1,2026-01-20T09:10:00+09:00,-300"))
    assert loose == []
    (upload,) = uploads
    found = [(row.row, row.line, p.where, p.what) for row, p in upload.problems]
    assert found == [
        (2, 3, "at", "'2026-01-20T09:05:00' has no UTC offset; add one, e.g. +09:00 or Z"),
        (2, 3, "celsius", "'warm' is not a number of degrees Celsius"),
        (3, 4, "celsius", "-300 is below absolute zero (-273.15 C): no reading")]
    assert len(upload.readings) == 1  # only good readings are kept, and none is sent


def test_readings_out_of_time_order_are_named_at_the_row_that_goes_back() -> None:
    (upload,), _ = _read("LOG-9.csv", _csv(
        f"{COI},LOG-9,DOSE-1,,2026-01-20T09:10:00Z,-72",
        f"{COI},LOG-9,DOSE-1,,2026-01-20T09:05:00Z,-71"))
    ((row, problem),) = upload.problems
    assert (row.row, problem.where) == (2, "at")
    assert "is before the reading of row 1 (line 2)" in problem.what


def test_a_row_that_names_no_therapy_logger_or_items_stands_alone() -> None:
    mistyped = COI[:-1] + ("Z" if COI[-1] != "Z" else "Y")
    uploads, loose = _read("LOG-9.csv", _csv(
        f"{mistyped},LOG-9,DOSE-1,,2026-01-20T09:00:00Z,-72",
        f"{COI},,DOSE-1,,2026-01-20T09:00:00Z,-72",
        f"{COI},LOG-9,,,2026-01-20T09:00:00Z,-72",
        f"{COI},LOG-9,DOSE-1,,2026-01-20T09:00:00Z,-72,extra"))
    assert uploads == []
    assert [(row.row, [p.where for p in problems]) for row, problems in loose] == [
        (1, ["coi"]), (2, ["logger_id"]), (3, ["item_ids"]), (4, ["(row)"])]


def test_a_column_the_export_does_not_have_is_named() -> None:
    data = (HEADER + ",humidity\n" + f"{COI},LOG-9,DOSE-1,,2026-01-20T09:00:00Z,-72,40\n")
    (upload,), _ = _read("LOG-9.csv", data.encode())
    assert [p.where for _, p in upload.problems] == ["humidity"]


@pytest.mark.parametrize(("data", "expect"), [
    (b"", "the CSV file is empty"), (b'[{"coi": ', "not JSON"),
    ("coi\n\xe9\n".encode("latin-1"), "not UTF-8")])
def test_an_unreadable_file_is_refused_whole(data: bytes, expect: str) -> None:
    name = "log.json" if data.startswith(b"[") else "log.csv"
    with pytest.raises(UnreadableFile, match=expect):
        read_drop_file(name, data)
