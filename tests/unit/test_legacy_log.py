"""Records pcvhub wrote before the fingerprint byte-order fix stay readable and verifiable.

``tests/data/legacy-log/`` holds one signed record of every event type (plus two signed
as a batch) written by the old codec, which put every CRC-64-AVRO fingerprint
byte-reversed: in the single-object header and in the envelope's ``schema_fingerprint``
(see ``make_fixture.py`` there). Their signatures and chain digests cover
``schema_fingerprint`` as written, so the reader must accept that form without rewriting
it, and the writer must never produce it again.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pcvhub.schemas.catalog import (
    Catalog,
    FingerprintForm,
    legacy_reversed_fingerprint,
    load_catalog,
)
from pcvhub.schemas.codec import (
    SINGLE_OBJECT_MAGIC,
    DecodeError,
    decode_envelope,
    decode_payload,
    encode_envelope,
)
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.signing import PublicKeys, verify_envelope

from .avro_samples import plain

LEGACY_LOG = Path(__file__).resolve().parents[1] / "data" / "legacy-log"
CATALOG = load_catalog()


def _records() -> list[dict]:
    lines = (LEGACY_LOG / "records.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _signer_keys() -> PublicKeys:
    signer = json.loads((LEGACY_LOG / "signer.json").read_text())
    return PublicKeys(bytes.fromhex(signer["ed25519"]), bytes.fromhex(signer["ml_dsa_65"]))


RECORDS = _records()


# event types introduced after the byte-order fix were never written in the legacy form
NEWER_THAN_THE_FIX = {"pcvhub.events.GenomeStored", "pcvhub.events.AlertAcknowledged",
                      "pcvhub.events.AlertResolved", "pcvhub.events.PatientCredentialIssued",
                      "pcvhub.events.ConsentWitnessed", "pcvhub.events.CustodyReleased",
                      "pcvhub.events.QuarantineDispositioned", "pcvhub.events.ModelRegistered",
                      "pcvhub.events.ModelRetired", "pcvhub.events.TemperatureLogRecorded",
                      "pcvhub.events.GenomeRestored", "pcvhub.events.StudyRequested",
                      "pcvhub.events.StudyApproved", "pcvhub.events.StudyRunCompleted",
                      "pcvhub.events.StudyResultPublished"}


def test_the_fixture_has_every_event_type_and_both_signing_paths():
    assert {r["event_type"] for r in RECORDS} == set(CATALOG.event_types()) - NEWER_THAN_THE_FIX
    assert {r["signed"] for r in RECORDS} == {"individually", "batch"}


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: f"{r['event_type']}-{r['signed']}")
def test_a_legacy_record_decodes_and_its_signature_verifies(record):
    wire = bytes.fromhex(record["wire"])
    header = CATALOG.version_for_fingerprint(wire[2:10])
    assert header is not None and header.form is FingerprintForm.LEGACY_REVERSED
    assert header.version.full_name == "pcvhub.Envelope"

    envelope = decode_envelope(wire)
    assert envelope.event_type == record["event_type"]
    payload_schema = CATALOG.version_for_fingerprint(envelope.schema_fingerprint)
    assert payload_schema is not None and payload_schema.is_legacy
    assert envelope.schema_fingerprint == legacy_reversed_fingerprint(
        payload_schema.version.fingerprint)  # as on the wire, not normalised

    full_name, payload = decode_payload(envelope.schema_fingerprint, envelope.payload,
                                        envelope.event_type)
    assert full_name == record["event_type"]
    decoded = plain(payload)
    # a field added to the schema since the record was written reads as its default
    added = {name: decoded.pop(name) for name in set(decoded) - set(record["payload"])}
    assert set(added.values()) <= {None}, added
    assert decoded == record["payload"]

    verification = verify_envelope(envelope, _signer_keys())
    assert verification.ok, str(verification)


def test_legacy_records_still_chain():
    """prev_hash of each record is the chain digest of the one before, computed over the
    legacy schema_fingerprint bytes: the reader keeps them, so the chain still links."""
    envelopes = [decode_envelope(bytes.fromhex(r["wire"])) for r in RECORDS]
    assert envelopes[0].prev_hash == b""
    for before, after in zip(envelopes, envelopes[1:], strict=False):
        assert after.prev_hash == chain_digest(before), after.event_type


def test_normalising_a_legacy_schema_fingerprint_would_break_its_signature():
    """Why the reader must not "fix" the field: the signature covers the bytes as written."""
    envelope = decode_envelope(bytes.fromhex(RECORDS[0]["wire"]))
    normalised = replace(envelope, schema_fingerprint=legacy_reversed_fingerprint(
        envelope.schema_fingerprint))
    assert decode_payload(normalised.schema_fingerprint, normalised.payload)[0] == \
        envelope.event_type
    assert not verify_envelope(normalised, _signer_keys()).ok


def test_re_encoding_a_legacy_envelope_writes_the_spec_header_and_keeps_the_body():
    wire = bytes.fromhex(RECORDS[0]["wire"])
    envelope = decode_envelope(wire)
    assert envelope.version == 1  # written before envelope v2: re-encoded in its own version
    again = encode_envelope(envelope)
    assert again[:10] == SINGLE_OBJECT_MAGIC + CATALOG.envelope_schema(1).fingerprint
    assert CATALOG.envelope_schema(1).fingerprint != CATALOG.envelope.fingerprint
    assert again[2:10] == legacy_reversed_fingerprint(wire[2:10])
    assert again[10:] == wire[10:]


def test_version_for_fingerprint_names_the_form():
    version = CATALOG.schema("DoseAdministered")
    spec = CATALOG.version_for_fingerprint(version.fingerprint)
    legacy = CATALOG.version_for_fingerprint(legacy_reversed_fingerprint(version.fingerprint))
    # The version found may be the released copy of the same schema: compare what it is.
    assert spec.version.fingerprint == version.fingerprint
    assert spec.form is FingerprintForm.SPEC and not spec.is_legacy
    assert legacy.version.fingerprint == version.fingerprint
    assert legacy.form is FingerprintForm.LEGACY_REVERSED and legacy.is_legacy
    assert CATALOG.version_for_fingerprint(b"\x00" * 8) is None


def test_by_fingerprint_holds_only_the_spec_form():
    assert all(fp == version.fingerprint for fp, version in CATALOG.by_fingerprint.items())
    assert not any(legacy_reversed_fingerprint(fp) in CATALOG.by_fingerprint
                   for fp in CATALOG.by_fingerprint)


def test_a_reversed_fingerprint_that_is_another_schemas_real_one_is_refused():
    """Were it ever so, a record could be read with the wrong schema: loading must fail."""
    first = CATALOG.schema("DoseAdministered")
    impostor = replace(CATALOG.schema("DoseExpired"),
                       fingerprint=legacy_reversed_fingerprint(first.fingerprint))
    with pytest.raises(ValueError, match="byte-reversed fingerprint"):
        Catalog([first, impostor], [])


def test_an_unknown_fingerprint_in_either_form_is_refused():
    wire = bytearray(bytes.fromhex(RECORDS[0]["wire"]))
    wire[2:10] = b"\x01" * 8
    with pytest.raises(DecodeError) as err:
        decode_envelope(bytes(wire))
    assert err.value.where == "envelope header"


def test_the_gatekeeper_refuses_new_input_in_the_legacy_form_and_names_why():
    """Old records stay readable on the log; a producer still writing the reversed form is
    told so at the door, before any rule, so nothing non-conformant reaches the log."""
    from pcvhub.streams.event import SourcePosition
    from pcvhub.streams.gatekeeper import Gatekeeper, PartitionLedger
    from pcvhub.streams.rules import default_rules
    from pcvhub.streams.timebounds import SIMULATION
    from pcvhub.trust.issuer import EventIssuer
    from pcvhub.trust.signing import EventSigner, HybridKeyPair

    from .therapy_builder import Hub

    hub = Hub()
    gatekeeper = Gatekeeper(default_rules(hub.registry, bounds=SIMULATION), EventIssuer(EventSigner(
        "hub-gatekeeper", "gk-1", HybridKeyPair.generate())), hub.registry)
    record = next(r for r in RECORDS if r["event_type"].endswith("SampleCollected"))
    wire = bytes.fromhex(record["wire"])
    coi = decode_envelope(wire).coi.encode()
    outputs = gatekeeper.judge(wire, coi, SourcePosition("ingress.direct", 0, 0),
                               PartitionLedger(0))
    assert [o.topic for o in outputs] == ["rejected"]
    refusal = decode_envelope(outputs[0].value)
    _, payload = decode_payload(refusal.schema_fingerprint, refusal.payload)
    assert (payload["rule"], payload["reason_code"]) == ("R0", "LEGACY_FINGERPRINT")
    assert "byte-reversed" in payload["reason"] and payload["original"] == wire
