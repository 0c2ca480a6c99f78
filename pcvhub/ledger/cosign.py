"""Witness cosignatures of a checkpoint (c2sp.org/tlog-cosignature v1.1.0-rc.1).

A witness signs each checkpoint it accepted twice, under its own name:

1. Ed25519 ``cosignature/v1`` (type 0x04): ``— <witness> base64(key id || u64 timestamp
   || Ed25519 signature)``, the signature over ``"cosignature/v1\\ntime <t>\\n" || the
   checkpoint body``; key id = SHA-256(name || 0x0A || 0x04 || public key)[:4]. Any
   tlog-cosignature verifier reads it (Go: transparency-dev/formats).
2. ML-DSA-44 (type 0x06): the same ``cosigned_message`` the log's own post-quantum line
   signs (``note.cosigned_message``), with the witness's name.

Both say: as of ``timestamp``, this is the largest tree the witness has seen for the
origin, consistent with every earlier one it saw. ``verify_cosignatures`` counts, per
configured witness, whether both of its lines verify; lines of other keys are ignored.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.note import (
    COSIGNATURE_V1_TYPE,
    EM_DASH,
    ML_DSA_44_SIGNATURE_SIZE,
    ML_DSA_44_TYPE,
    Checkpoint,
    LogKeys,
    SignedNote,
    VerifierKey,
    cosigned_message,
)

_TIMESTAMP = struct.Struct(">Q")


def cosignature_v1_message(timestamp: int, body: bytes) -> bytes:
    """What an Ed25519 cosignature/v1 signs: header line, time line, checkpoint body."""
    return b"cosignature/v1\ntime %d\n" % timestamp + body


class WitnessKeys(LogKeys):
    """A witness's two keys: Ed25519 (cosignature/v1, 0x04) and ML-DSA-44 (0x06).

    Stored like the log's keys (``log.save_keys``), but its Ed25519 vkey is type 0x04: a
    cosignature is not a plain note signature, and a key must never serve as both.
    """

    @property
    def ed25519_vkey(self) -> VerifierKey:
        return VerifierKey(self.name, COSIGNATURE_V1_TYPE,
                           self.ed25519.public_key().public_bytes_raw())

    def sign(self, checkpoint: Checkpoint, timestamp: int) -> bytes:
        raise LedgerError(f"{self.name} is a witness: it cosigns checkpoints (cosign), it "
                          "does not sign a log's")

    def cosign(self, checkpoint: Checkpoint, timestamp: int) -> bytes:
        """The response body of add-checkpoint: the witness's two signature lines."""
        if not 0 <= timestamp < 2**63:
            raise LedgerError(f"cosignature timestamp {timestamp} outside 0..2^63-1")
        stamp = _TIMESTAMP.pack(timestamp)
        ed_line = (self.ed25519_vkey.key_id + stamp
                   + self.ed25519.sign(cosignature_v1_message(timestamp, checkpoint.body())))
        pq_line = (self.ml_dsa_44_vkey.key_id + stamp
                   + self.ml_dsa_44.sign(cosigned_message(self.name, timestamp, checkpoint)))
        return b"".join(f"{EM_DASH} {self.name} {base64.b64encode(sig).decode()}\n".encode()
                        for sig in (ed_line, pq_line))


@dataclass(frozen=True)
class WitnessKey:
    """A configured witness as a log (or a reader) knows it: name, vkeys, and where its
    submission prefix is (empty for a reader that only verifies).

    ``ml_dsa_44`` is None for a witness that cosigns with Ed25519 only (tlog-cosignature
    lets a client be configured per key and version; Go's litewitness is one such): then
    only its cosignature/v1 line is required, and the table says so.
    """

    name: str
    ed25519: VerifierKey
    ml_dsa_44: VerifierKey | None
    url: str = ""

    def __post_init__(self) -> None:
        if self.ed25519.sig_type != COSIGNATURE_V1_TYPE or (
                self.ml_dsa_44 is not None and self.ml_dsa_44.sig_type != ML_DSA_44_TYPE):
            raise LedgerError(f"witness {self.name}: give its type 0x04 (Ed25519 "
                              "cosignature/v1) vkey and, if it has one, its type 0x06 "
                              "(ML-DSA-44) vkey")
        names = {self.ed25519.name} | ({self.ml_dsa_44.name} if self.ml_dsa_44 else set())
        if names != {self.name}:
            raise LedgerError(f"witness {self.name}: its vkeys are named {sorted(names)}")

    @classmethod
    def parse(cls, vkey: str, mldsa_vkey: str | None, url: str = "") -> WitnessKey:
        ed = VerifierKey.parse(vkey)
        pq = VerifierKey.parse(mldsa_vkey) if mldsa_vkey else None
        return cls(ed.name, ed, pq, url)


