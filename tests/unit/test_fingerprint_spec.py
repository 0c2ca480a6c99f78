"""Fingerprints checked against the Avro specification's own algorithm, not a library's.

The specification ("Schema Fingerprints") defines CRC-64-AVRO as a table-driven Rabin
fingerprint with ``EMPTY = 0xc15d213aa4d7a795``, and single-object encoding as
``C3 01`` followed by "the 8-byte little-endian CRC-64-AVRO fingerprint of the object's
schema". The algorithm below is a transcription of the specification's Java text, so
these tests do not depend on any Avro library agreeing with itself.
"""

from __future__ import annotations

import json

import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from pcvhub.schemas.catalog import RELEASED_DIR, SchemaVersion, fingerprint, load_catalog
from pcvhub.schemas.codec import SINGLE_OBJECT_MAGIC, encode_envelope
from pcvhub.schemas.envelope import Envelope, SignatureMeaning

CATALOG = load_catalog()
EMPTY = 0xC15D213AA4D7A795


def _fingerprint_table() -> list[int]:
    """FP_TABLE of the specification's initFPTable()."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            # Java: fp = (fp >>> 1) ^ (EMPTY & -(fp & 1L)); -(fp & 1) is all ones or zero.
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp)
    return table


FP_TABLE = _fingerprint_table()


def rabin_fingerprint64(data: bytes) -> int:
    """The specification's fingerprint64(byte[] buf), as an unsigned 64-bit value."""
    fp = EMPTY
    for byte in data:
        fp = (fp >> 8) ^ FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


def spec_fingerprint_bytes(version: SchemaVersion) -> bytes:
    """What single-object encoding puts after C3 01: the value, least significant byte first."""
    canonical = to_parsing_canonical_form(version.raw).encode("utf-8")
    return rabin_fingerprint64(canonical).to_bytes(8, "little")


@pytest.mark.parametrize("canonical, java_long", [
    # From Apache Avro's cross-language test data (share/test/data/schema-tests.txt), where
    # the values are Java's signed longs.
    ('"null"', 7195948357588979594),
    ('"int"', 8247732601305521295),
    ('"string"', -8142146995180207161),
    ('{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
])
def test_the_transcribed_algorithm_gives_avros_published_values(canonical, java_long):
    assert rabin_fingerprint64(canonical.encode()) == java_long & (2**64 - 1)


@pytest.mark.parametrize("canonical", ['"string"', '"int"'])
def test_fastavro_and_ours_agree_with_the_spec_on_primitives(canonical):
    spec = rabin_fingerprint64(canonical.encode()).to_bytes(8, "little")
    assert bytes.fromhex(fastavro_fingerprint(canonical, "CRC-64-AVRO")) == spec
    assert fingerprint(json.loads(canonical)) == spec  # ours takes the schema, not its text


def test_released_envelope_v1_has_the_documented_fingerprint():
    """A fixed vector: the value 0xb2a3e5216910b837, least significant byte (37) first."""
    v1 = SchemaVersion.load(RELEASED_DIR / "pcvhub.Envelope" / "v1.avsc")
    canonical = to_parsing_canonical_form(v1.raw).encode()
    assert rabin_fingerprint64(canonical) == 0xB2A3E5216910B837
    assert fastavro_fingerprint(canonical.decode(), "CRC-64-AVRO") == "37b8106921e5a3b2"
    assert v1.fingerprint == bytes.fromhex("37b8106921e5a3b2")


@pytest.mark.parametrize("version", list(CATALOG.by_fingerprint.values()),
                         ids=lambda v: f"{v.full_name}@{v.path.parent.name}/{v.path.name}")
def test_every_catalog_fingerprint_is_the_spec_value_little_endian(version):
    assert version.fingerprint == spec_fingerprint_bytes(version)


def test_an_encoded_envelope_carries_the_spec_fingerprints():
    """Header bytes 2..10 name the envelope schema; schema_fingerprint names the payload's."""
    event = CATALOG.schema("DoseExpired")
    wire = encode_envelope(Envelope(
        event_id="0190c3a2-7b1e-7c3d-8e4f-123456789abc", event_type=event.full_name,
        schema_fingerprint=event.fingerprint, coi="PCV-S1-2026-000000000000X",
        occurred_at_us=1, signed_at_us=2, producer="p", key_id="k",
        meaning=SignatureMeaning.AUTHORED, prev_hash=b"", payload=b""))
    assert wire[:10] == SINGLE_OBJECT_MAGIC + spec_fingerprint_bytes(CATALOG.envelope)
    # Without a signature or batch proof the fixed-size schema_fingerprint is the 8 bytes
    # after the UUID string (length 36 as zigzag varint 0x48) and the event type string.
    type_bytes = event.full_name.encode()
    offset = 10 + 1 + 36 + 1 + len(type_bytes)
    assert wire[offset - len(type_bytes):offset] == type_bytes
    assert wire[offset:offset + 8] == spec_fingerprint_bytes(event)
