"""The envelope every pcvhub event travels in (ground floor: imports nothing of ours).

The envelope is the contract between producers, the gatekeeper and the projections.
Its Avro form is ``pcvhub/schemas/avro/pcvhub.Envelope.avsc``; this dataclass is the
in-memory form that the trust floor signs and verifies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SignatureMeaning(enum.StrEnum):
    """Why the signer signed (21 CFR Part 11 §11.50): bound into the signed bytes.

    Which event type must be signed with which meaning is a column of the policy table
    (``pcvhub.schemas.policy``); every other event type is signed AUTHORED.
    """

    AUTHORED = "AUTHORED"
    REVIEWED = "REVIEWED"
    APPROVED = "APPROVED"
    RESPONSIBLE = "RESPONSIBLE"
    VERIFIED = "VERIFIED"


@dataclass(frozen=True)
class HybridSignature:
    """Both halves are required: a verifier rejects an event missing either."""

    ed25519: bytes
    ml_dsa_65: bytes


@dataclass(frozen=True)
class MerkleProof:
    """Inclusion of one event in a batch whose root carries the hybrid signature (RFC 9162)."""

    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...]
    root: bytes


@dataclass(frozen=True)
class LateEntry:
    """A signed statement that a record is entered late (21 CFR Part 11; ALCOA+
    "contemporaneous"): what happened at ``occurred_at`` is recorded only now, and why.

    Producers mark an event late when its occurred-at lies further back than the
    deployment's late-entry bound (``pcvhub.streams.timebounds``); the flag and its reason
    are inside the signed bytes (envelope v2), so nobody can add or strip it afterwards.
    """

    reason: str


#: The envelope version producers write (Avro ``pcvhub.Envelope`` v2, signing context v2).
#: v1 (no late-entry field) is read and verified for ever: it is on logs already.
ENVELOPE_VERSION = 2


@dataclass(frozen=True)
class Envelope:
    """One signed event.

    ``payload`` is the Avro binary body of the schema named by ``event_type`` and
    identified by ``schema_fingerprint`` (CRC-64-AVRO, 8 bytes little-endian; records
    written before the byte-order fix carry it byte-reversed, and it is kept exactly as
    read because the signature covers it).
    ``prev_hash`` is the chain digest of the previous accepted event of the same
    CoI, or ``b""`` for the first event of a therapy.
    Times are microseconds since the Unix epoch, UTC.
    ``late_entry`` (v2 only) marks a record entered after the fact, with its reason.
    ``version`` is the envelope version the record was written in: it picks the Avro schema
    and the signing context (``pcvhub.trust.canonical``), so a v2 record re-encoded as v1
    to drop its late-entry flag no longer verifies, nor a v1 record dressed up as v2.
    """

    event_id: str
    event_type: str
    schema_fingerprint: bytes
    coi: str
    occurred_at_us: int
    signed_at_us: int
    producer: str
    key_id: str
    meaning: SignatureMeaning
    prev_hash: bytes
    payload: bytes
    signature: HybridSignature | None = None
    batch_proof: MerkleProof | None = None
    late_entry: LateEntry | None = None
    version: int = ENVELOPE_VERSION

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"event {self.event_id}: unknown envelope version {self.version}")
        if self.version == 1 and self.late_entry is not None:
            raise ValueError(f"event {self.event_id}: a v1 envelope cannot carry a late-entry "
                             "flag (it has no such signed field); write it as v2")
