"""Merkle trees hashed as in RFC 9162 (Certificate Transparency 2.0): batches and the ledger.

leaf hash = SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left || right); a tree of
n leaves splits at the largest power of two below n. The 0x00/0x01 prefixes keep a leaf
from ever being passed off as an inner node (second-preimage resistance).

Proofs are written once, over a ``RangeRoot`` (a function giving MTH(D[lo:hi]) for the
ranges a proof needs): a batch answers it from a list of leaf hashes, the transparency
ledger from its stored levels of complete subtrees (``pcvhub.ledger.tree``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

#: MTH(D[lo:hi]) of a tree's leaves, for 0 <= lo < hi <= size.
RangeRoot = Callable[[int, int], bytes]


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
    return inclusion_proof(lambda lo, hi: root_of(hashes[lo:hi]), index, len(hashes))


def inclusion_proof(mth: RangeRoot, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 section 2.1.3.1), leaf's sibling first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    lo, hi = 0, size
    # Walk down from the root; each step's sibling goes in front of the deeper ones.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(mth(lo + k, hi))
            hi = lo + k
        else:
            path.append(mth(lo, lo + k))
            lo += k
    path.reverse()
    return path


def consistency_proof(mth: RangeRoot, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 section 2.1.4.1); empty for 0 or equal sizes."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from a tree of {old_size} leaves to one of "
                         f"{new_size}: the old size must be between 0 and the new size")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    lo, hi, m, whole = 0, new_size, old_size, True
    # SUBPROOF(m, D[lo:hi], whole) unrolled: the recursion only ever descends one side.
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(mth(lo + k, hi))
            hi = lo + k
        else:
            proof.append(mth(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        proof.append(mth(lo, hi))
    proof.reverse()
    return proof


def consistency_roots(old_size: int, new_size: int, old_root: bytes,
                      proof: Sequence[bytes]) -> tuple[bytes, bytes] | None:
    """The (old, new) roots a consistency proof leads to (RFC 9162 section 2.1.4.2).

    The proof is good when they equal the two trees' roots. Only for 0 < old_size <
    new_size (an empty or equal old tree has an empty proof and nothing to recompute);
    returns None when the proof cannot belong to these sizes (wrong length).
    """
    if not 0 < old_size < new_size:
        return None
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a node
        path.insert(0, old_root)
    if not path:
        return None
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return (fr, sr) if sn == 0 else None


def compact_root(mth_of_aligned: Callable[[int, int], bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) from complete aligned subtrees: ``mth_of_aligned(level, index)`` is the
    hash of D[index * 2**level : (index + 1) * 2**level].

    Proof ranges start at a multiple of the largest power of two not above their width, so
    the range is a row of aligned complete subtrees of decreasing size (the binary digits of
    hi - lo), folded from the right as RFC 9162's split does.
    """
    if hi <= lo:
        raise ValueError(f"empty range [{lo}, {hi}) has no subtree root")
    parts: list[bytes] = []
    at = lo
    for level in range((hi - lo).bit_length() - 1, -1, -1):
        if (hi - at) >> level:
            if at % (1 << level):
                raise ValueError(f"range [{lo}, {hi}) does not start on a subtree boundary")
            parts.append(mth_of_aligned(level, at >> level))
            at += 1 << level
    result = parts.pop()
    while parts:
        result = node_hash(parts.pop(), result)
    return result


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
