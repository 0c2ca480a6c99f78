"""Sealing a share for the site that will keep it, so a recorded transfer stays unreadable.

Default: HPKE (RFC 9180) with the X-Wing hybrid KEM ML-KEM-768 + X25519
(``cryptography``'s ``KEM.MLKEM768_X25519``), HKDF-SHA256 and AES-256-GCM. Breaking it
needs breaking both ML-KEM-768 and X25519, so a share recorded in transit today is not
readable by a future quantum adversary ("store now, read later").

The binding context (CoI, chunk index, share index) goes into HPKE's ``info``:
``cryptography`` 50's public single-shot API takes ``info`` but no separate AEAD
associated data. ``info`` enters the key schedule, so opening with any other context fails
exactly as a wrong associated data would: a share cannot be replayed as another chunk,
another share index or another person's.

A site's private key is kept as the 64-byte ML-KEM seed and the 32-byte X25519 key (the
hybrid private key object has no serialisation of its own).

Optional: :class:`OneTimePadLink`, the demonstrator's stand-in for QKD keys: pre-shared
random pad consumed byte for byte (XOR) plus a one-time Poly1305 tag keyed from the pad,
with the remaining key-material budget tracked and refused when exhausted.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hpke, poly1305
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEALING_HPKE = "hpke-mlkem768x25519-hkdfsha256-aes256gcm"
SEALING_OTP = "one-time-pad-poly1305"
_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def share_context(coi: str, chunk_index: int, share_index: int) -> bytes:
    """The bytes every sealed share is bound to (length-prefixed, so fields cannot shift)."""
    coi_bytes = coi.encode()
    return (b"pcvhub.vault.share.v1" + struct.pack(">H", len(coi_bytes)) + coi_bytes
            + struct.pack(">QB", chunk_index, share_index))


@dataclass(frozen=True)
class SitePublicKey:
    mlkem: bytes  # ML-KEM-768 encapsulation key, 1184 bytes
    x25519: bytes  # 32 bytes

    def hpke_key(self) -> hpke.MLKEM768X25519PublicKey:
        return hpke.MLKEM768X25519PublicKey(mlkem.MLKEM768PublicKey.from_public_bytes(self.mlkem),
                                            x25519.X25519PublicKey.from_public_bytes(self.x25519))

    @property
    def key_id(self) -> str:
        """SHA-256 of both halves, hex: how the share map names the key a share was sealed to."""
        return hashlib.sha256(self.mlkem + self.x25519).hexdigest()


@dataclass(frozen=True)
class SiteKeyPair:
    mlkem_seed: bytes  # 64 bytes: regenerates the ML-KEM-768 key pair
    x25519_private: bytes  # 32 bytes

    @classmethod
    def generate(cls) -> SiteKeyPair:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
        x = x25519.X25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(seed, x)

    def hpke_key(self) -> hpke.MLKEM768X25519PrivateKey:
        return hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(self.mlkem_seed),
            x25519.X25519PrivateKey.from_private_bytes(self.x25519_private))

    @property
    def public(self) -> SitePublicKey:
        m = mlkem.MLKEM768PrivateKey.from_seed_bytes(self.mlkem_seed).public_key()
        x = x25519.X25519PrivateKey.from_private_bytes(self.x25519_private).public_key()
        return SitePublicKey(m.public_bytes(Encoding.Raw, PublicFormat.Raw),
                             x.public_bytes(Encoding.Raw, PublicFormat.Raw))


def seal(share: bytes | memoryview, site: SitePublicKey | hpke.MLKEM768X25519PublicKey,
         context: bytes) -> bytes:
    key = site.hpke_key() if isinstance(site, SitePublicKey) else site
    return _SUITE.encrypt(share, key, info=context)


def open_sealed(sealed: bytes, site: SiteKeyPair | hpke.MLKEM768X25519PrivateKey,
                context: bytes) -> bytes:
    """The share, or ``cryptography.exceptions.InvalidTag`` if it was altered or re-bound."""
    key = site.hpke_key() if isinstance(site, SiteKeyPair) else site
    return _SUITE.decrypt(sealed, key, info=context)


class PadExhausted(Exception):
    """A link's pad cannot cover what is asked of it; raised before any pad byte is used."""


class OneTimePadLink:
    """One end of a link with a pre-shared pad; both ends consume it in the same order.

    Each message uses 32 pad bytes for a one-time Poly1305 key, then one pad byte per
    share byte. Pad bytes are never reused: the offset only moves forward, and a message
    that would need more than :attr:`remaining` is refused before any pad is used.
    """

    TAG_KEY = 32

    def __init__(self, pad: bytes, name: str = "one-time-pad link") -> None:
        self._pad = memoryview(bytes(pad))
        self.offset = 0
        self.name = name  # how errors name the link, e.g. "hub -> site-2"

    @classmethod
    def pad_needed(cls, message_bytes: int, messages: int) -> int:
        """Pad bytes that ``messages`` messages of ``message_bytes`` in all consume."""
        return messages * cls.TAG_KEY + message_bytes

    @property
    def remaining(self) -> int:
        return len(self._pad) - self.offset

    def _take(self, count: int) -> memoryview:
        if count > self.remaining:
            raise PadExhausted(f"{self.name} needs {count:,} pad bytes, has {self.remaining:,}: "
                               f"short by {count - self.remaining:,}; no pad was used")
        part = self._pad[self.offset:self.offset + count]
        self.offset += count
        return part

    def seal(self, share: bytes | memoryview, context: bytes) -> bytes:
        start = self.offset
        material = self._take(self.TAG_KEY + len(share))
        body = _xor(share, material[self.TAG_KEY:])
        tag = poly1305.Poly1305.generate_tag(bytes(material[:self.TAG_KEY]),
                                             _tag_input(context, start, body))
        return struct.pack(">Q", start) + body + tag

    def open(self, sealed: bytes, context: bytes) -> bytes:
        (start,) = struct.unpack(">Q", sealed[:8])
        body, tag = sealed[8:-16], sealed[-16:]
        if start != self.offset:
            raise ValueError(f"pad offset {start} out of step with this end ({self.offset})")
        material = self._take(self.TAG_KEY + len(body))
        poly1305.Poly1305.verify_tag(bytes(material[:self.TAG_KEY]),
                                     _tag_input(context, start, body), tag)
        return _xor(body, material[self.TAG_KEY:])


def _tag_input(context: bytes, start: int, body: bytes) -> bytes:
    return struct.pack(">H", len(context)) + context + struct.pack(">Q", start) + body


def _xor(a: bytes | memoryview, b: bytes | memoryview) -> bytes:
    return np.bitwise_xor(np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)).tobytes()
