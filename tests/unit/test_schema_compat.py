"""`pcvhub schemas check`: passes on main, fails on a change that breaks old data."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from pcvhub.cli import app
from pcvhub.schemas.catalog import RELEASED_DIR, current_schema_files
from pcvhub.schemas.compat import check


def test_check_passes_on_main():
    result = CliRunner().invoke(app, ["schemas", "check"])
    assert result.exit_code == 0, result.output
    assert "reader/writer pairs checked" in result.output
    report = check()
    assert report.ok and report.checked_pairs >= len(current_schema_files())


def _edited(tmp_path, name, edit):
    """A copy of the current catalog with one schema edited, and a copy of released/."""
    released = tmp_path / "released"
    shutil.copytree(RELEASED_DIR, released)
    files = []
    for path in current_schema_files():
        raw = json.loads(path.read_text())
        if path.stem == name:
            edit(raw)
        copy = tmp_path / "current" / path.name
        copy.parent.mkdir(exist_ok=True)
        copy.write_text(json.dumps(raw))
        files.append(copy)
    return files, released


def test_new_required_field_breaks_backward_compatibility(tmp_path):
    def add_required(raw):
        raw["fields"].append({"name": "lot_size", "type": "int", "doc": "units"})
    files, released = _edited(tmp_path, "QcResultRecorded", add_required)
    report = check(files, released)
    assert not report.ok
    # one finding per released version the new reader could no longer read
    first, second = report.errors
    assert {first.schema, second.schema} == {"pcvhub.events.QcResultRecorded"}
    assert all("lot_size" in f.problem for f in report.errors)
    assert "v1.avsc" in first.problem and "v2.avsc" in second.problem


def test_changed_field_type_breaks_backward_compatibility(tmp_path):
    def retype(raw):
        next(f for f in raw["fields"] if f["name"] == "batch_id")["type"] = "long"
    files, released = _edited(tmp_path, "QcResultRecorded", retype)
    report = check(files, released)
    assert [e.schema for e in report.errors] == ["pcvhub.events.QcResultRecorded"] * 2


def test_optional_field_with_default_is_compatible_but_must_be_released(tmp_path):
    def add_optional(raw):
        raw["fields"].append({"name": "analyst_note", "type": ["null", "string"],
                              "default": None, "doc": "free text"})
    files, released = _edited(tmp_path, "QcResultRecorded", add_optional)
    report = check(files, released)
    assert report.errors == ()
    assert report.unreleased == ("pcvhub.events.QcResultRecorded",)
    assert not report.ok


def test_removing_a_released_event_type_is_refused(tmp_path):
    files, released = _edited(tmp_path, "", lambda raw: None)
    files = [f for f in files if f.stem != "DoseExpired"]
    report = check(files, released)
    assert [e.schema for e in report.errors] == ["pcvhub.events.DoseExpired"]
