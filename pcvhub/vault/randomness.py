"""Where the random coefficients of the shares come from, and what security that gives.

:class:`OsRandomness` reads the kernel's CSPRNG (``getrandom``): the shares are then
information-theoretically secure, whatever an adversary can compute. It is slow (about
0.2-0.3 GB/s here), and a k-of-n split needs k-1 random bytes per input byte.

:class:`AesCtrDrbg` expands one 256-bit key from the OS with AES-256-CTR (AES-NI, several
GB/s). Shares made with it are only *computationally* secure: anyone who breaks AES-256 or
learns the key learns the coefficients. The operator chooses it knowingly, and the share
metadata says so (``security = "computational"``), so nobody mistakes it for the other.
"""

from __future__ import annotations

import os
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

INFORMATION_THEORETIC = "information-theoretic"
COMPUTATIONAL = "computational"


class Randomness(Protocol):
    name: str  # written into the share metadata and the GenomeStored event
    security: str  # INFORMATION_THEORETIC or COMPUTATIONAL

    def fill(self, buffer: memoryview) -> None:
        """Overwrite ``buffer`` with fresh random bytes."""


class OsRandomness:
    """The OS CSPRNG, read straight into the caller's buffer (no allocation per call)."""

    name = "os-getrandom"
    security = INFORMATION_THEORETIC

    def __init__(self) -> None:
        # unbuffered, so readinto fills the caller's memory directly
        self._device = open("/dev/urandom", "rb", buffering=0)  # noqa: SIM115

    def fill(self, buffer: memoryview) -> None:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            done += self._device.readinto(view[done:])


class AesCtrDrbg:
    """AES-256-CTR keystream as a deterministic random bit generator (computational security).

    ``seed`` fixes the key (tests, reproducible benchmarks); by default the key comes from
    the OS and is never stored, so nobody can regenerate the coefficients later.
    """

    name = "drbg-aes256-ctr"
    security = COMPUTATIONAL

    def __init__(self, seed: bytes | None = None) -> None:
        key = os.urandom(32) if seed is None else seed
        if len(key) != 32:
            raise ValueError("an AES-256-CTR DRBG seed is 32 bytes")
        self._keystream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._zeros = bytearray()

    def fill(self, buffer: memoryview) -> None:
        view = memoryview(buffer).cast("B")
        if len(self._zeros) < len(view):
            self._zeros = bytearray(len(view))
        # encrypting zeros into the caller's buffer: keystream with no copy
        self._keystream.update_into(memoryview(self._zeros)[:len(view)], view)
