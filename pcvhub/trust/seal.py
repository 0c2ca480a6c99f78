"""The gatekeeper's seal: "accepted (or refused, or raised) by the gatekeeper", provable offline.

Anyone with broker access can put bytes on an output topic; only the gatekeeper's key can
seal them. The gatekeeper seals what it writes in batches (one per send step of its agent,
``pcvhub.streams.app``): each output record is a leaf of an RFC 9162 Merkle tree, one hybrid
signature (Ed25519 + ML-DSA-65) covers the tree head, and each record carries its own seal
in the ``pcvhub-seal`` header (``pcvhub.topics.SEAL_HEADER``): what the gatekeeper attests
about it, its inclusion path and the batch signature. The producer's bytes are never
touched: the leaf commits to them by their SHA-256.

What one leaf commits to (the bytes hashed into the batch tree)::

    SEAL_LEAF_CONTEXT  b"pcvhub/gatekeeper-seal-leaf/v1\\x00"
    || item(output topic suffix)     "events", "rejected" or "alerts"
    || u32 output partition
    || u8 key present || item(key)   the record's Kafka key
    || SHA-256(value)                32 bytes: the record's value as written
    || u8 verdict                    1 ACCEPTED, 2 REJECTED, 3 RELAYED, 4 ALERT
    || item(ingress topic)           the ingress record answered ("" for a sweep's alert)
    || i32 ingress partition || i64 ingress offset      (-1, -1 for a sweep's alert)
    || i64 ingress append time (µs, the broker's LogAppendTime; -1 if unknown)

What the batch signature covers (the batch's tree head)::

    SEAL_HEAD_CONTEXT  b"pcvhub/gatekeeper-seal-head/v1\\x00"
    || i64 sealed_at (µs) || item(signer actor id) || item(key id)
    || u64 tree size || item(root)

``item(x)`` is a u32 big-endian length and the bytes. The contexts differ from every other
signed context of pcvhub (``pcvhub.trust.canonical``), so neither a producer's batch
signature nor an event signature of the gatekeeper's key can pass for a seal.

The header's bytes (``Seal.encode``; all integers big-endian)::

    u8  version (1)
    u8  verdict
    u8  len || ingress topic (UTF-8)
    i32 ingress partition
    i64 ingress offset
    i64 ingress append time (µs)
    i64 sealed_at (µs)
    u8  len || signer actor id
    u8  len || signer key id
    u32 leaf index
    u32 tree size
    u8  path length n || n x 32-byte sibling hashes (RFC 9162 PATH)
    32  root
    64  Ed25519 signature
    u16 len || ML-DSA-65 signature (3,309 bytes)

The output offset is not sealed (it is unknown until the broker appends the record); the
transparency ledger's leaf adds it beside the seal (``pcvhub.ledger.leaf``, seal slot).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pcvhub.schemas.envelope import HybridSignature
from pcvhub.trust import merkle
from pcvhub.trust.signing import (
    ML_DSA_65_SIGNATURE_SIZE,
    EventSigner,
    PublicKeys,
    hybrid_failures,
)

SEAL_VERSION = 1
SEAL_LEAF_CONTEXT = b"pcvhub/gatekeeper-seal-leaf/v1\x00"
SEAL_HEAD_CONTEXT = b"pcvhub/gatekeeper-seal-head/v1\x00"
HASH_SIZE = 32
#: a path of 32 siblings covers 2**32 leaves, more than a u32 tree size can name
MAX_PATH = 32


class SealError(ValueError):
    """A seal header that cannot be read: the message says which byte and what."""


class SealVerdict(enum.IntEnum):
    """What the gatekeeper did with the ingress record a sealed output answers."""

    ACCEPTED = 1  # the producer's bytes, on the canonical topic
    REJECTED = 2  # the gatekeeper's EventRejected, on the rejected topic
    RELAYED = 3  # a connector's own signed refusal, relayed byte for byte to rejected
    ALERT = 4  # an AlertRaised the gatekeeper raised (by a record or by a timer sweep)


#: which verdicts may stand on which output topic
VERDICT_TOPICS: dict[SealVerdict, str] = {
    SealVerdict.ACCEPTED: "events", SealVerdict.REJECTED: "rejected",
    SealVerdict.RELAYED: "rejected", SealVerdict.ALERT: "alerts",
}


@dataclass(frozen=True)
class SealedFacts:
    """What the gatekeeper attests about one output record: one leaf of a seal batch."""

    topic: str  # output topic suffix
    partition: int
    key: bytes | None
    value: bytes
    verdict: SealVerdict
    source_topic: str = ""  # "" and -1, -1: an alert a timer sweep raised
    source_partition: int = -1
    source_offset: int = -1
    appended_at_us: int = -1  # the ingress record's LogAppendTime; -1 if none

    def leaf(self) -> bytes:
        return seal_leaf(self.topic, self.partition, self.key,
                         hashlib.sha256(self.value).digest(), self.verdict, self.source_topic,
                         self.source_partition, self.source_offset, self.appended_at_us)


def _item(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def seal_leaf(topic: str, partition: int, key: bytes | None, value_digest: bytes,
              verdict: SealVerdict, source_topic: str, source_partition: int,
              source_offset: int, appended_at_us: int) -> bytes:
    """The leaf bytes of one sealed record (see the module doc)."""
    return b"".join((
        SEAL_LEAF_CONTEXT, _item(topic.encode()), struct.pack(">I", partition),
        b"\x00" + _item(b"") if key is None else b"\x01" + _item(key), value_digest,
        struct.pack(">B", verdict), _item(source_topic.encode()),
        struct.pack(">iqq", source_partition, source_offset, appended_at_us)))


def seal_head(sealed_at_us: int, signer: str, key_id: str, tree_size: int, root: bytes
              ) -> bytes:
    """What the batch's hybrid signature covers (see the module doc)."""
    return (SEAL_HEAD_CONTEXT + struct.pack(">q", sealed_at_us) + _item(signer.encode())
            + _item(key_id.encode()) + struct.pack(">Q", tree_size) + _item(root))


