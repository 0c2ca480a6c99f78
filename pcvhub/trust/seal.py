"""The gatekeeper's seal: "accepted (or refused, or raised) by the gatekeeper", provable offline.

Anyone with broker access can put bytes on an output topic; only the gatekeeper's key can
seal them. The gatekeeper seals what it writes in batches (one per send step of its agent,
``pcvhub.streams.app``): each output record is a leaf of an RFC 9162 Merkle tree and one
hybrid signature (Ed25519 + ML-DSA-65) covers the tree head. The signed head is written
once per batch, as one record of the seals topic (``pcvhub.seals``, one partition, only the
gatekeeper writes it), and acknowledged by Kafka *before* any record it seals is sent; each
output record carries in its ``pcvhub-seal`` header (``pcvhub.topics.SEAL_HEADER``) what the
gatekeeper attests about it, the offset of its batch's head on the seals topic and its
inclusion path. So a record pays ~100 bytes plus 32 per tree level, not the 3.3 KB of an
ML-DSA-65 signature, and a reader verifies one hybrid signature per batch. The producer's
bytes are never touched: the leaf commits to them by their SHA-256.

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

A seals-topic record's value (``SealHead.encode``; all integers big-endian)::

    u8  version (1)
    i64 sealed_at (µs)
    u8  len || signer actor id
    u8  len || signer key id
    u32 tree size
    32  root
    64  Ed25519 signature
    u16 len || ML-DSA-65 signature (3,309 bytes)

An output record's ``pcvhub-seal`` header (``Seal.encode``)::

    u8  version (1)
    u8  verdict
    u8  len || ingress topic (UTF-8)
    i32 ingress partition
    i64 ingress offset
    i64 ingress append time (µs)
    i64 offset of the batch's head on the seals topic (partition 0)
    u32 leaf index
    u8  path length n || n x 32-byte sibling hashes (RFC 9162 PATH)

The head's offset is not in the leaf (it is known only once Kafka has appended the head,
after the leaves were hashed): a header naming another head simply finds a root its path
does not lead to. The output record's own offset is not sealed either (unknown until the
broker appends the record); the transparency ledger's leaf adds it beside the seal
(``pcvhub.ledger.leaf``, seal slot).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


class _Bytes:
    """A cursor over bytes being decoded: each take names what it reads, so a short or
    malformed seal is reported by the byte where it goes wrong."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.at, self.what = data, 0, what

    def take(self, n: int, what: str) -> bytes:
        if self.at + n > len(self.data):
            raise SealError(f"{self.what} is cut short at byte {self.at}: {what} needs {n} "
                            f"bytes, {len(self.data) - self.at} remain")
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def text(self, what: str) -> str:
        raw = self.take(self.take(1, f"the length of {what}")[0], what)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise SealError(f"{what} at byte {self.at - len(raw)} of {self.what} is not "
                            "UTF-8") from None

    def version(self) -> int:
        (version,) = self.unpack(">B", "the version")
        if version != SEAL_VERSION:
            raise SealError(f"{self.what} has version {version}, not one this reader knows "
                            f"({SEAL_VERSION})")
        return version

    def end(self) -> None:
        if self.at != len(self.data):
            raise SealError(f"{len(self.data) - self.at} byte(s) follow the end of "
                            f"{self.what} at byte {self.at}")


