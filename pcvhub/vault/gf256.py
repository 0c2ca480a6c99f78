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
def two_point_into(dst: np.ndarray, a: np.ndarray, b: np.ndarray, plane: np.ndarray) -> None:
    """dst = a ^ w * (a ^ b), with ``plane = planes(w)``: a 2-share Lagrange combination.

    Two shares of a degree-1 polynomial, A = f(xa) and B = f(xb), give f(at) =
    A ^ ((xa ^ at) / (xa ^ xb)) * (A ^ B): one multiply per word instead of the two of
    ``la * A ^ lb * B`` (measured 0.26 against 0.36 s/GB).
    """
    for i in range(a.shape[0]):
        ya = a[i]
        y = ya ^ b[i]
        acc = ya
        for j in range(8):
            bit = (y >> np.uint64(j)) & _LOW_BITS
            acc ^= ((bit << np.uint64(8)) - bit) & plane[j]
        dst[i] = acc


# Share points are small (x = 1..16), so a split multiplies only by small constants. x * y
# is then the XOR of y * 2^j over the bits j of x, and y * 2 ("xtime") is a shift and a
# conditional XOR of 0x1B per byte: about 6 word operations, against about 40 for a
# general bit-plane multiply. Horner's rule keeps every multiply in a split by a share point.
_HIGH_7 = np.uint64(0xFEFEFEFEFEFEFEFE)  # the bits that survive a per-byte shift left by 1
_REDUCE = np.uint64(0x1B1B1B1B1B1B1B1B)  # x^8 = x^4 + x^3 + x + 1, in every byte


@numba.njit(cache=True, inline="always")
def _xtime(y: np.uint64) -> np.uint64:
    """2 * y for each of the 8 bytes of a word."""
    high = (y >> np.uint64(7)) & _LOW_BITS
    return ((y << np.uint64(1)) & _HIGH_7) ^ (((high << np.uint64(8)) - high) & _REDUCE)


@numba.njit(cache=True, inline="always")
def _mul_small(y: np.uint64, x: int) -> np.uint64:
    """x * y for each byte of y, 1 <= x <= 31 (the branches are loop-invariant)."""
    acc = np.uint64(0)
    if x & 1:
        acc ^= y
    y = _xtime(y)
    if x & 2:
        acc ^= y
    y = _xtime(y)
    if x & 4:
        acc ^= y
    y = _xtime(y)
    if x & 8:
        acc ^= y
    if x & 16:
        acc ^= _xtime(y)
    return acc


@numba.njit(cache=True, boundscheck=False, nogil=True)
def mul_small_xor_into(dst: np.ndarray, base: np.ndarray, src: np.ndarray, x: int) -> None:
    """dst = base ^ x * src, for a share point 1 <= x <= 31 (dst may be src: a Horner step)."""
    for i in range(src.shape[0]):
        dst[i] = base[i] ^ _mul_small(src[i], x)


@numba.njit(cache=True, boundscheck=False, nogil=True)
def mul_small_xor_into3(d0: np.ndarray, d1: np.ndarray, d2: np.ndarray, base: np.ndarray,
                        src: np.ndarray, x: int) -> None:
    """d_t = base ^ (x + t) * src for t = 0, 1, 2: three shares of a 2-of-n split in one pass
    (each word of the secret and of the random block read once; measured 0.32 s/GB for all
    three against 0.58 for three single passes, the difference being memory traffic)."""
    for i in range(src.shape[0]):
        s = base[i]
        r = src[i]
        d0[i] = s ^ _mul_small(r, x)
        d1[i] = s ^ _mul_small(r, x + 1)
        d2[i] = s ^ _mul_small(r, x + 2)


# Addition alone, for the XOR-only scheme (:mod:`~pcvhub.vault.xorshare`).


@numba.njit(cache=True, boundscheck=False, nogil=True)
def xor_into(dst: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """dst = a ^ b."""
    for i in range(a.shape[0]):
        dst[i] = a[i] ^ b[i]


@numba.njit(cache=True, boundscheck=False, nogil=True)
def xor_accumulate(dst: np.ndarray, a: np.ndarray) -> None:
    """dst ^= a."""
    for i in range(a.shape[0]):
        dst[i] ^= a[i]
