"""The wire decoder: whatever bytes arrive on a topic, the codec returns an envelope (and a
payload) or raises ``DecodeError`` naming the part it could not read, nothing else.

Seeds are the real wire bytes of a whole therapy as the demo's ``TherapyScenario`` signs
it (every event type of the happy path, the registry chain, a batch-signed event).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pcvhub.demo.therapy import Hub, TherapyScenario
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import (
    SINGLE_OBJECT_MAGIC,
    DecodeError,
    decode_envelope,
    decode_payload,
    encode_envelope,
)
from pcvhub.schemas.envelope import Envelope

from .mutate import mutated_bytes
from .profiles import bounded, fuzz_settings, label

pytestmark = pytest.mark.fuzz

CATALOG = load_catalog()


def _real_wires() -> list[bytes]:
    hub = Hub()
    scenario = TherapyScenario(hub)
    events = scenario.full_therapy()
    batched = scenario.actors["physician"].issuer.issue_batch(
        [scenario.actors["physician"].issuer.draft(
            "ConsentGranted", scenario.coi, {"scope": "RESEARCH",
                                             "consent_document_ref": "DocumentReference/9",
                                             "expires_at": None})
         for _ in range(3)])
    return ([e.raw for e in events] + [e.raw for e in hub.registry_log]
            + [e.wire for e in batched])


WIRES = _real_wires()
#: The parts of an envelope a DecodeError may name (``DecodeError.where``).
ENVELOPE_PARTS = {"envelope header", "envelope", "envelope field meaning"}
KNOWN_FINGERPRINTS = sorted(CATALOG.by_fingerprint)


def decodes_or_refuses(wire: bytes) -> Envelope | None:
    """The envelope of ``wire``, or None after checking the refusal names its part."""
    try:
        with bounded(5, "decode_envelope"):
            envelope = decode_envelope(wire)
    except DecodeError as refusal:
        label(f"refused: {refusal.where}")
        assert refusal.where in ENVELOPE_PARTS, refusal.where
        assert refusal.reason and str(refusal).startswith(f"cannot decode {refusal.where}: ")
        return None
    label("envelope decoded")
    assert isinstance(envelope, Envelope)
    return envelope


def payload_decodes_or_refuses(fingerprint: bytes, body: bytes, event_type: str | None
                               ) -> None:
    try:
        with bounded(5, "decode_payload"):
            name, payload = decode_payload(fingerprint, body, event_type)
    except DecodeError as refusal:
        label(f"payload refused: {refusal.where.split(' of ')[0]}")
        assert refusal.where in ("payload", "event_type") or \
            refusal.where.startswith("payload of pcvhub."), refusal.where
        assert refusal.reason
        return
    label("payload decoded")
    assert name in CATALOG.current and isinstance(payload, dict)


@fuzz_settings(0.5)
@given(st.binary(max_size=256))
@example(b"")
@example(SINGLE_OBJECT_MAGIC)
@example(SINGLE_OBJECT_MAGIC + CATALOG.envelope.fingerprint)
def test_arbitrary_bytes_are_an_envelope_or_a_decode_error(wire):
    decodes_or_refuses(wire)
    decodes_or_refuses(SINGLE_OBJECT_MAGIC + CATALOG.envelope.fingerprint + wire)


@fuzz_settings(1.0)
@given(mutated_bytes(WIRES))
def test_mutated_wire_bytes_are_an_envelope_or_a_decode_error(wire):
    envelope = decodes_or_refuses(wire)
    if envelope is None:
        return
    # What decodes must encode back to an envelope equal to it (no lossy field), and its
    # payload must decode or be refused the same way.
    assert decode_envelope(encode_envelope(envelope)) == envelope
    payload_decodes_or_refuses(envelope.schema_fingerprint, envelope.payload,
                               envelope.event_type)


@fuzz_settings(1.0)
@given(st.sampled_from(WIRES), st.data())
def test_mutated_payloads_under_their_real_fingerprint_decode_or_are_refused(wire, data):
    envelope = decode_envelope(wire)
    body = data.draw(mutated_bytes([envelope.payload]))
    fingerprint = data.draw(st.sampled_from(KNOWN_FINGERPRINTS)
                            | st.just(envelope.schema_fingerprint))
    event_type = data.draw(st.none() | st.just(envelope.event_type))
    payload_decodes_or_refuses(fingerprint, body, event_type)


@fuzz_settings(0.5)
@given(st.binary(min_size=0, max_size=12) | st.sampled_from(KNOWN_FINGERPRINTS),
       st.binary(max_size=128), st.none() | st.sampled_from(sorted(CATALOG.current)))
def test_random_fingerprints_and_bodies_decode_or_are_refused(fingerprint, body, event_type):
    payload_decodes_or_refuses(fingerprint, body, event_type)