def _short(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise SealError(f"{text[:40]!r}... is longer than a seal's 255-byte field")
    return bytes([len(raw)]) + raw


@dataclass(frozen=True)
class SealHead:
    """A batch's signed tree head: the value of one record on the seals topic."""

    sealed_at_us: int
    signer: str
    key_id: str
    tree_size: int
    root: bytes
    signature: HybridSignature
    version: int = SEAL_VERSION

    def signed_bytes(self) -> bytes:
        return seal_head(self.sealed_at_us, self.signer, self.key_id, self.tree_size,
                         self.root)

    def encode(self) -> bytes:
        return b"".join((
            struct.pack(">Bq", self.version, self.sealed_at_us), _short(self.signer),
            _short(self.key_id), struct.pack(">I", self.tree_size), self.root,
            self.signature.ed25519, struct.pack(">H", len(self.signature.ml_dsa_65)),
            self.signature.ml_dsa_65))

    @classmethod
    def decode(cls, data: bytes) -> SealHead:
        """Parse a seals-topic record; ``SealError`` names the byte where it goes wrong."""
        cursor = _Bytes(data, "the batch head")
        version = cursor.version()
        (sealed_at,) = cursor.unpack(">q", "the sealing time")
        signer, key_id = cursor.text("the signer"), cursor.text("the key id")
        (size,) = cursor.unpack(">I", "the tree size")
        if size == 0:
            raise SealError("the batch head seals a tree of 0 records")
        root = cursor.take(HASH_SIZE, "the root")
        ed = cursor.take(64, "the Ed25519 signature")
        (pq_len,) = cursor.unpack(">H", "the ML-DSA-65 signature's length")
        if pq_len != ML_DSA_65_SIGNATURE_SIZE:
            raise SealError(f"an ML-DSA-65 signature is {ML_DSA_65_SIGNATURE_SIZE} bytes, "
                            f"the batch head declares {pq_len}")
        pq = cursor.take(pq_len, "the ML-DSA-65 signature")
        cursor.end()
        return cls(sealed_at, signer, key_id, size, root, HybridSignature(ed, pq), version)


@dataclass(frozen=True)
class Seal:
    """One record's seal, as carried in its ``pcvhub-seal`` header.

    ``head`` is the batch's head, attached by the log reader once it has verified it (a
    header decoded from bytes has none: what it claims is believed only after that).
    """

    verdict: SealVerdict
    source_topic: str
    source_partition: int
    source_offset: int
    appended_at_us: int
    head_offset: int
    leaf_index: int
    path: tuple[bytes, ...]
    version: int = SEAL_VERSION
    head: SealHead | None = field(default=None, compare=False)

    @property
    def source(self) -> tuple[str, int, int] | None:
        """The ingress (topic, partition, offset) answered; None for a sweep's alert."""
        if self.source_partition < 0:
            return None
        return self.source_topic, self.source_partition, self.source_offset

    def encode(self) -> bytes:
        return b"".join((
            struct.pack(">BB", self.version, self.verdict), _short(self.source_topic),
            struct.pack(">iqqqIB", self.source_partition, self.source_offset,
                        self.appended_at_us, self.head_offset, self.leaf_index,
                        len(self.path)),
            *self.path))

    @classmethod
    def decode(cls, data: bytes) -> Seal:
        """Parse a header; ``SealError`` names the byte where it goes wrong."""
        cursor = _Bytes(data, "the seal")
        version = cursor.version()
        (verdict,) = cursor.unpack(">B", "the verdict")
        try:
            sealed_as = SealVerdict(verdict)
        except ValueError:
            raise SealError(f"verdict byte {verdict} names no verdict "
                            f"({', '.join(f'{v.value} {v.name}' for v in SealVerdict)})"
                            ) from None
        source_topic = cursor.text("the ingress topic")
        partition, offset, appended, head_offset, index, depth = cursor.unpack(
            ">iqqqIB", "the positions and the inclusion proof's shape")
        if depth > MAX_PATH:
            raise SealError(f"an inclusion path of {depth} hashes is longer than any tree of "
                            f"a u32 size needs ({MAX_PATH})")
        path = tuple(cursor.take(HASH_SIZE, f"path hash {i}") for i in range(depth))
        cursor.end()
        return cls(sealed_as, source_topic, partition, offset, appended, head_offset, index,
                   path, version)


@dataclass(frozen=True)
class SealedBatch:
    """One batch, signed: its head (to be written to the seals topic first) and what each
    record's seal will say once the head's offset there is known."""

    head: SealHead
    facts: tuple[SealedFacts, ...]
    paths: tuple[tuple[bytes, ...], ...]

    def seals(self, head_offset: int) -> list[Seal]:
        """The records' seals, naming the head at ``head_offset`` of the seals topic."""
        return [Seal(f.verdict, f.source_topic, f.source_partition, f.source_offset,
                     f.appended_at_us, head_offset, i, path)
                for i, (f, path) in enumerate(zip(self.facts, self.paths, strict=True))]


def seal_batch(signer: EventSigner, records: Sequence[SealedFacts], sealed_at_us: int
               ) -> SealedBatch:
    """One hybrid signature over the Merkle root of ``records`` (at least one)."""
    if not records:
        raise ValueError("a seal batch needs at least one record")
    root, paths = merkle.tree([r.leaf() for r in records])
    signature = signer.keys.sign(seal_head(sealed_at_us, signer.producer, signer.key_id,
                                           len(records), root))
    return SealedBatch(SealHead(sealed_at_us, signer.producer, signer.key_id, len(records),
                                root, signature),
                       tuple(records), tuple(tuple(p) for p in paths))


#: Where a reader finds batch heads: the value of the seals-topic record at an offset, or
#: None if the log holds none there (``pcvhub.log.reader.SealLookup`` reads Kafka,
#: ``SealBook`` holds heads in memory).
SealSource = Callable[[int], "bytes | None"]


class SealBook:
    """A seals topic in memory: heads appended in order, read back by offset (tests and
    benchmarks that build a log without a broker; an offline audit bundle)."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def append(self, head: SealHead | bytes) -> int:
        """Add a head; its offset."""
        self.values.append(head if isinstance(head, bytes) else head.encode())
        return len(self.values) - 1

    def __call__(self, offset: int) -> bytes | None:
        return self.values[offset] if 0 <= offset < len(self.values) else None


def head_problem(head: SealHead, keys: PublicKeys) -> str | None:
    """Why the head's hybrid signature does not verify with ``keys`` (a sentence), or None.
    Whether ``keys`` belong to a gatekeeper is the caller's business (the key registry)."""
    failed = hybrid_failures(head.signed_bytes(), head.signature, keys)
    if failed:
        return (f"the batch signature ({' and '.join(failed)}) by {head.signer} key "
                f"{head.key_id} does not verify over the sealed root "
                f"{head.root.hex()[:16]} of {head.tree_size} record(s)")
    return None


def seal_problem(seal: Seal, head: SealHead, topic: str, partition: int, key: bytes | None,
                 value: bytes) -> str | None:
    """Why ``seal`` under the (verified) ``head`` does not seal this record, or None.

    Checks: the verdict may stand on ``topic``; the record (topic, partition, key, value)
    and the seal's facts lead along the inclusion path to the head's root.
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
    root = merkle.root_from_path(leaf, seal.leaf_index, head.tree_size, seal.path)
    if root is None or root != head.root:
        return (f"the record and its sealed facts (leaf {seal.leaf_index} of "
                f"{head.tree_size}) do not lead along the seal's path to the root "
                f"{head.root.hex()[:16]} of the batch head at seals@{seal.head_offset}: the "
                "record, its key, its place or the seal was changed, or the seal belongs to "
                "another record")
    return None
