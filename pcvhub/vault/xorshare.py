"""An XOR-only (k, n) threshold scheme in the shape of Kurihara et al. (ISC 2008).

Take the smallest prime p >= n. A chunk is cut into p - 1 equal pieces K_1 .. K_{p-1}
(zero-padded), with K_0 = 0; k - 1 rows of random pieces R^h_j (h = 0 .. k-2, j = 0 .. p-1)
are drawn. Share i (i = 0 .. n-1, share index i + 1) is p - 1 pieces

    W_{i,j} = K_{(j - i) mod p}  XOR  R^0_{j}  XOR  R^1_{(i + j) mod p}  XOR ...
              XOR  R^{k-2}_{((k-2) i + j) mod p},        j = 0 .. p-2,

so a share is only XORs of whole pieces: no field multiply at all. Nothing here takes the
paper's word for it: :func:`plan` writes every piece as a GF(2) combination of the
unknowns and solves the system for the shares at hand, and the tests check, by rank, for
every (k-1)-subset of shares that its pieces are uniform whatever the chunk (perfect
secrecy), and for every k-subset that each K_q is a combination of its pieces.

A share is (p - 1) * ceil(len / (8 (p - 1))) * 8 bytes, a little longer than the chunk when
p - 1 does not divide it. Randomness: R^0_{p-1} is never used, so (p - 1 + (k-2) p) / (p - 1)
random bytes per input byte: k - 1, as for Shamir, when k = 2, a little more above. For
k > 2 the k shares of a restore leave some randomness free, so another share cannot be
recomputed from them: a bad share outside the good set is named whole, not to the byte.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pcvhub.vault import gf256
from pcvhub.vault.randomness import Randomness
from pcvhub.vault.shamir import check_parameters

SCHEME = "xor-kurihara"
BLOCK_WORDS = 16 * 1024  # 128 KiB per piece block: a block of every piece stays in L2


def prime_for(n: int) -> int:
    """The smallest prime p >= max(n, 2)."""
    p = max(n, 2)
    while any(p % d == 0 for d in range(2, int(p ** 0.5) + 1)):
        p += 1
    return p


def piece_words(chunk_length: int, n: int) -> int:
    return -(-chunk_length // (8 * (prime_for(n) - 1)))


def share_length(chunk_length: int, n: int) -> int:
    return (prime_for(n) - 1) * piece_words(chunk_length, n) * 8


@lru_cache(maxsize=64)
def _terms(k: int, n: int) -> tuple[tuple[tuple[int, tuple[tuple[int, int], ...]], ...], ...]:
    """terms[i][j] = (q, ((h, index), ...)): W_{i,j} = K_q ^ XOR of R^h_index (q = 0: none)."""
    p = prime_for(n)
    return tuple(tuple(((j - i) % p, tuple((h, (h * i + j) % p) for h in range(k - 1)))
                       for j in range(p - 1)) for i in range(n))


def _unknown_masks(k: int, n: int) -> list[list[int]]:
    """Each share piece as a bit mask over the unknowns: K_1..K_{p-1}, then R^h_j."""
    p = prime_for(n)
    masks = []
    for row in _terms(k, n):
        share = []
        for q, randoms in row:
            mask = 0 if q == 0 else 1 << (q - 1)
            for h, index in randoms:
                mask ^= 1 << (p - 1 + h * p + index)
            share.append(mask)
        masks.append(share)
    return masks


class NotRecoverable(Exception):
    """These shares do not determine the chunk (fewer than k, or a broken parameter set)."""


@lru_cache(maxsize=1024)
def plan(k: int, n: int, points: tuple[int, ...]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """For the shares at ``points`` (share indices), K_q = XOR of the pieces plan[q-1]
    (pairs of position in ``points`` and piece index), q = 1 .. p-1.

    Gaussian elimination over GF(2): first every R column is eliminated (its pivot row is
    spent on it), leaving rows that are combinations of K alone; then those are reduced
    until each K_q stands alone, tracking which share pieces each row is the XOR of.
    """
    p = prime_for(n)
    masks = _unknown_masks(k, n)
    rows = [(masks[x - 1][j], 1 << (pos * (p - 1) + j))
            for pos, x in enumerate(points) for j in range(p - 1)]
    k_bits = (1 << (p - 1)) - 1
    for column in range(p - 1, p - 1 + (k - 1) * p):
        bit = 1 << column
        pivot = next((r for r in rows if r[0] & bit), None)
        if pivot is None:
            continue
        rows.remove(pivot)
        rows = [(m ^ pivot[0], c ^ pivot[1]) if m & bit else (m, c) for m, c in rows]
    rows = [r for r in rows if r[0] & ~k_bits == 0]
    # Gauss-Jordan on the K columns: each pivot is cleared from every other row, pivots too
    pivots: list[tuple[int, int]] = []
    for q in range(p - 1):
        bit = 1 << q
        pivot = next((r for r in rows if r[0] & bit), None)
        if pivot is None:
            raise NotRecoverable(f"shares {list(points)} do not determine piece K_{q + 1} "
                                 f"of a {k}-of-{n} XOR split")
        rows.remove(pivot)
        rows = [(m ^ pivot[0], c ^ pivot[1]) if m & bit else (m, c) for m, c in rows]
        pivots = [(m ^ pivot[0], c ^ pivot[1]) if m & bit else (m, c) for m, c in pivots]
        pivots.append(pivot)
    result = []
    for q, (mask, combination) in enumerate(pivots):
        if mask != 1 << q:
            raise AssertionError(f"elimination left K_{q + 1} mixed: {mask:b}")
        result.append(tuple(divmod(b, p - 1) for b in range(len(points) * (p - 1))
                            if combination >> b & 1))
    return tuple(result)


class XorSplitter:
    """Splits chunks of up to ``chunk_size`` bytes into n XOR shares, reusing its buffers
    (the returned views are overwritten by the next call, as for the Shamir splitter)."""

    scheme = SCHEME

    def __init__(self, k: int, n: int, randomness: Randomness, chunk_size: int,
                 block_words: int = BLOCK_WORDS) -> None:
        check_parameters(k, n)
        self.k, self.n, self.randomness = k, n, randomness
        self.p = prime_for(n)
        self._piece_words = piece_words(chunk_size, n)
        self._secret = np.zeros((self.p - 1) * self._piece_words, dtype=np.uint64)
        self._shares = np.empty((n, (self.p - 1) * self._piece_words), dtype=np.uint64)
        self._block = block_words
        self._randoms = np.empty((k - 1, self.p, block_words), dtype=np.uint64)
        # R^0_{p-1} appears in no share: drawing it would only waste randomness
        self._drawn = [(h, j) for h in range(k - 1) for j in range(self.p)
                       if h or j < self.p - 1]

    def split(self, chunk: bytes | memoryview) -> list[memoryview]:
        length = len(chunk)
        words = piece_words(length, self.n)
        p = self.p
        size = (p - 1) * words
        if length == size * 8:  # the pieces tile the chunk: read it in place, no copy
            secret = np.frombuffer(chunk, dtype=np.uint64)
        else:
            secret = self._secret[:size]
            secret.view(np.uint8)[:length] = np.frombuffer(chunk, dtype=np.uint8)
            secret.view(np.uint8)[length:] = 0  # the padding K_{p-1} ends with
        pieces = secret.reshape(p - 1, words)
        shares = self._shares[:, :size].reshape(self.n, p - 1, words) if size else None
        terms = _terms(self.k, self.n)
        for start in range(0, words, self._block):
            width = min(self._block, words - start)
            end = start + width
            for h, j in self._drawn:
                self.randomness.fill(self._randoms[h, j, :width].data.cast("B"))
            randoms = self._randoms[:, :, :width]
            assert shares is not None
            for i, row in enumerate(terms):
                for j, (q, rs) in enumerate(row):
                    out = shares[i, j, start:end]
                    (h0, r0), rest = rs[0], rs[1:]
                    if q:
                        gf256.xor_into(out, pieces[q - 1, start:end], randoms[h0, r0])
                    else:
                        np.copyto(out, randoms[h0, r0])
                    for h, index in rest:
                        gf256.xor_accumulate(out, randoms[h, index])
        length_out = size * 8
        return [row[:size].view(np.uint8).data[:length_out] for row in self._shares]


def recover(k: int, n: int, shares: dict[int, bytes | memoryview], chunk_length: int,
            out: np.ndarray | None = None) -> memoryview:
    """The chunk (``chunk_length`` bytes) followed by its padding, from exactly k shares
    {share index: bytes}. The padding must come out zero: a share altered only there
    leaves the chunk's hash intact, so the caller checks it to name such a share too."""
    points = tuple(sorted(shares))
    if len(points) != k:
        raise NotRecoverable(f"a {k}-of-{n} XOR split needs {k} shares, got {list(points)}")
    p = prime_for(n)
    words = piece_words(chunk_length, n)
    expected = (p - 1) * words * 8
    sources = []
    for x in points:
        if len(shares[x]) != expected:
            raise ValueError(f"share {x} is {len(shares[x])} bytes; a {k}-of-{n} XOR share "
                             f"of a {chunk_length}-byte chunk is {expected}")
        sources.append(np.frombuffer(shares[x], dtype=np.uint64).reshape(p - 1, words))
    result = (np.empty((p - 1) * words, dtype=np.uint64) if out is None
              else out[:(p - 1) * words])
    pieces = result.reshape(p - 1, words)
    for q, combination in enumerate(plan(k, n, points)):
        (first, j0), rest = combination[0], combination[1:]
        if rest:
            (second, j1), rest = rest[0], rest[1:]
            gf256.xor_into(pieces[q], sources[first][j0], sources[second][j1])
        else:
            np.copyto(pieces[q], sources[first][j0])
        for position, j in rest:
            gf256.xor_accumulate(pieces[q], sources[position][j])
    return result.view(np.uint8).data


def share_at(k: int, n: int, good: dict[int, bytes | memoryview], x: int,
             chunk_length: int) -> memoryview | None:
    """Share ``x`` recomputed from k good shares, where they fix it: for k = 2 every R^0_j
    is W_{a,j} ^ K_{j-a}; for k > 2 the shares leave some randomness free, so None."""
    if k != 2:
        return None
    p = prime_for(n)
    words = piece_words(chunk_length, n)
    pieces = np.zeros((p, words), dtype=np.uint64)  # row 0 is K_0 = 0
    recover(k, n, good, chunk_length, out=pieces[1:].reshape(-1))  # a view: fills rows 1..
    a = min(good)
    known = np.frombuffer(good[a], dtype=np.uint64).reshape(p - 1, words)
    out = np.empty((p - 1, words), dtype=np.uint64)
    for j in range(p - 1):
        # R^0_j = W_{a-1,j} ^ K_{(j-a+1) mod p}, then W_{x-1,j} = K_{(j-x+1) mod p} ^ R^0_j
        gf256.xor_into(out[j], known[j], pieces[(j - a + 1) % p])
        gf256.xor_accumulate(out[j], pieces[(j - x + 1) % p])
    return out.reshape(-1).view(np.uint8).data
