"""Checkpoints: a C2SP tlog-checkpoint body in a C2SP signed note, signed twice.

The body (c2sp.org/tlog-checkpoint v1.0.0)::

    <origin>\\n<tree size, decimal>\\n<base64 of the RFC 6962 root>\\n

and after a blank line, two signature lines of the log's key name (the origin):

1. an Ed25519 note signature (c2sp.org/signed-note v1.0.0, type 0x01) over the body:
   ``— <name> base64(key id || Ed25519 signature)``, key id = SHA-256(name || 0x0A ||
   0x01 || public key)[:4]. Any standard note verifier (Go's ``sumdb/note``) accepts it,
   and tlog-tiles requires an Ed25519 line of a public log.
2. a post-quantum line in the ML-DSA-44 form of c2sp.org/tlog-cosignature v1.1.0-rc.1
   (type 0x06): ``— <name> base64(key id || u64 timestamp || ML-DSA-44 signature)``, the
   signature (FIPS 204, empty context) over the ``cosigned_message`` ``"subtree/v1\\n\\0" ||
   u8 len || name || u64 timestamp || u8 len || origin || u64 start=0 || u64 end=size ||
   root``; key id = SHA-256(name || 0x0A || 0x06 || 1312-byte public key)[:4]. Signed
   notes have no plain ML-DSA type; witnesses sign the same message (``cosign.py``).

pcvhub's ``verify_checkpoint`` requires both lines and rejects extension lines (the
ML-DSA-44 message does not cover them, so they would be unsigned text). Lines of other
keys (witness cosignatures) are ignored, as signed-note requires.

Verifier keys are vkeys (``name+hex(key id)+base64(type || public key)``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from pcvhub.ledger.errors import LedgerError

ED25519_TYPE = 0x01
#: c2sp.org/tlog-cosignature: a witness's Ed25519 ``cosignature/v1`` key
COSIGNATURE_V1_TYPE = 0x04
ML_DSA_44_TYPE = 0x06
ML_DSA_44_PUBLIC_SIZE = 1312
ML_DSA_44_SIGNATURE_SIZE = 2420
SUBTREE_LABEL = b"subtree/v1\n\x00"
EM_DASH = "\u2014"
#: signed-note: verifiers must accept at least 16 signatures, and may cap the rest
MAX_SIGNATURES = 64
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4] (signed-note, tlog-cosignature)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise LedgerError(f"key name {name!r} must be non-empty, without spaces or '+' "
                          "(signed-note)")


@dataclass(frozen=True)
class VerifierKey:
    """A public note key: a name, a signature type and the key's bytes."""

    name: str
    sig_type: int
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public_key)

    def __str__(self) -> str:
        """The vkey string ``name+hex(key id)+base64(type || public key)``."""
        material = base64.b64encode(bytes([self.sig_type]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        parts = vkey.strip().split("+", 2)  # base64 may itself hold "+"
        if len(parts) != 3:
            raise LedgerError(f"vkey {vkey[:60]!r} is not name+hex(key id)+base64(key)")
        name, hex_id, material = parts
        _check_name(name)
        try:
            raw = base64.b64decode(material, validate=True)
            wanted_id = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError):
            raise LedgerError(f"vkey of {name}: key id or key is not hex/base64") from None
        if not raw:
            raise LedgerError(f"vkey of {name} carries no key")
        key = cls(name, raw[0], raw[1:])
        sizes = {ED25519_TYPE: 32, COSIGNATURE_V1_TYPE: 32,
                 ML_DSA_44_TYPE: ML_DSA_44_PUBLIC_SIZE}
        if key.sig_type not in sizes:
            raise LedgerError(f"vkey of {name} has signature type 0x{key.sig_type:02x}; pcvhub "
                              "verifies 0x01 (Ed25519), 0x04 (Ed25519 cosignature/v1) and "
                              "0x06 (ML-DSA-44)")
        if len(key.public_key) != sizes[key.sig_type]:
            raise LedgerError(f"vkey of {name}: a type 0x{key.sig_type:02x} key is "
                              f"{sizes[key.sig_type]} bytes, this one {len(key.public_key)}")
        if key.key_id != wanted_id:
            raise LedgerError(f"vkey of {name} names key id {hex_id}, but its key hashes to "
                              f"{key.key_id.hex()}")
        return key


def base64_hash(text: str) -> bytes | None:
    """The 32-byte hash ``text`` is the strict base64 of (a checkpoint's root, a proof
    line), or None."""
    try:
        digest = base64.b64decode(text, validate=True)
    except binascii.Error:
        return None
    return digest if len(digest) == 32 else None


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and its RFC 6962 root."""

    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        """The note text (tlog-checkpoint), final newline included."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n".encode()

    @classmethod
    def parse_body(cls, text: bytes) -> Checkpoint:
        lines = text.decode().split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise LedgerError("checkpoint body must be at least three lines, each ending in "
                              "a newline (origin, tree size, root)")
        origin, size, root, *extensions = lines[:-1]
        if extensions:
            raise LedgerError(f"checkpoint of {origin} carries extension line(s) "
                              f"{extensions[:2]!r}: the ML-DSA-44 line does not sign them, so "
                              "pcvhub accepts none")
        if not origin:
            raise LedgerError("checkpoint line 1 (origin) is empty")
        if not _DECIMAL.fullmatch(size):
            raise LedgerError(f"checkpoint line 2 (tree size) is {size!r}, not a decimal "
                              "without leading zeroes")
        digest = base64_hash(root)
        if digest is None:
            raise LedgerError(f"checkpoint line 3 (root) is {root!r}, not the base64 of a "
                              "32-byte hash")
        return cls(origin, int(size), digest)


def cosigned_message(cosigner: str, timestamp: int, checkpoint: Checkpoint) -> bytes:
    """The ML-DSA-44 signed message of tlog-cosignature (a whole tree: start 0)."""
    name, origin = cosigner.encode(), checkpoint.origin.encode()
    if not 0 < len(name) < 256 or not 0 < len(origin) < 256:
        raise LedgerError("cosigner name and origin must each be 1 to 255 bytes")
    return b"".join((SUBTREE_LABEL, bytes([len(name)]), name, struct.pack(">Q", timestamp),
                     bytes([len(origin)]), origin,
                     struct.pack(">QQ", 0, checkpoint.size), checkpoint.root))


@dataclass(frozen=True)
class LogKeys:
    """The log's two private keys: Ed25519 for the note line, ML-DSA-44 for the PQ line."""

    name: str
    ed25519: ed25519.Ed25519PrivateKey
    ml_dsa_44: mldsa.MLDSA44PrivateKey

    @classmethod
    def generate(cls, name: str) -> LogKeys:
        _check_name(name)
        return cls(name, ed25519.Ed25519PrivateKey.generate(), mldsa.MLDSA44PrivateKey.generate())

    @classmethod
    def from_seeds(cls, name: str, ed_seed: bytes, pq_seed: bytes) -> LogKeys:
        return cls(name, ed25519.Ed25519PrivateKey.from_private_bytes(ed_seed),
                   mldsa.MLDSA44PrivateKey.from_seed_bytes(pq_seed))

    def seeds(self) -> tuple[bytes, bytes]:
        return self.ed25519.private_bytes_raw(), self.ml_dsa_44.private_bytes_raw()

    @property
    def ed25519_vkey(self) -> VerifierKey:
        return VerifierKey(self.name, ED25519_TYPE,
                           self.ed25519.public_key().public_bytes_raw())

    @property
    def ml_dsa_44_vkey(self) -> VerifierKey:
        return VerifierKey(self.name, ML_DSA_44_TYPE,
                           self.ml_dsa_44.public_key().public_bytes_raw())

    def sign(self, checkpoint: Checkpoint, timestamp: int) -> bytes:
        """The signed note: body, blank line, the Ed25519 line, the ML-DSA-44 line."""
        body = checkpoint.body()
        ed_line = self.ed25519_vkey.key_id + self.ed25519.sign(body)
        pq_line = (self.ml_dsa_44_vkey.key_id + struct.pack(">Q", timestamp)
                   + self.ml_dsa_44.sign(cosigned_message(self.name, timestamp, checkpoint)))
        return body + b"\n" + b"".join(
            f"{EM_DASH} {self.name} {base64.b64encode(sig).decode()}\n".encode()
            for sig in (ed_line, pq_line))


@dataclass(frozen=True)
class SignatureLine:
    """One ``— <name> base64(key id || signature)`` line, ``line`` counted from 1."""

    name: str
    key_id: bytes
    signature: bytes
    line: int


@dataclass(frozen=True)
class SignedNote:
    """A signed note split into its text (final newline included) and signature lines."""

    text: bytes
    signatures: tuple[SignatureLine, ...]

    @classmethod
    def parse(cls, note: bytes, where: str = "note") -> SignedNote:
        try:
            decoded = note.decode()
        except UnicodeDecodeError as exc:
            raise LedgerError(f"{where} is not UTF-8 (byte {exc.start})") from None
        bad = next((i for i, c in enumerate(decoded) if c < " " and c != "\n"), None)
        if bad is not None:
            raise LedgerError(f"{where} holds control character {decoded[bad]!r} at {bad}")
        split = decoded.rfind("\n\n")
        if split < 0 or not decoded.endswith("\n"):
            raise LedgerError(f"{where} has no blank line before its signatures, or does not "
                              "end in a newline: not a signed note")
        text, lines = decoded[:split + 1], decoded[split + 2:].split("\n")[:-1]
        first_line = text.count("\n") + 2
        if not lines:
            raise LedgerError(f"{where} carries no signature line")
        if len(lines) > MAX_SIGNATURES:
            raise LedgerError(f"{where} carries {len(lines)} signatures; at most "
                              f"{MAX_SIGNATURES} are read")
        signatures = []
        for number, line in enumerate(lines, start=first_line):
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != EM_DASH or not parts[1]:
                raise LedgerError(f"{where} line {number} is not '{EM_DASH} <name> "
                                  f"<base64 signature>': {line[:60]!r}")
            try:
                raw = base64.b64decode(parts[2], validate=True)
            except binascii.Error:
                raw = b""
            if len(raw) < 5:
                raise LedgerError(f"{where} line {number} ({parts[1]}): the signature is not "
                                  "base64 of a key id and a signature")
            signatures.append(SignatureLine(parts[1], raw[:4], raw[4:], number))
        return cls(text.encode(), tuple(signatures))

    def line_of(self, key: VerifierKey, kind: str, where: str) -> SignatureLine:
        """The one signature line of ``key`` (matched by name and key id)."""
        found = [s for s in self.signatures if (s.name, s.key_id) == (key.name, key.key_id)]
        if not found:
            raise LedgerError(f"{where} carries no {kind} line of {key.name} (key id "
                              f"{key.key_id.hex()})")
        if len(found) > 1:
            raise LedgerError(f"{where} carries {len(found)} {kind} lines of {key.name}")
        return found[0]

    def verify_ed25519(self, key: VerifierKey, where: str = "note") -> SignatureLine:
        """Check the Ed25519 note signature (type 0x01) of ``key`` over the text."""
        if key.sig_type != ED25519_TYPE:
            raise LedgerError(f"vkey of {key.name} is type 0x{key.sig_type:02x}, not Ed25519")
        line = self.line_of(key, "Ed25519", where)
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(key.public_key).verify(
                line.signature, self.text)
        except InvalidSignature:
            raise LedgerError(f"{where} line {line.line}: the Ed25519 signature of {key.name} "
                              "does not verify over the note text: text or signature "
                              "altered") from None
        return line


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose two lines verified: the tree head, the ML-DSA-44 line's time,
    and the note's bytes as signed."""

    checkpoint: Checkpoint
    timestamp: int
    note: bytes


def verify_checkpoint(note_bytes: bytes, ed25519_key: VerifierKey, ml_dsa_44_key: VerifierKey,
                      where: str = "checkpoint") -> VerifiedCheckpoint:
    """Check both of the log's lines and parse the body; raise ``LedgerError`` naming the
    line that fails. Lines of other keys are ignored (signed-note)."""
    if ml_dsa_44_key.sig_type != ML_DSA_44_TYPE:
        raise LedgerError(f"vkey of {ml_dsa_44_key.name} is type "
                          f"0x{ml_dsa_44_key.sig_type:02x}, not ML-DSA-44 (0x06)")
    note = SignedNote.parse(note_bytes, where)
    checkpoint = Checkpoint.parse_body(note.text)
    note.verify_ed25519(ed25519_key, where)
    pq_line = note.line_of(ml_dsa_44_key, "ML-DSA-44", where)
    if len(pq_line.signature) != 8 + ML_DSA_44_SIGNATURE_SIZE:
        raise LedgerError(f"{where} line {pq_line.line}: an ML-DSA-44 cosignature is a u64 "
                          f"timestamp and {ML_DSA_44_SIGNATURE_SIZE} bytes, this one "
                          f"{len(pq_line.signature)} bytes")
    (timestamp,) = struct.unpack(">Q", pq_line.signature[:8])
    if timestamp >= 2**63:
        raise LedgerError(f"{where} line {pq_line.line}: timestamp {timestamp} exceeds 2^63-1")
    try:
        mldsa.MLDSA44PublicKey.from_public_bytes(ml_dsa_44_key.public_key).verify(
            pq_line.signature[8:], cosigned_message(ml_dsa_44_key.name, timestamp, checkpoint))
    except InvalidSignature:
        raise LedgerError(f"{where} line {pq_line.line}: the ML-DSA-44 signature of "
                          f"{ml_dsa_44_key.name} does not verify over the tree head (size "
                          f"{checkpoint.size}, time {timestamp}): altered or forged") from None
    return VerifiedCheckpoint(checkpoint, timestamp, note_bytes)