@dataclass(frozen=True)
class Seal:
    """One record's seal, as carried in its ``pcvhub-seal`` header."""

    verdict: SealVerdict
    source_topic: str
    source_partition: int
    source_offset: int
    appended_at_us: int
    sealed_at_us: int
    signer: str
    key_id: str
    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...]
    root: bytes
    signature: HybridSignature
    version: int = SEAL_VERSION

    @property
    def source(self) -> tuple[str, int, int] | None:
        """The ingress (topic, partition, offset) answered; None for a sweep's alert."""
        if self.source_partition < 0:
            return None
        return self.source_topic, self.source_partition, self.source_offset

    def head(self) -> bytes:
        return seal_head(self.sealed_at_us, self.signer, self.key_id, self.tree_size,
                         self.root)

    def encode(self) -> bytes:
        def short(text: str) -> bytes:
            raw = text.encode()
            if len(raw) > 255:
                raise SealError(f"{text[:40]!r}... is longer than a seal's 255-byte field")
            return bytes([len(raw)]) + raw

        return b"".join((
            struct.pack(">BB", self.version, self.verdict), short(self.source_topic),
            struct.pack(">iqqq", self.source_partition, self.source_offset,
                        self.appended_at_us, self.sealed_at_us),
            short(self.signer), short(self.key_id),
            struct.pack(">IIB", self.leaf_index, self.tree_size, len(self.path)),
            *self.path, self.root, self.signature.ed25519,
            struct.pack(">H", len(self.signature.ml_dsa_65)), self.signature.ml_dsa_65))

    @classmethod
    def decode(cls, data: bytes) -> Seal:
        """Parse a header; ``SealError`` names the byte where it goes wrong."""
        at = 0

        def take(n: int, what: str) -> bytes:
            nonlocal at
            if at + n > len(data):
                raise SealError(f"the seal is cut short at byte {at}: {what} needs {n} bytes, "
                                f"{len(data) - at} remain")
            chunk = data[at:at + n]
            at += n
            return chunk

        def text(what: str) -> str:
            raw = take(take(1, f"the length of {what}")[0], what)
            try:
                return raw.decode()
            except UnicodeDecodeError:
                raise SealError(f"{what} at byte {at - len(raw)} is not UTF-8") from None

        version, verdict = struct.unpack(">BB", take(2, "version and verdict"))
        if version != SEAL_VERSION:
            raise SealError(f"seal version {version} is not one this reader knows "
                            f"({SEAL_VERSION})")
        try:
            sealed_as = SealVerdict(verdict)
        except ValueError:
            raise SealError(f"verdict byte {verdict} names no verdict "
                            f"({', '.join(f'{v.value} {v.name}' for v in SealVerdict)})"
                            ) from None
        source_topic = text("the ingress topic")
        partition, offset, appended, sealed_at = struct.unpack(">iqqq", take(28, "positions"))
        signer, key_id = text("the signer"), text("the key id")
        index, size, depth = struct.unpack(">IIB", take(9, "the inclusion proof's shape"))
        if depth > MAX_PATH:
            raise SealError(f"an inclusion path of {depth} hashes is longer than any tree of "
                            f"a u32 size needs ({MAX_PATH})")
        path = tuple(take(HASH_SIZE, f"path hash {i}") for i in range(depth))
        root = take(HASH_SIZE, "the root")
        ed = take(64, "the Ed25519 signature")
        (pq_len,) = struct.unpack(">H", take(2, "the ML-DSA-65 signature's length"))
        if pq_len != ML_DSA_65_SIGNATURE_SIZE:
            raise SealError(f"an ML-DSA-65 signature is {ML_DSA_65_SIGNATURE_SIZE} bytes, "
                            f"this seal declares {pq_len}")
        pq = take(pq_len, "the ML-DSA-65 signature")
        if at != len(data):
            raise SealError(f"{len(data) - at} byte(s) follow the seal's end at byte {at}")
        return cls(sealed_as, source_topic, partition, offset, appended, sealed_at, signer,
                   key_id, index, size, path, root, HybridSignature(ed, pq), version)