@dataclass(frozen=True)
class Cosignature:
    """One witness's verified pair of lines on a checkpoint."""

    witness: str
    timestamp: int


def _timestamped(line_signature: bytes, size: int, who: str) -> tuple[int, bytes]:
    if len(line_signature) != 8 + size:
        raise LedgerError(f"{who}: a timestamped signature is 8 + {size} bytes, this one "
                          f"{len(line_signature)}")
    (timestamp,) = _TIMESTAMP.unpack(line_signature[:8])
    if timestamp >= 2**63:
        raise LedgerError(f"{who}: timestamp {timestamp} exceeds 2^63-1")
    return timestamp, line_signature[8:]


def verify_cosignature(note: SignedNote, witness: WitnessKey, where: str = "checkpoint"
                       ) -> Cosignature:
    """Both lines of ``witness`` on ``note`` verify (same timestamp); raise naming which
    line fails and why."""
    checkpoint = Checkpoint.parse_body(note.text)
    ed_line = note.line_of(witness.ed25519, "cosignature/v1", where)
    ed_time, ed_sig = _timestamped(ed_line.signature, 64, f"{where} line {ed_line.line}")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(witness.ed25519.public_key).verify(
            ed_sig, cosignature_v1_message(ed_time, note.text))
    except InvalidSignature:
        raise LedgerError(f"{where} line {ed_line.line}: the cosignature/v1 of {witness.name} "
                          f"does not verify over size {checkpoint.size} at time {ed_time}: "
                          "altered or forged") from None
    if witness.ml_dsa_44 is None:
        return Cosignature(witness.name, ed_time)
    pq_line = note.line_of(witness.ml_dsa_44, "ML-DSA-44 cosignature", where)
    pq_time, pq_sig = _timestamped(pq_line.signature, ML_DSA_44_SIGNATURE_SIZE,
                                   f"{where} line {pq_line.line}")
    try:
        mldsa.MLDSA44PublicKey.from_public_bytes(witness.ml_dsa_44.public_key).verify(
            pq_sig, cosigned_message(witness.name, pq_time, checkpoint))
    except InvalidSignature:
        raise LedgerError(f"{where} line {pq_line.line}: the ML-DSA-44 cosignature of "
                          f"{witness.name} does not verify over size {checkpoint.size} at time "
                          f"{pq_time}: altered or forged") from None
    if ed_time != pq_time:
        raise LedgerError(f"{where}: the two cosignatures of {witness.name} carry times "
                          f"{ed_time} and {pq_time}: not one cosigning")
    return Cosignature(witness.name, ed_time)


@dataclass(frozen=True)
class WitnessCount:
    """Which configured witnesses cosigned one checkpoint, and which did not (and why)."""

    checkpoint: Checkpoint
    cosigned: tuple[Cosignature, ...]
    missing: tuple[tuple[str, str], ...]
    quorum: int

    @property
    def below_quorum(self) -> bool:
        return len(self.cosigned) < self.quorum


def count_cosignatures(note_bytes: bytes, witnesses: tuple[WitnessKey, ...], quorum: int,
                       where: str = "checkpoint") -> WitnessCount:
    """Verify every configured witness's lines on a checkpoint note (the log's own lines
    are the caller's to check: ``note.verify_checkpoint``)."""
    note = SignedNote.parse(note_bytes, where)
    cosigned, missing = [], []
    for witness in witnesses:
        try:
            cosigned.append(verify_cosignature(note, witness, where))
        except LedgerError as exc:
            missing.append((witness.name, str(exc)))
    return WitnessCount(Checkpoint.parse_body(note.text), tuple(cosigned), tuple(missing),
                        quorum)
