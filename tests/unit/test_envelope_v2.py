"""Envelope v2: the late-entry flag is signed, and v1 records stay verifiable.

An attacker with broker access and the public schemas can rewrite a record's bytes. Given a
late entry signed under envelope v2, when they strip its flag (re-encoding it as v1, whose
schema has no such field, or as v2 with the field null), change its reason, or dress an on-
time v1 record up as a v2 late entry, then the signature no longer verifies and the one log
reader refuses the record naming the signature; the record as written decodes and verifies.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from pcvhub.ids import new_coi
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import decode_envelope, encode_envelope
from pcvhub.schemas.envelope import ENVELOPE_VERSION, LateEntry
from pcvhub.trust.canonical import EVENT_CONTEXT, EVENT_CONTEXT_V2, signing_bytes
from pcvhub.trust.issuer import EventIssuer, IssuedEvent
from pcvhub.trust.signing import EventSigner, HybridKeyPair, PublicKeys, verify_envelope

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
REASON = "administered during the EMR outage, charted on paper"


@pytest.fixture(scope="module")
def signer() -> EventSigner:
    return EventSigner("site-1-emr", "site-1-emr-k1", HybridKeyPair.generate())


def _consent(issuer: EventIssuer, **options) -> IssuedEvent:
    return issuer.issue("ConsentGranted", new_coi("S1"),
                        {"scope": "TREATMENT", "consent_document_ref": "DocumentReference/1",
                         "expires_at": None}, occurred_at_us=T0, **options)


def _keys(signer: EventSigner) -> PublicKeys:
    return signer.keys.public


def test_producers_write_v2_and_the_flag_travels_in_the_signed_bytes(signer) -> None:
    late = _consent(EventIssuer(signer), late_entry=REASON)
    read = decode_envelope(late.wire)
    assert (read.version, read.late_entry) == (ENVELOPE_VERSION, LateEntry(REASON)) == (
        2, LateEntry(REASON))
    assert late.wire[2:10] == load_catalog().envelope_schema(2).fingerprint
    assert signing_bytes(read).startswith(EVENT_CONTEXT_V2)
    assert REASON.encode() in signing_bytes(read)
    assert verify_envelope(read, _keys(signer)).ok


def test_stripping_the_flag_breaks_the_signature(signer) -> None:
    read = decode_envelope(_consent(EventIssuer(signer), late_entry=REASON).wire)
    as_v1 = decode_envelope(encode_envelope(replace(read, late_entry=None, version=1)))
    assert as_v1.version == 1 and as_v1.late_entry is None
    as_v2_null = decode_envelope(encode_envelope(replace(read, late_entry=None)))
    reworded = decode_envelope(encode_envelope(replace(read, late_entry=LateEntry("typo"))))
    for forged in (as_v1, as_v2_null, reworded):
        result = verify_envelope(forged, _keys(signer))
        assert result.code == "SIGNATURE_INVALID", forged
        assert "Ed25519" in str(result) and "ML-DSA-65" in str(result)


def test_a_v1_record_stays_verifiable_and_cannot_be_made_late(signer) -> None:
    """v1 is what logs written before the cut-over hold: read, verified, never upgraded."""
    issuer = EventIssuer(signer)
    draft = replace(issuer.draft("ConsentGranted", new_coi("S1"), {
        "scope": "TREATMENT", "consent_document_ref": "DocumentReference/1",
        "expires_at": None}, occurred_at_us=T0), version=1)
    v1 = signer.seal(draft)
    wire = encode_envelope(v1)
    assert wire[2:10] == load_catalog().envelope_schema(1).fingerprint
    read = decode_envelope(wire)
    assert (read.version, read.late_entry) == (1, None)
    assert signing_bytes(read).startswith(EVENT_CONTEXT)
    assert verify_envelope(read, _keys(signer)).ok
    assert encode_envelope(read) == wire, "a v1 record re-encodes to the bytes it was signed in"
    dressed = decode_envelope(encode_envelope(replace(read, version=2,
                                                      late_entry=LateEntry(REASON))))
    assert verify_envelope(dressed, _keys(signer)).code == "SIGNATURE_INVALID"
    assert verify_envelope(replace(read, version=2), _keys(signer)).code == \
        "SIGNATURE_INVALID"


def test_a_batch_of_late_and_on_time_events_verifies_leaf_by_leaf(signer) -> None:
    issuer = EventIssuer(signer)
    coi = new_coi("S1")
    drafts = [issuer.chain(issuer.draft("ConsentGranted", coi, {
        "scope": scope, "consent_document_ref": "DocumentReference/1", "expires_at": None},
        occurred_at_us=T0 + i, late_entry=REASON if i == 1 else None))
        for i, scope in enumerate(("TREATMENT", "GENOME_STORAGE"))]
    batch = [decode_envelope(e.wire) for e in issuer.issue_batch(drafts)]
    assert [e.late_entry for e in batch] == [None, LateEntry(REASON)]
    assert all(verify_envelope(e, _keys(signer)).ok for e in batch)
    stripped = replace(batch[1], late_entry=None)
    assert verify_envelope(stripped, _keys(signer)).code == "BATCH_PATH_INVALID"


def test_a_v1_envelope_refuses_a_late_entry_flag(signer) -> None:
    draft = EventIssuer(signer).draft("ConsentGranted", new_coi("S1"), {
        "scope": "TREATMENT", "consent_document_ref": "DocumentReference/1",
        "expires_at": None}, occurred_at_us=T0, late_entry=REASON)
    with pytest.raises(ValueError, match="v1 envelope cannot carry a late-entry flag"):
        replace(draft, version=1)
