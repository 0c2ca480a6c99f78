"""Inclusion and consistency proofs of the ledger, their JSON form, and their verifiers.

A verifier raises ``LedgerError`` saying which proof failed and how (wrong length for the
sizes, leads to another root); it returns nothing on success, so a caller cannot mistake
a failed check for a passed one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from pcvhub.ledger.errors import LedgerError
from pcvhub.trust import merkle


def _b64(values: tuple[bytes, ...]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


def _hashes(values: Any, what: str) -> tuple[bytes, ...]:
    try:
        decoded = tuple(base64.b64decode(v, validate=True) for v in values)
    except (TypeError, ValueError):
        raise LedgerError(f"{what}: the path is not a list of base64 hashes") from None
    if any(len(h) != 32 for h in decoded):
        raise LedgerError(f"{what}: every path hash is 32 bytes")
    return decoded


@dataclass(frozen=True)
class InclusionProof:
    """PATH(index, D[size]) of RFC 9162, leaf's sibling first."""

    index: int
    size: int
    path: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "size": self.size, "path": _b64(self.path)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InclusionProof:
        return cls(int(data["index"]), int(data["size"]),
                   _hashes(data["path"], f"inclusion proof of leaf {data.get('index')}"))


@dataclass(frozen=True)
class ConsistencyProof:
    """PROOF(old_size, D[new_size]) of RFC 9162."""

    old_size: int
    new_size: int
    path: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {"old_size": self.old_size, "new_size": self.new_size, "path": _b64(self.path)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConsistencyProof:
        return cls(int(data["old_size"]), int(data["new_size"]),
                   _hashes(data["path"], "consistency proof"))


def verify_inclusion(entry: bytes, proof: InclusionProof, root: bytes) -> None:
    """The leaf ``entry`` is leaf ``proof.index`` of the tree of ``proof.size`` with ``root``."""
    got = merkle.root_from_path(entry, proof.index, proof.size, proof.path)
    if got is None:
        raise LedgerError(f"inclusion proof of leaf {proof.index} in {proof.size}: a path of "
                          f"{len(proof.path)} hashes cannot belong to that leaf and size")
    if got != root:
        raise LedgerError(f"inclusion proof of leaf {proof.index} in {proof.size} leads to root "
                          f"{got.hex()[:16]}..., not {root.hex()[:16]}...: the entry, the path "
                          "or the root is not the log's")


def verify_consistency(proof: ConsistencyProof, old_root: bytes, new_root: bytes) -> None:
    """The tree of ``proof.old_size`` with ``old_root`` is a prefix of the tree of
    ``proof.new_size`` with ``new_root`` (the log only appended)."""
    m, n = proof.old_size, proof.new_size
    what = f"consistency proof from {m} to {n} leaves"
    if not 0 <= m <= n:
        raise LedgerError(f"{what}: the old size must not exceed the new one")
    if m in (0, n):
        if proof.path:
            raise LedgerError(f"{what}: must be empty, holds {len(proof.path)} hashes")
        if m == n and old_root != new_root:
            raise LedgerError(f"{what}: two different roots for one size "
                              f"({old_root.hex()[:16]}... and {new_root.hex()[:16]}...): a split "
                              "view")
        return
    roots = merkle.consistency_roots(m, n, old_root, proof.path)
    if roots is None:
        raise LedgerError(f"{what}: {len(proof.path)} hashes cannot be a proof for these sizes")
    if roots[0] != old_root:
        raise LedgerError(f"{what}: leads to old root {roots[0].hex()[:16]}..., not "
                          f"{old_root.hex()[:16]}...: the old tree is not a prefix of the new")
    if roots[1] != new_root:
        raise LedgerError(f"{what}: leads to new root {roots[1].hex()[:16]}..., not "
                          f"{new_root.hex()[:16]}...: the new tree does not extend the old")
