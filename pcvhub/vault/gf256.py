"""Arithmetic in GF(2^8) and the vectorised kernels that apply it to whole blocks of bytes.

The field is the AES one: bytes are polynomials over GF(2) reduced modulo
x^8 + x^4 + x^3 + x + 1 (0x11B). Addition is XOR. Multiplication by a constant ``c`` is
linear over GF(2), so ``c * y`` is the XOR of ``c * 2^j`` over the bits ``j`` set in ``y``.
The kernels use exactly that on 64-bit words holding 8 bytes each (SWAR): for bit ``j``
they spread each byte's bit into a 0x00/0xFF byte mask and AND it with ``c * 2^j`` repeated
in all 8 bytes (a "plane"). Every step is a shift, AND, subtract or XOR on whole words, so
LLVM (through numba) turns the loop into AVX2 code: about 5 GB/s per multiply-and-add on
one core here, against 0.55 GB/s for a numpy table lookup and 2 GB/s for a numba table loop
(a table lookup is one byte at a time and does not vectorise).

Measured on this machine before choosing (4 MiB buffers, one core, medians of 9):
numpy word-wise ops for a 2-of-3 split 0.62 GB/s (one pass over memory per operation),
numba xtime loop 2.2 GB/s per general multiply, numba byte table 1.25 GB/s, numba bit-plane
SWAR 5.1-5.5 GB/s. So: numba, bit planes, and a block size that keeps the operands in L2.
"""

from __future__ import annotations

import numba
import numpy as np

POLYNOMIAL = 0x11B  # x^8 + x^4 + x^3 + x + 1, the AES field
_LOW_BITS = np.uint64(0x0101010101010101)  # bit 0 of each of the 8 bytes of a word


def mul(a: int, b: int) -> int:
    """a * b in GF(2^8), bit by bit (the slow reference the kernels are tested against)."""
    product = 0
    for _ in range(8):
        if b & 1:
            product ^= a
        a = (a << 1) ^ POLYNOMIAL if a & 0x80 else a << 1
        b >>= 1
    return product


def power(a: int, exponent: int) -> int:
    result = 1
    for _ in range(exponent):
        result = mul(result, a)
    return result


def inverse(a: int) -> int:
    """a^-1: a^254, since the multiplicative group has order 255."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return power(a, 254)


def lagrange_coefficients(xs: list[int], at: int = 0) -> list[int]:
    """The weights l_i with f(at) = XOR of l_i * f(x_i) for any polynomial of degree < len(xs).

    l_i = prod over m != i of (at - x_m) / (x_i - x_m); minus is XOR in this field.
    ``at = 0`` gives the secret; another ``at`` recomputes the share held at that point.
    """
    if len(set(xs)) != len(xs):
        raise ValueError(f"share points must be distinct: {xs}")
    weights = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for m, xm in enumerate(xs):
            if m != i:
                numerator = mul(numerator, at ^ xm)
                denominator = mul(denominator, xi ^ xm)
        weights.append(mul(numerator, inverse(denominator)))
    return weights


def planes(c: int) -> np.ndarray:
    """The 8 words ``c * 2^j`` repeated in every byte, j = 0..7: what the kernel ANDs with."""
    return np.array([mul(c, 1 << j) * 0x0101010101010101 for j in range(8)], dtype=np.uint64)


# The kernels are called from Python on 1-D slices of C-contiguous arrays, one cache-sized
# block at a time. Measured: numba types a slice taken *inside* compiled code as possibly
# strided, or, with offsets into one flat array, cannot rule out overlap, and in both cases
# LLVM gave up vectorising (0.2-0.65 GB/s instead of 3.6-5 GB/s). A Python call costs about
# a microsecond against ~50 us of work per 256 KiB block, so the loop over blocks stays here.


@numba.njit(cache=True, boundscheck=False, nogil=True)
def mul_xor_into(dst: np.ndarray, src: np.ndarray, plane: np.ndarray) -> None:
    """dst ^= c * src over uint64 words, with ``plane = planes(c)``."""
    for i in range(src.shape[0]):
        y = src[i]
        acc = np.uint64(0)
        for j in range(8):
            bit = (y >> np.uint64(j)) & _LOW_BITS
            # bit * 255 per byte without a multiply (AVX2 has no 64-bit multiply):
            # (bit << 8) - bit is 0xFF in each byte whose bit was set, with no carries.
            acc ^= ((bit << np.uint64(8)) - bit) & plane[j]
        dst[i] ^= acc


# Fused kernels: one pass over memory instead of a copy or a zero-fill followed by
# multiply-and-add passes. Each call still gets plain 1-D arrays from Python (see above).


@numba.njit(cache=True, boundscheck=False, nogil=True)
def mul_into(dst: np.ndarray, src: np.ndarray, plane: np.ndarray) -> None:
    """dst = c * src over uint64 words (overwrites dst, no zero-fill needed)."""
    for i in range(src.shape[0]):
        y = src[i]
        acc = np.uint64(0)
        for j in range(8):
            bit = (y >> np.uint64(j)) & _LOW_BITS
            acc ^= ((bit << np.uint64(8)) - bit) & plane[j]
        dst[i] = acc


@numba.njit(cache=True, boundscheck=False, nogil=True)
def xor_mul_into(dst: np.ndarray, base: np.ndarray, src: np.ndarray, plane: np.ndarray) -> None:
    """dst = base ^ c * src: a share of a 2-of-n split (secret ^ x * random) in one pass."""
    for i in range(src.shape[0]):
        y = src[i]
        acc = base[i]
        for j in range(8):
            bit = (y >> np.uint64(j)) & _LOW_BITS
            acc ^= ((bit << np.uint64(8)) - bit) & plane[j]
        dst[i] = acc


@numba.njit(cache=True, boundscheck=False, nogil=True)
def xor_into(dst: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """dst = a ^ b (multiplying by 1 is the identity)."""
    for i in range(a.shape[0]):
        dst[i] = a[i] ^ b[i]


@numba.njit(cache=True, boundscheck=False, nogil=True)
def mul2_into(dst: np.ndarray, a: np.ndarray, plane_a: np.ndarray, b: np.ndarray,
              plane_b: np.ndarray) -> None:
    """dst = ca * a ^ cb * b: a 2-share Lagrange combination (a 2-of-n restore) in one pass."""
    for i in range(a.shape[0]):
        ya = a[i]
        yb = b[i]
        acc = np.uint64(0)
        for j in range(8):
            bit = (ya >> np.uint64(j)) & _LOW_BITS
            acc ^= ((bit << np.uint64(8)) - bit) & plane_a[j]
            bit = (yb >> np.uint64(j)) & _LOW_BITS
            acc ^= ((bit << np.uint64(8)) - bit) & plane_b[j]
        dst[i] = acc
