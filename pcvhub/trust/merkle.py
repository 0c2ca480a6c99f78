"""Merkle trees over batches of events, hashed as in RFC 9162 (Certificate Transparency 2.0).

leaf hash = SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left || right); a tree of
n leaves splits at the largest power of two below n. The 0x00/0x01 prefixes keep a leaf
from ever being passed off as an inner node (second-preimage resistance).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def leaf_hash(leaf: bytes | memoryview) -> bytes:
    # incremental, not b"\x00" + leaf: that would copy the whole leaf (4 MiB vault chunks)
    digest = hashlib.sha256(b"\x00")
    digest.update(leaf)
    return digest.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves (RFC 9162 section 2.1.1)."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return node_hash(root_of(hashes[:k]), root_of(hashes[k:]))


def inclusion_path(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 section 2.1.3.1, over already-hashed leaves."""
    if len(hashes) <= 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return [*inclusion_path(hashes[:k], index), root_of(hashes[k:])]
    return [*inclusion_path(hashes[k:], index - k), root_of(hashes[:k])]


def tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """Root and every leaf's inclusion path for a batch of leaves, in one pass (n log n)."""
    return _subtree([leaf_hash(leaf) for leaf in leaves]) if leaves else (root_of([]), [])


def _subtree(hashes: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """(root, paths) of a subtree: a leaf's path is its path in its half plus the other
    half's root, exactly PATH(m, D[n]) of RFC 9162 without recomputing any subtree."""
    if len(hashes) == 1:
        return hashes[0], [[]]
    k = _split(len(hashes))
    left_root, left_paths = _subtree(hashes[:k])
    right_root, right_paths = _subtree(hashes[k:])
    return (node_hash(left_root, right_root),
            [[*p, right_root] for p in left_paths] + [[*p, left_root] for p in right_paths])


def root_from_path(leaf: bytes, index: int, tree_size: int, path: Sequence[bytes]) -> bytes | None:
    """Recompute the root from a leaf and its path (RFC 9162 section 2.1.3.2).

    Returns None when the path cannot belong to a tree of that size (wrong length or
    index out of range); a wrong sibling gives a different root instead.
    """
    if not 0 <= index < tree_size:
        return None
    fn, sn = index, tree_size - 1
    result = leaf_hash(leaf)
    for sibling in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    return result if sn == 0 else None
