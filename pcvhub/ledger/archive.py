"""The daily archive seal: the log's latest checkpoint, signed with a hash-based scheme.

A checkpoint's two lines rest on Ed25519 and ML-DSA-44. A therapy's record must stay
provable for decades (the patient's lifetime and a regulator's retention period), longer
than anyone can promise for those. So once a day ``pcvhub ledger run`` also seals the
latest checkpoint with the log's archive key, SPHINCS+ through liboqs
(``pcvhub.trust.archive``), whose security rests on SHA-2 alone. A checkpoint sealed so,
plus a consistency proof from its size to any later checkpoint, shows the later tree
extends what was sealed, with no trust in the signature schemes of the day.

One seal is a small text file, ``tiles/archive/<size>`` (and a copy at
``tiles/archive/latest``), served by ``pcvhub ledger serve`` beside the tiles::

    pcvhub archive seal v1
    algorithm SPHINCS+-SHA2-128s-simple
    key <base64 public key>
    sealed-at <POSIX seconds>
    signature <base64 signature>

    <the checkpoint's signed note, byte for byte>

The signature covers the first four lines, a blank line and the note (everything but the
signature line). Parsing is strict: one spelling per seal, so any changed byte fails.
Sealing is slow by design (a SPHINCS+-128s signature takes about a second here): once a
day, never per record.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.note import VerifiedCheckpoint, VerifierKey, verify_checkpoint
from pcvhub.ledger.tiles import write_file
from pcvhub.trust.archive import ARCHIVE_ALGORITHM, ArchiveSigner

#: under the tile folder, so ``ledger serve`` can answer it
ARCHIVE_DIR = "archive"
LATEST = "latest"
#: what ``ledger serve`` answers of the archive folder (``latest`` changes; the rest never)
ARCHIVE_PATH = re.compile(rf"{ARCHIVE_DIR}/(?:{LATEST}|0|[1-9][0-9]{{0,19}})")
LATEST_SEAL_PATH = f"{ARCHIVE_DIR}/{LATEST}"
DAY_SECONDS = 86_400
_MAGIC = "pcvhub archive seal v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str, where: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LedgerError(f"{where}: {what} is not base64") from None
    if _b64(data) != text:
        raise LedgerError(f"{where}: {what} is not in canonical base64: edited after sealing")
    return data


@dataclass(frozen=True)
class ArchiveSeal:
    """One checkpoint sealed with the archive key (see the module doc)."""

    public_key: bytes
    sealed_at: int
    note: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        """What the signature covers: every line but the signature line, then the note."""
        return (f"{_MAGIC}\nalgorithm {ARCHIVE_ALGORITHM}\nkey {_b64(self.public_key)}\n"
                f"sealed-at {self.sealed_at}\n\n").encode() + self.note

    def encode(self) -> bytes:
        return (f"{_MAGIC}\nalgorithm {ARCHIVE_ALGORITHM}\nkey {_b64(self.public_key)}\n"
                f"sealed-at {self.sealed_at}\nsignature {_b64(self.signature)}\n\n"
                ).encode() + self.note

    @classmethod
    def parse(cls, data: bytes, where: str = "archive seal") -> ArchiveSeal:
        """The seal in ``data``, spelled exactly as ``encode`` spells it, else LedgerError."""
        head, sep, note = data.partition(b"\n\n")
        if not sep:
            raise LedgerError(f"{where}: no blank line between the seal's lines and the "
                              "checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError:
            raise LedgerError(f"{where}: the seal's lines are not ASCII") from None
        names = ("algorithm", "key", "sealed-at", "signature")
        if len(lines) != 5 or lines[0] != _MAGIC or any(
                not line.startswith(name + " ")
                for line, name in zip(lines[1:], names, strict=True)):
            raise LedgerError(f"{where}: not a {_MAGIC!r} (its lines: {', '.join(names)})")
        values = [line.split(" ", 1)[1] for line in lines[1:]]
        if values[0] != ARCHIVE_ALGORITHM:
            raise LedgerError(f"{where}: sealed with {values[0]!r}, this verifier knows only "
                              f"{ARCHIVE_ALGORITHM}")
        if not values[2].isdigit() or str(int(values[2])) != values[2]:
            raise LedgerError(f"{where}: sealed-at {values[2]!r} is not POSIX seconds")
        return cls(_unb64(values[1], "the key", where), int(values[2]), note,
                   _unb64(values[3], "the signature", where))


def seal_checkpoint(signed: VerifiedCheckpoint, signer: ArchiveSigner, at: int) -> ArchiveSeal:
    """Seal one checkpoint (its note as the log signed it) at POSIX time ``at``."""
    unsigned = ArchiveSeal(signer.public_key, at, signed.note, b"")
    return ArchiveSeal(signer.public_key, at, signed.note, signer.sign(unsigned.signed_bytes()))


def verify_archive_seal(data: bytes, archive_key: bytes, ed25519_key: VerifierKey,
                        ml_dsa_44_key: VerifierKey, where: str = "archive seal"
                        ) -> tuple[ArchiveSeal, VerifiedCheckpoint]:
    """Check a seal: the archive key is the one expected, its signature verifies, and the
    checkpoint inside is the log's (both lines). Raise LedgerError naming what fails."""
    seal = ArchiveSeal.parse(data, where)
    if seal.public_key != archive_key:
        raise LedgerError(f"{where}: sealed by archive key {_b64(seal.public_key)[:12]}..., "
                          f"not the log's ({_b64(archive_key)[:12]}...)")
    if not ArchiveSigner.verify(seal.public_key, seal.signed_bytes(), seal.signature):
        raise LedgerError(f"{where}: the {ARCHIVE_ALGORITHM} signature does not verify: the "
                          "seal or the checkpoint in it was altered")
    checkpoint = verify_checkpoint(seal.note, ed25519_key, ml_dsa_44_key,
                                   where=f"the checkpoint in {where}")
    return seal, checkpoint


