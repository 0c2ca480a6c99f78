"""Shamir's k-of-n secret sharing over GF(2^8), applied to a whole chunk at once.

Each byte of the chunk is the constant term of its own random polynomial of degree k-1;
share ``x`` (x = 1..n) holds the polynomial's value at x, byte for byte. Any k shares give
the polynomial back by Lagrange interpolation; any k-1 shares are uniformly distributed
whatever the chunk (when the coefficients are uniform), which is what makes it secret
sharing and not an erasure code. A share is exactly as long as the chunk.

Work goes block by block (``BLOCK_BYTES``) so that the secret block, its k-1 random
blocks and the share being written all stay in L2 cache while the kernel runs over them.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from pcvhub.vault import gf256
from pcvhub.vault.randomness import Randomness

MAX_SHARES = 16
BLOCK_BYTES = 128 * 1024
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
        self._randoms = np.zeros((k - 1, self._block_words), dtype=np.uint64)
        self._secret = np.zeros(_words(chunk_size), dtype=np.uint64)
        # share x_j = secret + sum_t r_t * x_j^t: planes of x_j^t for t = 1..k-1
        powers = [[gf256.power(x, t) for t in range(1, k)] for x in self.points]
        self._planes = np.array([[gf256.planes(c) for c in row] for row in powers])
        self._is_one = np.array([[c == 1 for c in row] for row in powers])

    def split(self, chunk: bytes | memoryview) -> list[memoryview]:
        """The n shares of ``chunk`` (share index i = list index + 1), each len(chunk) bytes."""
        length = len(chunk)
        words = _words(length)
        secret_bytes = self._secret.view(np.uint8)
        secret_bytes[:length] = np.frombuffer(chunk, dtype=np.uint8)
        secret_bytes[length:words * 8] = 0  # the tail of the last word; cut off again below
        random_bytes = memoryview(self._randoms).cast("B")
        for start in range(0, words, self._block_words):
            width = min(self._block_words, words - start)
            for t in range(self.k - 1):
                self.randomness.fill(random_bytes[t * self._block_words * 8:
                                                  (t * self._block_words + width) * 8])
            end = start + width
            secret = self._secret[start:end]
            for share, planes, is_one in zip(self._shares, self._planes, self._is_one,
                                             strict=True):
                out = share[start:end]
                np.copyto(out, secret)
                for random_block, plane, one in zip(self._randoms, planes, is_one, strict=True):
                    if one:  # x^t == 1: plain XOR
                        np.bitwise_xor(out, random_block[:width], out=out)
                    else:
                        gf256.mul_xor_into(out, random_block[:width], plane)
        return [memoryview(row.view(np.uint8))[:length] for row in self._shares]


def _as_words(share: bytes | memoryview, words: int) -> np.ndarray:
    """The share as uint64 words, without a copy when its length is a whole number of words."""
    if len(share) == words * 8:
        return np.frombuffer(share, dtype=np.uint64)
    padded = np.zeros(words, dtype=np.uint64)
    padded.view(np.uint8)[:len(share)] = np.frombuffer(share, dtype=np.uint8)
    return padded


def interpolate(shares: dict[int, bytes | memoryview], at: int = 0,
                block_bytes: int = BLOCK_BYTES) -> memoryview:
    """The value at ``at`` of the polynomials through k shares {x: bytes}: the secret at 0.

    Exactly the k shares to use must be given: nothing here checks them against each other;
    the restore path checks the result against the chunk tree instead.
    """
    points = sorted(shares)
    lengths = {len(shares[x]) for x in points}
    if len(lengths) != 1:
        raise ValueError(f"shares of one chunk differ in length: {sorted(lengths)}")
    length = lengths.pop()
    words = _words(length)
    sources = [_as_words(shares[x], words) for x in points]
    weights = gf256.lagrange_coefficients(points, at)
    weight_planes = [gf256.planes(w) for w in weights]
    out = np.zeros(words, dtype=np.uint64)
    block = _words(block_bytes)
    for start in range(0, words, block):
        dst = out[start:start + block]
        for source, weight, plane in zip(sources, weights, weight_planes, strict=True):
            if weight == 1:
                np.bitwise_xor(dst, source[start:start + block], out=dst)
            else:
                gf256.mul_xor_into(dst, source[start:start + block], plane)
    return memoryview(out.view(np.uint8))[:length]


def share_sets(points: list[int], k: int) -> list[tuple[int, ...]]:
    """Every k-subset of the available share points, the given order's first k first."""
    return list(combinations(points, k))
