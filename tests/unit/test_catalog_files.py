"""The event catalog files: one self-contained, documented Avro record per event type.

These tests read the ``.avsc`` files directly (no project code), so they guard the catalog
itself: both Avro implementations accept every file, every field and enum is documented
and evolvable, and the set of event types is exactly the agreed one.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest

EVENTS_DIR = Path(__file__).resolve().parents[2] / "pcvhub" / "schemas" / "avro" / "events"
NAMESPACE = "pcvhub.events"

EVENT_TYPES = (
    "PatientEnrolled",
    "ConsentGranted",
    "ConsentWitnessed",
    "ConsentWithdrawn",
    "PatientCredentialIssued",
    "IdentityVerified",
    "TherapyOrdered",
    "DiagnosisRecorded",
    "EligibilityConfirmed",
    "SampleCollected",
    "CustodyReleased",
    "CustodyTransferred",
    "SampleReceived",
    "SequencingCompleted",
    "VariantCallsProduced",
    "GenomeStored",
    "GenomeRestored",
    "NeoantigenDesignProduced",
    "DesignApproved",
    "ManufacturingStarted",
    "ManufacturingStepCompleted",
    "QcResultRecorded",
    "BatchDispositioned",
    "ShipmentDispatched",
    "ShipmentReceived",
    "TemperatureExcursion",
    "QuarantineDispositioned",
    "TemperatureLogRecorded",
    "InventoryPlaced",
    "DoseReserved",
    "DoseDispensed",
    "DoseDestroyed",
    "DoseExpired",
    "AdministrationScheduled",
    "DoseAdministered",
    "AdverseEventReported",
    "OutcomeRecorded",
    "ClaimSubmitted",
    "ClaimAdjudicated",
    "PaymentPosted",
    "OutcomeMilestoneReached",
    "ResearchDataRequested",
    "StudyRequested",
    "StudyApproved",
    "StudyRunCompleted",
    "StudyResultPublished",
    "ActorRegistered",
    "KeyRotated",
    "KeyRevoked",
    "ModelRegistered",
    "ModelRetired",
    "EventRejected",
    "CustodyViolationDetected",
    "AlertRaised",
    "AlertAcknowledged",
    "AlertResolved",
)

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _load(name: str) -> dict[str, Any]:
    schema = json.loads((EVENTS_DIR / f"{name}.avsc").read_text(encoding="utf-8"))
    assert isinstance(schema, dict), f"{name}.avsc is not a JSON object"
    return schema


def _files() -> list[Path]:
    return sorted(EVENTS_DIR.glob("*.avsc"))


def _types(schema: Any) -> Iterator[Any]:
    """Every type node reachable from ``schema`` (records, enums, arrays, unions, ...)."""
    yield schema
    if isinstance(schema, list):
        for branch in schema:
            yield from _types(branch)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            for field in schema["fields"]:
                yield from _types(field["type"])
        elif kind == "array":
            yield from _types(schema["items"])
        elif kind == "map":
            yield from _types(schema["values"])
        elif isinstance(kind, (dict, list)):
            yield from _types(kind)


def _records(schema: Any) -> Iterator[dict[str, Any]]:
    return (t for t in _types(schema) if isinstance(t, dict) and t.get("type") == "record")


def _enums(schema: Any) -> Iterator[dict[str, Any]]:
    return (t for t in _types(schema) if isinstance(t, dict) and t.get("type") == "enum")


def _named(schema: Any) -> Iterator[dict[str, Any]]:
    return (t for t in _types(schema)
            if isinstance(t, dict) and t.get("type") in ("record", "enum", "fixed"))


def _field(name: str, field_name: str) -> dict[str, Any]:
    fields = {f["name"]: f for f in _load(name)["fields"]}
    assert field_name in fields, f"{name} has no field {field_name}"
    return fields[field_name]


def _example(schema: Any) -> Any:
    """A small valid datum for ``schema``, to prove the file really encodes and decodes."""
    if isinstance(schema, list):
        return _example(schema[-1])
    if isinstance(schema, str):
        return {"null": None, "boolean": True, "int": 1, "long": 1, "float": 1.0,
                "double": 1.0, "bytes": b"\x00\x01", "string": "x"}[schema]
    logical = schema.get("logicalType")
    if logical == "decimal":
        return Decimal("1234.50")
    if logical == "uuid":
        return "0190c3a2-7b1e-7c3d-8e4f-123456789abc"
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: _example(f["type"]) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "array":
        return [_example(schema["items"])]
    if kind == "map":
        return {"k": _example(schema["values"])}
    if kind == "fixed":
        return bytes(schema["size"])
    return _example(kind)


# -- the set of files ---------------------------------------------------------------------


def test_event_type_list_is_the_agreed_one() -> None:
    assert len(EVENT_TYPES) == 56
    assert len(set(EVENT_TYPES)) == 56


def test_file_stems_are_exactly_the_event_types() -> None:
    stems = {path.stem for path in _files()}
    missing, unexpected = set(EVENT_TYPES) - stems, stems - set(EVENT_TYPES)
    assert not missing and not unexpected, (
        f"missing: {sorted(missing)}, unexpected: {sorted(unexpected)}")


# -- each file ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_parses_with_fastavro(name: str) -> None:
    parsed = fastavro.parse_schema(_load(name), named_schemas={})
    assert parsed["name"] == f"{NAMESPACE}.{name}"


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_parses_with_apache_avro(name: str) -> None:
    parsed = avro.schema.parse((EVENTS_DIR / f"{name}.avsc").read_text(encoding="utf-8"))
    assert isinstance(parsed, avro.schema.RecordSchema)
    assert parsed.fullname == f"{NAMESPACE}.{name}"


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_record_name_is_file_stem_in_events_namespace(name: str) -> None:
    schema = _load(name)
    assert schema["type"] == "record"
    assert schema["name"] == name
    assert schema["namespace"] == NAMESPACE


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_every_record_and_field_is_documented(name: str) -> None:
    schema = _load(name)
    for record in _records(schema):
        assert str(record.get("doc", "")).strip(), f"{name}: record {record['name']} has no doc"
        assert record["fields"], f"{name}: record {record['name']} has no fields"
        for field in record["fields"]:
            assert str(field.get("doc", "")).strip(), (
                f"{name}: field {record['name']}.{field['name']} has no doc")


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_every_enum_has_a_default_symbol(name: str) -> None:
    for enum in _enums(_load(name)):
        assert "default" in enum, f"{name}: enum {enum['name']} has no default"
        assert enum["default"] in enum["symbols"], (
            f"{name}: enum {enum['name']} default {enum['default']!r} is not one of its symbols")


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_is_self_contained(name: str) -> None:
    """No reference to a named type defined elsewhere; every name defined once in the file."""
    schema = _load(name)
    defined = [t["name"] for t in _named(schema)]
    assert len(defined) == len(set(defined)), f"{name}: a named type is defined twice"
    for node in _types(schema):
        if isinstance(node, str):
            assert node in PRIMITIVES or node in defined, f"{name}: refers to {node!r}"


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_optional_fields_are_null_first_with_null_default(name: str) -> None:
    for record in _records(_load(name)):
        for field in record["fields"]:
            kind = field["type"]
            if isinstance(kind, list) and "null" in kind:
                assert kind[0] == "null", f"{name}.{field['name']}: null must come first"
                assert "default" in field and field["default"] is None, (
                    f"{name}.{field['name']}: optional field needs \"default\": null")


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_hash_fields_are_strings(name: str) -> None:
    for field in _load(name)["fields"]:
        if field["name"].endswith("_hash"):
            kind = field["type"]
            assert kind == "string" or kind == ["null", "string"], f"{name}.{field['name']}"
            assert "hex" in field["doc"].lower(), f"{name}.{field['name']}: say it is hex"


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_example_round_trips(name: str) -> None:
    schema = _load(name)
    parsed = fastavro.parse_schema(schema, named_schemas={})
    datum = _example(schema)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, datum)
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, parsed, parsed)
    assert set(decoded) == {f["name"] for f in schema["fields"]}


# -- across the catalog -------------------------------------------------------------------


def test_named_types_are_unique_across_the_catalog() -> None:
    """Loading every file into one registry must not silently overwrite a nested type."""
    seen: dict[str, str] = {}
    for name in EVENT_TYPES:
        for node in _named(_load(name)):
            full = node["name"] if "." in node["name"] else (
                f"{node.get('namespace', NAMESPACE)}.{node['name']}")
            assert full not in seen, f"{full} is defined in both {seen.get(full)} and {name}"
            seen[full] = name


def test_envelope_fields_are_not_repeated_in_payloads() -> None:
    envelope_only = {"coi", "event_id", "occurred_at_us", "producer", "event_type"}
    for name in EVENT_TYPES:
        clash = envelope_only & {f["name"] for f in _load(name)["fields"]}
        assert not clash, f"{name} repeats envelope fields {sorted(clash)}"


def test_no_direct_patient_identifiers() -> None:
    forbidden = re.compile(r"(^|_)(mrn|patient_name|first_name|last_name|surname|ssn)($|_)")
    for name in EVENT_TYPES:
        for record in _records(_load(name)):
            for field in record["fields"]:
                if field["name"] == "mrn_assigning_authority":
                    continue
                assert not forbidden.search(field["name"]), f"{name}.{field['name']}"


def test_timestamp_micros_is_used() -> None:
    found = [name for name in EVENT_TYPES for node in _types(_load(name))
             if isinstance(node, dict) and node.get("logicalType") == "timestamp-micros"]
    assert found


def test_claim_amount_is_a_decimal() -> None:
    kind = _field("ClaimSubmitted", "amount")["type"]
    assert kind == {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}
    assert _field("ClaimSubmitted", "currency")["type"] == "string"


def test_administration_identity_check_is_a_uuid() -> None:
    kind = _field("DoseAdministered", "identity_check_event_id")["type"]
    assert kind == {"type": "string", "logicalType": "uuid"}


def test_birth_date_is_an_optional_date() -> None:
    field = _field("PatientEnrolled", "birth_date")
    assert field["type"] == ["null", {"type": "int", "logicalType": "date"}]
    assert field["default"] is None


def test_walker_reaches_nested_record_fields() -> None:
    """The doc check recurses: an undocumented field in a nested record is found."""
    nested = {"type": "record", "name": "Outer", "doc": "d", "fields": [
        {"name": "inner", "doc": "d", "type": ["null", {
            "type": "array", "items": {"type": "record", "name": "Inner", "doc": "d",
                                       "fields": [{"name": "x", "type": "int"}]}}]}]}
    undocumented = [f["name"] for r in _records(nested) for f in r["fields"] if not f.get("doc")]
    assert undocumented == ["x"]