def seal_batch(signer: EventSigner, records: Sequence[SealedFacts], sealed_at_us: int
               ) -> list[Seal]:
    """One hybrid signature over the Merkle root of ``records``; one seal per record."""
    if not records:
        return []
    root, paths = merkle.tree([r.leaf() for r in records])
    signature = signer.keys.sign(seal_head(sealed_at_us, signer.producer, signer.key_id,
                                           len(records), root))
    return [Seal(r.verdict, r.source_topic, r.source_partition, r.source_offset,
                 r.appended_at_us, sealed_at_us, signer.producer, signer.key_id, i,
                 len(records), tuple(paths[i]), root, signature)
            for i, r in enumerate(records)]


def seal_problem(seal: Seal, topic: str, partition: int, key: bytes | None, value: bytes,
                 keys: PublicKeys) -> str | None:
    """Why ``seal`` does not seal this record (a sentence), or None if it does.

    Checks, in order: the verdict may stand on ``topic``; the record (topic, partition,
    key, value) and the seal's facts lead along the inclusion path to the sealed root;
    both halves of the batch signature verify over the head with ``keys``. Whether
    ``keys`` belong to a gatekeeper is the caller's business (the key registry).
    """
    allowed = VERDICT_TOPICS[seal.verdict]
    if allowed != topic:
        return (f"the seal's verdict {seal.verdict.name} belongs on {allowed}, not on {topic}")
    if seal.source is None and seal.verdict is not SealVerdict.ALERT:
        return (f"the seal's verdict {seal.verdict.name} names no ingress record it answers; "
                "only an alert of a timer sweep has none")
    leaf = seal_leaf(topic, partition, key, hashlib.sha256(value).digest(), seal.verdict,
                     seal.source_topic, seal.source_partition, seal.source_offset,
                     seal.appended_at_us)
    root = merkle.root_from_path(leaf, seal.leaf_index, seal.tree_size, seal.path)
    if root is None or root != seal.root:
        return (f"the record and its sealed facts (leaf {seal.leaf_index} of "
                f"{seal.tree_size}) do not lead along the seal's path to its root "
                f"{seal.root.hex()[:16]}: the record, its key, its place or the seal was "
                "changed, or the seal belongs to another record")
    failed = hybrid_failures(seal.head(), seal.signature, keys)
    if failed:
        return (f"the batch signature ({' and '.join(failed)}) by {seal.signer} key "
                f"{seal.key_id} does not verify over the sealed root "
                f"{seal.root.hex()[:16]} of {seal.tree_size} record(s)")
    return None
