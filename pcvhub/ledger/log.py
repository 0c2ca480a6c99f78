"""The transparency log itself: append leaves, sign checkpoints, prove, resume after a kill.

A log folder::

    entries          every leaf, framed as in an entry bundle (u16 length || bytes)
    entries.idx      u64 start offset of each leaf in ``entries``
    level/<k>        the tree's hashes (pcvhub.ledger.tree)
    keys.json        the log's private keys, encrypted (the scheme of pcvhub.trust.keys),
                     and its archive key (pcvhub.ledger.archive)
    tiles/           what ``pcvhub ledger serve`` serves: checkpoint, tile/..., tile/entries/...,
                     archive/<size> (the daily archive seals)

The signed ``tiles/checkpoint`` is the commit point. Whatever lies past its size after a
crash was never signed and is cut off on open; what it covers is verified on open (every
entry rehashed, every stored level recomputed, the root compared), so a log never signs
over a stored tree it has not checked. ``LogSnapshot`` reads a folder read-only as of its
signed checkpoint (``pcvhub audit export``, beside a running writer).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.note import (
    Checkpoint,
    LogKeys,
    VerifiedCheckpoint,
    VerifierKey,
    verify_checkpoint,
)
from pcvhub.ledger.proofs import ConsistencyProof, InclusionProof
from pcvhub.ledger.tiles import TileSource, frame, unframe, write_file, write_tiles
from pcvhub.ledger.tree import TreeLevels
from pcvhub.trust import merkle
from pcvhub.trust.archive import ARCHIVE_ALGORITHM, ArchiveSigner
from pcvhub.trust.keys import _SCRYPT, _kek

_OFFSET = struct.Struct(">Q")
#: how many leaves a resume check hashes per read
_CHUNK = 4096


#: the log's keys (its seeds, sealed) and public vkeys, in the log's folder
KEY_FILE = "keys.json"


def save_keys(path: Path, keys: LogKeys, passphrase: bytes,
              archive: ArchiveSigner | None = None) -> None:
    """The log's seeds, AES-256-GCM under a scrypt key (as actor keys are stored), and the
    archive key for the daily seal (``ledger.archive``) under the same key, if given."""
    salt, nonce = os.urandom(16), os.urandom(12)
    kek = _kek(passphrase, salt)
    ed_seed, pq_seed = keys.seeds()
    sealed = AESGCM(kek).encrypt(nonce, ed_seed + pq_seed, f"ledger/{keys.name}".encode())
    record: dict[str, object] = {
        "name": keys.name, "kdf": {"name": "scrypt", **_SCRYPT, "salt": salt.hex()},
        "cipher": {"name": "AES-256-GCM", "nonce": nonce.hex(), "ciphertext": sealed.hex()},
        "ed25519_vkey": str(keys.ed25519_vkey),
        "ml_dsa_44_vkey": str(keys.ml_dsa_44_vkey)}
    if archive is not None:
        archive_nonce = os.urandom(12)
        record["archive"] = {
            "algorithm": ARCHIVE_ALGORITHM, "public_key": archive.public_key.hex(),
            "nonce": archive_nonce.hex(),
            "ciphertext": AESGCM(kek).encrypt(archive_nonce, archive.secret_key_to_seal(),
                                              _archive_aad(keys.name)).hex()}
    write_file(path, json.dumps(record, indent=1).encode())
    path.chmod(0o600)


def _archive_aad(name: str) -> bytes:
    return f"ledger-archive/{ARCHIVE_ALGORITHM}/{name}".encode()


def archive_public_key(path: Path) -> bytes | None:
    """The archive key's public half from a key file (no passphrase needed), or None."""
    entry = json.loads(path.read_text()).get("archive")
    return None if entry is None else bytes.fromhex(entry["public_key"])


def load_archive_signer(path: Path, passphrase: bytes) -> ArchiveSigner | None:
    """The archive key ``save_keys`` stored, or None for a log made without one."""
    record = json.loads(path.read_text())
    entry = record.get("archive")
    if entry is None:
        return None
    if entry.get("algorithm") != ARCHIVE_ALGORITHM:
        raise LedgerError(f"{path}: archive key is {entry.get('algorithm')!r}, this ledger "
                          f"seals with {ARCHIVE_ALGORITHM}")
    try:
        secret = AESGCM(_kek(passphrase, bytes.fromhex(record["kdf"]["salt"]))).decrypt(
            bytes.fromhex(entry["nonce"]), bytes.fromhex(entry["ciphertext"]),
            _archive_aad(record["name"]))
    except InvalidTag:
        raise LedgerError(f"cannot unlock the archive key in {path}: wrong passphrase, or the "
                          "file was altered") from None
    return ArchiveSigner(secret, bytes.fromhex(entry["public_key"]))