class DailyArchive:
    """Seals the log's latest checkpoint at most once every ``every`` seconds (a day).

    A checkpoint is due when none has been sealed yet, or ``every`` seconds have passed
    since the last seal and the tree has grown since: an unchanged tree stays covered by
    its seal. On start it reads its own last seal back and checks it (a restart must not
    trust a file it did not just write).

    :param tiles: the log's tile folder; seals go to ``tiles/archive/``.
    :param ed25519_key, ml_dsa_44_key: the log's verifier keys (to check the last seal).
    """

    def __init__(self, tiles: Path, signer: ArchiveSigner, ed25519_key: VerifierKey,
                 ml_dsa_44_key: VerifierKey, *, every: float = DAY_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(tiles) / ARCHIVE_DIR
        self.signer, self.every, self._clock = signer, every, clock
        self.last: ArchiveSeal | None = None
        self.last_size = -1
        path = self.folder / LATEST
        if path.exists():
            self.last, checkpoint = verify_archive_seal(
                path.read_bytes(), signer.public_key, ed25519_key, ml_dsa_44_key,
                where=str(path))
            self.last_size = checkpoint.checkpoint.size

    def due(self, latest: VerifiedCheckpoint) -> bool:
        if latest.checkpoint.size == 0 or latest.checkpoint.size <= self.last_size:
            return False
        return self.last is None or self._clock() - self.last.sealed_at >= self.every

    def seal(self, latest: VerifiedCheckpoint) -> ArchiveSeal:
        """Seal ``latest`` and write it: 1. sign; 2. ``archive/<size>``; 3. ``latest``,
        last (a restart reads ``latest``: it never names a seal not yet written)."""
        sealed = seal_checkpoint(latest, self.signer, int(self._clock()))
        data = sealed.encode()
        write_file(self.folder / str(latest.checkpoint.size), data)
        write_file(self.folder / LATEST, data)
        self.last, self.last_size = sealed, latest.checkpoint.size
        return sealed
