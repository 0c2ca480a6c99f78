"""The bytes a signature covers, and the per-therapy chain digest.

A signature never covers a re-serialised dict: it covers a domain-separated byte string
built field by field, each field length-prefixed, in a fixed order, with the payload
represented by its SHA-256. Changing any field, the payload, or the purpose of the bytes
(an event signature versus a batch root versus a chain link) changes what is signed.
The signer's meaning (authored, approved...) is one of the fields, so a Part 11
signature cannot be moved to another meaning or record.
"""

from __future__ import annotations

import hashlib
import struct

from pcvhub.schemas.envelope import Envelope

EVENT_CONTEXT = b"pcvhub/event-signature/v1\x00"  # envelope v1
# Envelope v2 signs one more field, the late-entry flag; its own context means a v2
# signature can never be read as a v1 one (or back) by dropping or adding that field.
EVENT_CONTEXT_V2 = b"pcvhub/event-signature/v2\x00"
BATCH_CONTEXT = b"pcvhub/batch-root-signature/v1\x00"
CHAIN_CONTEXT = b"pcvhub/chain-link/v1\x00"
BEDSIDE_CONTEXT = b"pcvhub/bedside-challenge/v1\x00"
CONSENT_TOKEN_CONTEXT = b"pcvhub/consent-token/v1\x00"
# ML-DSA takes a context string (FIPS 204 section 5.2); Ed25519 in `cryptography` does not,
# so the domain separation above also lives inside the message for both halves.
ML_DSA_CONTEXT = b"pcvhub"

#: The envelope fields the signature covers, in signing order. Verification failures name
#: them, so this tuple is also the vocabulary of "what was signed".
SIGNED_FIELDS = ("event_id", "event_type", "schema_fingerprint", "coi", "occurred_at_us",
                 "signed_at_us", "producer", "key_id", "meaning", "prev_hash", "payload",
                 "late_entry")  # late_entry: envelope v2 only


def _item(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def signing_bytes(env: Envelope) -> bytes:
    """What a hybrid signature over one event covers (also a Merkle leaf of a batch)."""
    parts = [
        env.event_id.encode(), env.event_type.encode(), bytes(env.schema_fingerprint),
        env.coi.encode(), struct.pack(">q", env.occurred_at_us),
        struct.pack(">q", env.signed_at_us), env.producer.encode(), env.key_id.encode(),
        env.meaning.value.encode(), bytes(env.prev_hash), hashlib.sha256(env.payload).digest(),
    ]
    if env.version == 1:
        return EVENT_CONTEXT + b"".join(_item(p) for p in parts)
    # v2: the late-entry flag, one byte (0 on time, 1 late) then the reason's UTF-8
    late = env.late_entry
    parts.append(b"\x00" if late is None else b"\x01" + late.reason.encode())
    return EVENT_CONTEXT_V2 + b"".join(_item(p) for p in parts)


def batch_signing_bytes(root: bytes, tree_size: int) -> bytes:
    """What the hybrid signature of a batch covers: its Merkle tree head."""
    return BATCH_CONTEXT + struct.pack(">Q", tree_size) + _item(root)


def chain_digest(env: Envelope) -> bytes:
    """The link the next event of the same therapy names as ``prev_hash`` (R3).

    Computed over the signed content, not the signatures, so a batch producer can chain
    drafts before the batch is signed.
    """
    return hashlib.sha256(CHAIN_CONTEXT + signing_bytes(env)).digest()


def bedside_challenge_bytes(coi: str, patient_actor_id: str, key_id: str, dose_id: str,
                            administration_id: str, challenge: bytes, issued_at_us: int,
                            biometric_template_hash: str | None) -> bytes:
    """What a patient's card signs at the bedside: the fresh challenge bound to this therapy,
    dose and administration (and, after a match-on-card, the enrolled template's hash), so
    an answer cannot be replayed for another dose, another therapy or another patient."""
    parts = [coi.encode(), patient_actor_id.encode(), key_id.encode(), dose_id.encode(),
             administration_id.encode(), challenge, struct.pack(">q", issued_at_us),
             (biometric_template_hash or "").encode()]
    return BEDSIDE_CONTEXT + b"".join(_item(p) for p in parts)


def consent_token_bytes(coi: str, patient_actor_id: str, key_id: str, purpose: str,
                        requester: str, expires_at_us: int, nonce: bytes) -> bytes:
    """What a patient's card signs to let ``requester`` use their data once for
    ``purpose`` (a vault restore, for example) until ``expires_at_us``."""
    parts = [coi.encode(), patient_actor_id.encode(), key_id.encode(), purpose.encode(),
             requester.encode(), struct.pack(">q", expires_at_us), nonce]
    return CONSENT_TOKEN_CONTEXT + b"".join(_item(p) for p in parts)
