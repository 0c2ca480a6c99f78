"""Rebuild by checkpoints: a witnessed ledger checkpoint vouches for the records it covers.

A projection rebuild re-verifies every record's hybrid signature (issue 17 asks for the
alternative where it is sound). The ledger appended a record only after the one log reader
had admitted it (both signatures, key, seal, chain), and its leaf commits to the record's
content (the chain digest covers every signed field and the payload's SHA-256), to where
the broker holds it and to the gatekeeper's seal. So once a checkpoint is

1. signed by the log's own two keys (Ed25519 and ML-DSA-44),
2. cosigned by a quorum of the configured witnesses (other organisations, who would have
   refused a split view), and
3. consistent with the tile folder: every tile, every entry bundle, and the root recomputed
   from them (``tiles.audit_tiles``),

a record whose own leaf, recomputed from its bytes and position as the ledger computes it,
is one of the checkpoint's leaves need not have its signature checked again: the log
reader keeps every other check (decoding, placement, key registration, the seal and its
signed head, the hash chain) and skips only the per-record hybrid signature. The seal's
path covers every byte of the record, signatures included, so a record whose signature
alone was altered (which its leaf does not see) is still quarantined, as SEAL_INVALID. Everything
else (the registry chain always, records past the checkpoint, a record whose bytes no
longer match its leaf) is verified in full, so tampering is still named as before.

``CheckpointTrust.load`` refuses (``LedgerError``) a checkpoint below quorum, a tile folder
that does not verify, or two leaves naming one position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pcvhub.ledger.cosign import WitnessCount, count_cosignatures
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.note import VerifiedCheckpoint, VerifierKey
from pcvhub.ledger.tiles import audit_tiles
from pcvhub.ledger.witnessing import WitnessPolicy
from pcvhub.trust import merkle

Position = tuple[str, int, int]


@dataclass(frozen=True)
class CheckpointTrust:
    """A verified, witnessed checkpoint and the leaf hash of every position it covers."""

    checkpoint: VerifiedCheckpoint
    witnessed: WitnessCount
    leaves: dict[Position, bytes]  # (topic, partition, offset) -> RFC 6962 leaf hash

    @classmethod
    def load(cls, tiles: Path, log_vkey: VerifierKey, log_mldsa_vkey: VerifierKey,
             policy: WitnessPolicy) -> CheckpointTrust:
        leaves: dict[Position, bytes] = {}

        def keep(index: int, entry: bytes) -> None:
            leaf = LedgerLeaf.decode(entry, f"{tiles} leaf {index}")
            position = (leaf.topic, leaf.partition, leaf.offset)
            if position in leaves:
                raise LedgerError(f"{tiles} leaf {index} names {leaf.position}, which an "
                                  "earlier leaf names too: the ledger logs a position once")
            leaves[position] = merkle.leaf_hash(entry)

        audit = audit_tiles(Path(tiles), log_vkey, log_mldsa_vkey, entries=True, on_entry=keep)
        witnessed = count_cosignatures(audit.checkpoint.note, policy.witnesses, policy.quorum,
                                       where=f"{tiles}/checkpoint")
        if witnessed.below_quorum:
            missing = "; ".join(f"{name}: {why}" for name, why in witnessed.missing)
            raise LedgerError(
                f"{tiles}/checkpoint (size {audit.checkpoint.checkpoint.size}) is cosigned by "
                f"{len(witnessed.cosigned)} of {len(policy.witnesses)} witnesses, below the "
                f"quorum of {policy.quorum} ({missing or 'none configured'}): a rebuild will "
                "not take it on trust")
        return cls(audit.checkpoint, witnessed, leaves)

    @property
    def size(self) -> int:
        return self.checkpoint.checkpoint.size

    def covers(self, topic: str, partition: int, offset: int, leaf: bytes) -> bool:
        """True if ``leaf`` (a record's leaf as the ledger computes it) is the checkpoint's
        leaf at that position."""
        return self.leaves.get((topic, partition, offset)) == merkle.leaf_hash(leaf)

    def describe(self) -> str:
        head = self.checkpoint.checkpoint
        return (f"checkpoint {head.origin} size {head.size} root {head.root.hex()[:16]}..., "
                f"cosigned by {len(self.witnessed.cosigned)} of "
                f"{len(self.witnessed.cosigned) + len(self.witnessed.missing)} witnesses "
                f"(quorum {self.witnessed.quorum}: "
                f"{', '.join(c.witness for c in self.witnessed.cosigned) or 'none'})")