def load_keys(path: Path, passphrase: bytes, kind: type[LogKeys] = LogKeys,
              init: str = "pcvhub ledger init") -> LogKeys:
    """The keys ``save_keys`` stored (a log's, or with ``kind`` a witness's)."""
    if not path.exists():
        raise LedgerError(f"no keys at {path}: create them with `{init}`")
    record = json.loads(path.read_text())
    try:
        seeds = AESGCM(_kek(passphrase, bytes.fromhex(record["kdf"]["salt"]))).decrypt(
            bytes.fromhex(record["cipher"]["nonce"]), bytes.fromhex(record["cipher"]["ciphertext"]),
            f"ledger/{record['name']}".encode())
    except InvalidTag:
        raise LedgerError(f"cannot unlock the ledger keys in {path}: wrong passphrase, or the "
                          "file was altered") from None
    return kind.from_seeds(record["name"], seeds[:32], seeds[32:])


class _LogFiles:
    """Reading and proving from a log folder's files (the writer and read-only snapshots)."""

    root: Path
    levels: TreeLevels
    _entries: int
    _index: int
    _end: int

    @property
    def size(self) -> int:
        return self.levels.size

    def _start(self, index: int) -> int:
        raw = os.pread(self._index, _OFFSET.size, index * _OFFSET.size)
        if len(raw) != _OFFSET.size:
            raise LedgerError(f"{self.root}/entries.idx has no offset for leaf {index}")
        return _OFFSET.unpack(raw)[0]

    def _framed(self, start: int, stop: int) -> bytes:
        """Leaves [start, stop) as they stand in ``entries``: an entry bundle's bytes."""
        if not 0 <= start <= stop <= self.size:
            raise LedgerError(f"no leaves [{start}, {stop}): the log holds {self.size}")
        if start == stop:
            return b""
        begin = self._start(start)
        end = self._start(stop) if stop < self.size else self._end
        return os.pread(self._entries, end - begin, begin)

    def entries(self, start: int, stop: int) -> Iterator[bytes]:
        yield from unframe(self._framed(start, stop), f"{self.root}/entries [{start}, {stop})")

    def entry(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise LedgerError(f"no leaf {index}: the log holds {self.size}")
        return next(self.entries(index, index + 1))

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        size = self.size if size is None else size
        return InclusionProof(index, size, tuple(self.levels.inclusion_proof(index, size)))

    def consistency_proof(self, old_size: int, new_size: int | None = None
                          ) -> ConsistencyProof:
        new_size = self.size if new_size is None else new_size
        return ConsistencyProof(old_size, new_size,
                                tuple(self.levels.consistency_proof(old_size, new_size)))

    def close(self) -> None:
        os.close(self._entries)
        os.close(self._index)
        self.levels.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogSnapshot(_LogFiles):
    """A log folder as of its signed ``tiles/checkpoint``, read-only (beside a running
    ``pcvhub ledger run``, which it never disturbs: nothing is cut or written). For exports:
    entries, inclusion and consistency proofs up to the checkpoint's size.

    :param root: the log folder.
    :param ed25519_key, ml_dsa_44_key: the log's verifier keys; the checkpoint must verify.
    """

    def __init__(self, root: Path, ed25519_key: VerifierKey, ml_dsa_44_key: VerifierKey
                 ) -> None:
        self.root = Path(root)
        path = self.root / "tiles" / "checkpoint"
        if not path.exists():
            raise LedgerError(f"no checkpoint at {path}: is {self.root} a ledger folder "
                              "(`pcvhub ledger init`)?")
        self.latest = verify_checkpoint(path.read_bytes(), ed25519_key, ml_dsa_44_key,
                                        where=str(path))
        self._size = self.latest.checkpoint.size
        self._entries = os.open(self.root / "entries", os.O_RDONLY)
        self._index = os.open(self.root / "entries.idx", os.O_RDONLY)
        self.levels = TreeLevels(self.root / "level")
        held = os.fstat(self._index).st_size // _OFFSET.size
        if held < self._size or self.levels.size < self._size:
            raise LedgerError(f"{path} covers {self._size} leaves but {self.root} holds "
                              f"{min(held, self.levels.size)}: its files were truncated")
        self._end = self._start(self._size) if self._size < held else (
            os.fstat(self._entries).st_size)
        if self.levels.root(self._size) != self.latest.checkpoint.root:
            raise LedgerError(f"the stored tree of {self.root} has a root for {self._size} "
                              f"leaves other than its signed checkpoint {path}")

    @property
    def size(self) -> int:
        """The signed checkpoint's size: the writer may hold more, not yet signed."""
        return self._size


class TransparencyLog(_LogFiles):
    """An append-only Merkle log in a folder (see the module doc). One writer at a time.

    :param root: the log folder.
    :param keys: the log's signing keys; their name is the checkpoint origin.
    """

    def __init__(self, root: Path, keys: LogKeys) -> None:
        self.root = Path(root)
        self.keys = keys
        self.origin = keys.name
        self.tiles = self.root / "tiles"
        self.root.mkdir(parents=True, exist_ok=True)
        self._entries = os.open(self.root / "entries", os.O_RDWR | os.O_CREAT | os.O_APPEND,
                                0o644)
        self._index = os.open(self.root / "entries.idx", os.O_RDWR | os.O_CREAT | os.O_APPEND,
                              0o644)
        self.levels = TreeLevels(self.root / "level")
        self.latest: VerifiedCheckpoint | None = None
        self._resume()

    # -- opening: resume from the last signed checkpoint --------------------------------------

    def _resume(self) -> None:
        """1. read our own last checkpoint and check both its lines with our public keys;
        2. cut every file back to its size (nothing past it was signed);
        3. recompute the stored tree from the entries and compare it with the checkpoint."""
        path = self.tiles / "checkpoint"
        size = 0
        if path.exists():
            self.latest = verify_checkpoint(path.read_bytes(), self.keys.ed25519_vkey,
                                            self.keys.ml_dsa_44_vkey, where=str(path))
            if self.latest.checkpoint.origin != self.origin:
                raise LedgerError(f"{path} is a checkpoint of {self.latest.checkpoint.origin}, "
                                  f"this log is {self.origin}")
            size = self.latest.checkpoint.size
        held = os.fstat(self._index).st_size // _OFFSET.size
        if held < size:
            raise LedgerError(f"{path} covers {size} leaves but {self.root / 'entries.idx'} "
                              f"holds {held}: the log's files were truncated or replaced")
        end = self._start(size) if size < held else os.fstat(self._entries).st_size
        os.ftruncate(self._index, size * _OFFSET.size)
        os.ftruncate(self._entries, end)
        self._end = end  # kept in memory: an fstat per append would cost a syscall
        self.levels.truncate(size)
        self.verify_stored(size)
        if self.latest is not None and self.levels.root(size) != self.latest.checkpoint.root:
            raise LedgerError(f"the stored tree of {self.root} has a root for {size} leaves "
                              f"other than its signed checkpoint {path}")

    def verify_stored(self, size: int) -> None:
        """Every entry hashes to its stored leaf hash and every stored parent to its
        children, for the first ``size`` leaves; the first mismatch is named."""
        for start in range(0, size, _CHUNK):
            stop = min(size, start + _CHUNK)
            stored = self.levels.hashes(0, start, stop - start)
            for i, entry in enumerate(self.entries(start, stop), start=start):
                at = (i - start) * 32
                if merkle.leaf_hash(entry) != stored[at:at + 32]:
                    raise LedgerError(f"leaf {i} of {self.root}/entries does not hash to its "
                                      f"stored leaf hash (level/0 hash {i}): entry or hash "
                                      "altered")
        level = 0
        while size >> (level + 1):
            count = size >> (level + 1)
            for start in range(0, count, _CHUNK):
                stop = min(count, start + _CHUNK)
                children = self.levels.hashes(level, 2 * start, 2 * (stop - start))
                parents = self.levels.hashes(level + 1, start, stop - start)
                for j in range(stop - start):
                    c = children[64 * j:64 * j + 64]
                    if merkle.node_hash(c[:32], c[32:]) != parents[32 * j:32 * j + 32]:
                        raise LedgerError(f"{self.root}/level/{level + 1} hash {start + j} is "
                                          f"not the hash of its two children at level {level}")
            level += 1

    # -- appending ------------------------------------------------------------------------

    def append(self, entry: bytes) -> int:
        """Add one leaf; return its index. Durable and signed only at the next checkpoint."""
        framed = frame(entry)
        os.write(self._index, _OFFSET.pack(self._end))
        os.write(self._entries, framed)
        self._end += len(framed)
        return self.levels.append(merkle.leaf_hash(entry))

    def checkpoint(self, timestamp: int) -> VerifiedCheckpoint:
        """Sign the tree as it stands, in this order:

        1. fsync entries, index and levels: the signature must never cover hashes a crash
           could still take back;
        2. compute the root and sign the note (both lines);
        3. write the new tiles (full ones once, this size's partial ones);
        4. replace ``tiles/checkpoint`` atomically, last: a reader who sees the checkpoint
           finds every tile it needs, and a restart resumes from it.
        """
        if self.latest is not None and timestamp < self.latest.timestamp:
            raise LedgerError(f"checkpoint time {timestamp} is before the last one's "
                              f"({self.latest.timestamp}): the clock went back")
        os.fsync(self._entries)
        os.fsync(self._index)
        self.levels.sync()
        size = self.size
        head = Checkpoint(self.origin, size, self.levels.root(size))
        note = self.keys.sign(head, timestamp)
        write_tiles(self.tiles, size, TileSource(self.levels.hashes, self._framed))
        write_file(self.tiles / "checkpoint", note)
        self.latest = VerifiedCheckpoint(head, timestamp, note)
        return self.latest

    def attach_cosignatures(self, cosigned: VerifiedCheckpoint) -> None:
        """Replace ``tiles/checkpoint`` with the latest checkpoint plus witness lines: same
        body and the log's own lines verify, so the commit point is unchanged."""
        got = verify_checkpoint(cosigned.note, self.keys.ed25519_vkey,
                                self.keys.ml_dsa_44_vkey, where="cosigned checkpoint")
        if self.latest is None or got.checkpoint != self.latest.checkpoint:
            raise LedgerError(f"cosignatures are for size {got.checkpoint.size}, not this "
                              "log's latest checkpoint")
        write_file(self.tiles / "checkpoint", cosigned.note)
        self.latest = cosigned
