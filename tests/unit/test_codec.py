"""The wire format: single-object encoding, cross-implementation reading, clear errors."""

from __future__ import annotations

import io
import json
import random

import avro.io
import avro.schema
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from pcvhub.ids import new_coi, uuid7
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import (
    SINGLE_OBJECT_MAGIC,
    DecodeError,
    SchemaValidationError,
    decode_envelope,
    decode_payload,
    encode_envelope,
    encode_payload,
)
from pcvhub.schemas.envelope import Envelope, HybridSignature, MerkleProof, SignatureMeaning

from .avro_samples import sample

CATALOG = load_catalog()


def _envelope(**changes) -> Envelope:
    fp, body = encode_payload("ConsentGranted", {
        "scope": "RESEARCH", "consent_document_ref": "DocumentReference/77",
        "expires_at": None})
    fields = dict(event_id=str(uuid7()), event_type="pcvhub.events.ConsentGranted",
                  schema_fingerprint=fp, coi=new_coi("S1"), occurred_at_us=1_764_000_000_000_001,
                  signed_at_us=1_764_000_000_000_002, producer="site-1-emr", key_id="k1",
                  meaning=SignatureMeaning.AUTHORED, prev_hash=b"\x01" * 32, payload=body,
                  signature=HybridSignature(b"e" * 64, b"m" * 3309), batch_proof=None)
    fields.update(changes)
    return Envelope(**fields)


