"""What one ledger leaf says about one record, version 1 (the bytes the tree hashes).

A leaf binds a record the gatekeeper wrote to where it stands and to the gatekeeper's seal::

    leaf = LEAF_CONTEXT                      b"pcvhub/ledger-leaf/v1\\x00" (22 bytes)
           || chain_digest                   32 bytes: pcvhub.trust.canonical.chain_digest
           || u8  len(topic) || topic        topic suffix of the topic table, UTF-8
           || u32 partition                  big-endian
           || u64 offset                     big-endian
           || u16 len(seal)  || seal         the gatekeeper's seal, opaque here; empty = none

The chain digest covers every signed field of the envelope (and the payload by its
SHA-256), so a leaf commits to the record's content without copying it; the position
commits to where the broker holds it, so a record moved, dropped or duplicated on the log
no longer matches its leaf. The seal slot is empty until the gatekeeper seals its outputs
(issue 12); the seal's own bytes carry their own version, so the leaf stays version 1 when
seals appear. A changed layout gets a new context string (``.../v2``), never a reuse.

A whole leaf must fit a tlog-tiles entry bundle's uint16 length prefix (65,535 bytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pcvhub.ledger.errors import LedgerError

LEAF_CONTEXT = b"pcvhub/ledger-leaf/v1\x00"
DIGEST_SIZE = 32
#: tlog-tiles entry bundles prefix each entry with a big-endian uint16 length
MAX_LEAF_SIZE = 0xFFFF
_FIXED = len(LEAF_CONTEXT) + DIGEST_SIZE + 1 + 4 + 8 + 2
MAX_SEAL_SIZE = MAX_LEAF_SIZE - _FIXED - 255


@dataclass(frozen=True)
class LedgerLeaf:
    """One record as the ledger logs it (see the module doc for the bytes)."""

    chain_digest: bytes
    topic: str
    partition: int
    offset: int
    seal: bytes = b""

    def __post_init__(self) -> None:
        if len(self.chain_digest) != DIGEST_SIZE:
            raise LedgerError(f"a leaf's chain digest is {DIGEST_SIZE} bytes, this one is "
                              f"{len(self.chain_digest)}")
        topic = self.topic.encode()
        if not 0 < len(topic) <= 255:
            raise LedgerError(f"topic {self.topic!r} must be 1 to 255 bytes of UTF-8")
        if not 0 <= self.partition < 2**32 or not 0 <= self.offset < 2**64:
            raise LedgerError(f"position {self.position} is out of range for a leaf "
                              "(partition: u32, offset: u64)")
        if len(self.seal) > MAX_SEAL_SIZE:
            raise LedgerError(f"a seal of {len(self.seal)} bytes does not fit a leaf "
                              f"(at most {MAX_SEAL_SIZE})")

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def encode(self) -> bytes:
        topic = self.topic.encode()
        return b"".join((LEAF_CONTEXT, self.chain_digest, bytes([len(topic)]), topic,
                         struct.pack(">IQH", self.partition, self.offset, len(self.seal)),
                         self.seal))

    @classmethod
    def decode(cls, data: bytes, where: str = "leaf") -> LedgerLeaf:
        """Parse a version-1 leaf; ``where`` names it in the error (e.g. "leaf 17")."""
        if not data.startswith(LEAF_CONTEXT):
            raise LedgerError(f"{where} does not start with {LEAF_CONTEXT!r}: not a version-1 "
                              f"pcvhub ledger leaf (starts {data[:24]!r})")
        at = len(LEAF_CONTEXT)
        try:
            digest = data[at:at + DIGEST_SIZE]
            at += DIGEST_SIZE
            topic_len = data[at]
            topic = data[at + 1:at + 1 + topic_len].decode()
            at += 1 + topic_len
            partition, offset, seal_len = struct.unpack_from(">IQH", data, at)
            at += 14
        except (IndexError, struct.error, UnicodeDecodeError) as exc:
            raise LedgerError(f"{where} is cut short or garbled at byte {at}: {exc}") from None
        seal = data[at:at + seal_len]
        if len(seal) != seal_len or at + seal_len != len(data):
            raise LedgerError(f"{where} declares a {seal_len}-byte seal at byte {at} but holds "
                              f"{len(data) - at} bytes after it")
        return cls(digest, topic, partition, offset, seal)
