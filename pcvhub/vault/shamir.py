"""Shamir's k-of-n secret sharing over GF(2^8), applied to a whole chunk at once.

Each byte of the chunk is the constant term of its own random polynomial of degree k-1;
share ``x`` (x = 1..n) holds the polynomial's value at x, byte for byte. Any k shares give
the polynomial back by Lagrange interpolation; any k-1 shares are uniformly distributed
whatever the chunk (when the coefficients are uniform), which is what makes it secret
sharing and not an erasure code. A share is exactly as long as the chunk.

Work goes block by block (``BLOCK_BYTES``): the k-1 random blocks are drawn per block, and
each share block is built by Horner's rule in the share buffer, so that every multiply is by
the small share point x (a few shifts and XORs per word, see :mod:`~pcvhub.vault.gf256`);
for k = 2 one kernel pass writes three shares, reading the secret in place (no copy, no
zero-fill). Measured for a 2-of-3 DRBG split of 4 MiB chunks, CPU time on one core, AES-CTR
included: 1.17 GB/s with 128 KiB blocks, 1.30 with 256 KiB, 1.42 with 1 MiB (the general
bit-plane multiply did 1.15 at 1 MiB); bigger blocks win (per-block costs of the Python
loop and the AES call), so 1 MiB, which bounds the random buffers to (k-1) MiB.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import numpy as np

from pcvhub.vault import gf256
from pcvhub.vault.randomness import Randomness

MAX_SHARES = 16
BLOCK_BYTES = 1024 * 1024
SCHEME = "shamir-gf256"


def _words(length: int) -> int:
    return (length + 7) // 8


def check_parameters(k: int, n: int) -> None:
    if not 2 <= k <= n <= MAX_SHARES:
        raise ValueError(f"need 2 <= k <= n <= {MAX_SHARES}, got k={k}, n={n}")


class ShamirSplitter:
    """Splits chunks of up to ``chunk_size`` bytes into n shares, reusing its buffers.

    The arrays returned by :meth:`split` are overwritten by the next call: consume (seal,
    send, copy) them before splitting the next chunk. That is what bounds memory to about
    (n + 1) chunks however large the input is.
    """

    def __init__(self, k: int, n: int, randomness: Randomness, chunk_size: int,
                 block_bytes: int = BLOCK_BYTES) -> None:
        check_parameters(k, n)
        self.k, self.n, self.randomness = k, n, randomness
        self.points = list(range(1, n + 1))
        self._block_words = _words(block_bytes)
        self._shares = np.zeros((n, _words(chunk_size)), dtype=np.uint64)
        self._randoms = np.empty((k - 1, self._block_words), dtype=np.uint64)
        self._secret = np.empty(_words(chunk_size), dtype=np.uint64)
        self._scratch = np.empty(self._block_words, dtype=np.uint64)

    def split(self, chunk: bytes | memoryview) -> list[memoryview]:
        """The n shares of ``chunk`` (share index i = list index + 1), each len(chunk) bytes."""
        length = len(chunk)
        words = _words(length)
        secret = _as_words(chunk, words, self._secret)
        random_bytes = self._randoms.data.cast("B")
        block_words = self._block_words
        k, n = self.k, self.n
        for start in range(0, words, block_words):
            width = min(block_words, words - start)
            end = start + width
            for t in range(k - 1):
                self.randomness.fill(random_bytes[t * block_words * 8:
                                                  (t * block_words + width) * 8])
            base = secret[start:end]
            randoms = [row[:width] for row in self._randoms]
            outs = [share[start:end] for share in self._shares]
            if k == 2:  # f(x) = secret ^ x * r: three shares per pass over secret and r
                triples = n // 3 * 3
                for x in range(1, triples + 1, 3):
                    gf256.mul_small_xor_into3(outs[x - 1], outs[x], outs[x + 1], base,
                                              randoms[0], x)
                for x in range(triples + 1, n + 1):
                    gf256.mul_small_xor_into(outs[x - 1], base, randoms[0], x)
                continue
            scratch = self._scratch[:width]
            for x, out in enumerate(outs, start=1):
                # Horner: f(x) = secret ^ x * (r_0 ^ x * (r_1 ^ ... ^ x * r_{k-2})), every
                # multiply by the small share point x. Steps alternate between the share and
                # a scratch block so that no step writes the array it reads (an aliased
                # dst = src kept LLVM from vectorising: 3.8 s/GB for a 3-of-5 split).
                source = randoms[k - 2]
                for t in range(k - 3, -1, -1):
                    target = out if t % 2 else scratch
                    gf256.mul_small_xor_into(target, randoms[t], source, x)
                    source = target
                gf256.mul_small_xor_into(out, base, source, x)
        return [row.view(np.uint8).data[:length] for row in self._shares]


def _as_words(data: bytes | memoryview, words: int,
              spare: np.ndarray | None = None) -> np.ndarray:
    """The bytes as uint64 words: a view, no copy, when they are a whole number of words;
    otherwise copied, zero-padded, into ``spare`` (or a new array)."""
    if len(data) == words * 8:
        return np.frombuffer(data, dtype=np.uint64)
    padded = np.empty(words, dtype=np.uint64) if spare is None else spare[:words]
    padded[-1:] = 0  # the tail of the last word; cut off again by the caller
    padded.view(np.uint8)[:len(data)] = np.frombuffer(data, dtype=np.uint8)
    return padded


@lru_cache(maxsize=1024)
def _weight_planes(points: tuple[int, ...], at: int) -> tuple[tuple[int, np.ndarray], ...]:
    """Lagrange weights and their planes, computed once per share set (pure Python is slow)."""
    return tuple((w, gf256.planes(w)) for w in gf256.lagrange_coefficients(list(points), at))


@lru_cache(maxsize=1024)
def _two_point_plane(points: tuple[int, ...], at: int) -> np.ndarray:
    """Planes of (xa ^ at) / (xa ^ xb): f(at) = A ^ that * (A ^ B) on a line through A, B."""
    xa, xb = points
    return gf256.planes(gf256.mul(xa ^ at, gf256.inverse(xa ^ xb)))


def interpolate(shares: dict[int, bytes | memoryview], at: int = 0,
                block_bytes: int = BLOCK_BYTES, out: np.ndarray | None = None) -> memoryview:
    """The value at ``at`` of the polynomials through k shares {x: bytes}: the secret at 0.

    Exactly the k shares to use must be given: nothing here checks them against each other;
    the restore path checks the result against the chunk tree instead. ``out`` (uint64, at
    least as many words as a share) is written and viewed by the result instead of a new
    array: reuse it only once the result has been consumed.
    """
    points = tuple(sorted(shares))
    lengths = {len(shares[x]) for x in points}
    if len(lengths) != 1:
        raise ValueError(f"shares of one chunk differ in length: {sorted(lengths)}")
    length = lengths.pop()
    words = _words(length)
    sources = [_as_words(shares[x], words) for x in points]
    result = np.empty(words, dtype=np.uint64) if out is None else out[:words]
    if len(sources) == 2:  # the usual 2-of-n: one multiply per word, one pass
        gf256.two_point_into(result, sources[0], sources[1], _two_point_plane(points, at))
    else:
        weighted = _weight_planes(points, at)
        block = _words(block_bytes)
        for start in range(0, words, block):
            dst = result[start:start + block]
            for index, (source, (weight, plane)) in enumerate(
                    zip(sources, weighted, strict=True)):
                src = source[start:start + block]
                if index == 0:
                    gf256.mul_into(dst, src, plane)
                elif weight == 1:
                    np.bitwise_xor(dst, src, out=dst)
                else:
                    gf256.mul_xor_into(dst, src, plane)
    return result.view(np.uint8).data[:length]


def share_sets(points: list[int], k: int) -> list[tuple[int, ...]]:
    """Every k-subset of the available share points, the given order's first k first."""
    return list(combinations(points, k))