def _fastavro_fingerprint(version) -> bytes:
    """fastavro's CRC-64-AVRO hex spells the little-endian bytes: read as is, never reversed."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(version.raw), "CRC-64-AVRO"))


def test_envelope_round_trips_with_and_without_batch_proof():
    plain = _envelope()
    batched = _envelope(batch_proof=MerkleProof(3, 7, (b"a" * 32, b"b" * 32), b"r" * 32))
    header = SINGLE_OBJECT_MAGIC + _fastavro_fingerprint(CATALOG.envelope)
    for env in (plain, batched, _envelope(signature=None, prev_hash=b"")):
        wire = encode_envelope(env)
        assert wire[:10] == header
        assert env.schema_fingerprint == _fastavro_fingerprint(CATALOG.schema(env.event_type))
        assert decode_envelope(wire) == env


@pytest.mark.parametrize("event_type", CATALOG.event_types())
def test_every_event_type_round_trips(event_type):
    schema = CATALOG.schema(event_type)
    rng = random.Random(event_type)
    for _ in range(20):
        datum = sample(schema.raw, rng)
        fp, body = encode_payload(event_type, datum)
        name, back = decode_payload(fp, body, event_type)
        assert name == event_type
        assert back == datum


def _apache_schema(version):
    return avro.schema.parse(json.dumps(version.raw))


def _apache_fingerprint(version) -> bytes:
    """Apache avro (Python 1.12) keeps ``{"type": "string"}`` for logical-type primitives
    in its canonical form, against the specification's PRIMITIVES rule (Java and fastavro
    reduce it to ``"string"``). So Apache fingerprints the specification's canonical form
    (which carries no logical types). It returns the 8 bytes little-endian, exactly as
    single-object encoding stores them."""
    return avro.schema.parse(to_parsing_canonical_form(version.raw)).fingerprint("CRC-64-AVRO")


def test_fingerprints_agree_with_apache_avro():
    for version in CATALOG.by_fingerprint.values():
        assert _apache_fingerprint(version) == version.fingerprint, version.path


@pytest.mark.parametrize("event_type", CATALOG.event_types())
def test_fastavro_writes_apache_reads_and_back(event_type):
    version = CATALOG.schema(event_type)
    apache = _apache_schema(version)
    datum = sample(version.raw, random.Random(f"x-{event_type}"))
    _, body = encode_payload(event_type, datum)
    read = avro.io.DatumReader(apache).read(avro.io.BinaryDecoder(io.BytesIO(body)))
    out = io.BytesIO()
    avro.io.DatumWriter(apache).write(read, avro.io.BinaryEncoder(out))
    assert out.getvalue() == body
    _, back = decode_payload(version.fingerprint, out.getvalue(), event_type)
    assert back == datum


def test_apache_avro_reads_a_whole_envelope_from_its_wire_bytes():
    """Read as a single-object reader would: the header's fingerprint finds the envelope
    schema, the envelope's schema_fingerprint finds the payload schema (Apache's values)."""
    schemas_by_apache_fingerprint = {_apache_fingerprint(v): v for v in CATALOG.current.values()}
    env = _envelope()
    wire = encode_envelope(env)
    assert wire[:2] == SINGLE_OBJECT_MAGIC
    envelope_version = schemas_by_apache_fingerprint[wire[2:10]]
    assert envelope_version.full_name == "pcvhub.Envelope"
    record = avro.io.DatumReader(_apache_schema(envelope_version)).read(
        avro.io.BinaryDecoder(io.BytesIO(wire[10:])))
    assert record["event_id"] == env.event_id
    assert record["coi"] == env.coi
    assert record["payload"] == env.payload
    assert record["signature"]["ml_dsa_65"] == env.signature.ml_dsa_65
    payload_version = schemas_by_apache_fingerprint[record["schema_fingerprint"]]
    assert payload_version.full_name == env.event_type
    payload = avro.io.DatumReader(_apache_schema(payload_version)).read(
        avro.io.BinaryDecoder(io.BytesIO(record["payload"])))
    assert payload["consent_document_ref"] == "DocumentReference/77"


def test_missing_field_is_named():
    with pytest.raises(SchemaValidationError) as err:
        encode_payload("DoseAdministered", {"dose_id": "D1"})
    assert err.value.field.endswith("DoseAdministered.administration_id")
    assert "missing" in str(err.value)


def test_wrong_type_is_named_with_value():
    datum = sample(CATALOG.schema("QcResultRecorded").raw, random.Random(1))
    datum["batch_id"] = 42
    with pytest.raises(SchemaValidationError) as err:
        encode_payload("QcResultRecorded", datum)
    assert err.value.field.endswith("batch_id") and "42" in err.value.reason


def test_unknown_field_is_named():
    datum = sample(CATALOG.schema("QcResultRecorded").raw, random.Random(2))
    datum["colour"] = "blue"
    with pytest.raises(SchemaValidationError, match="colour"):
        encode_payload("QcResultRecorded", datum)


def test_bad_enum_symbol_is_named():
    datum = sample(CATALOG.schema("ConsentGranted").raw, random.Random(3))
    datum["scope"] = "EVERYTHING"
    with pytest.raises(SchemaValidationError) as err:
        encode_payload("ConsentGranted", datum)
    assert err.value.field.endswith("scope")


@pytest.mark.parametrize("wire, where", [
    (b"", "envelope header"),
    (b"\x00\x01" + b"\x00" * 30, "envelope header"),
    (SINGLE_OBJECT_MAGIC + b"\xff" * 8 + b"\x00" * 30, "envelope header"),
])
def test_garbage_headers_are_refused_with_the_part_named(wire, where):
    with pytest.raises(DecodeError) as err:
        decode_envelope(wire)
    assert err.value.where == where


def test_truncated_and_padded_envelopes_are_refused():
    wire = encode_envelope(_envelope())
    with pytest.raises(DecodeError, match="envelope"):
        decode_envelope(wire[:-100])
    with pytest.raises(DecodeError, match="trailing bytes"):
        decode_envelope(wire + b"\x00")


def test_payload_with_unknown_fingerprint_or_mismatched_type_is_refused():
    env = _envelope()
    with pytest.raises(DecodeError, match="not in the catalog"):
        decode_payload(b"\x00" * 8, env.payload)
    with pytest.raises(DecodeError, match="envelope says"):
        decode_payload(env.schema_fingerprint, env.payload, "pcvhub.events.DoseExpired")
