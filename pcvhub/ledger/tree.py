"""The ledger's Merkle tree on disk: one append-only file of hashes per tree level.

``level/<k>`` holds, in order, the hash of every *complete* subtree of 2**k leaves
(level 0: the leaf hashes). Appending a leaf writes its hash and, each time it completes
a pair, the parent one level up: two hashes per leaf on average, 64 bytes of disk per
leaf in all. Any complete aligned subtree is then one read, so a root or a proof costs
O(log n) reads (``merkle.compact_root``), and a tlog-tiles hash tile of level L is a slice
of ``level/<8 L>``.

Crash safety is by truncation, not by journalling: nothing past the last signed
checkpoint counts (``truncate``), and whatever a SIGKILL cut off is appended again from
the log. ``sync`` makes the files durable before a checkpoint is signed over them.
"""

from __future__ import annotations

import os
from pathlib import Path

from pcvhub.ledger.errors import LedgerError
from pcvhub.trust import merkle

HASH = 32


class TreeLevels:
    """The level files of one tree (see the module doc).

    :param folder: the folder of the level files (created if missing).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fds: list[int] = []
        self._counts: list[int] = []
        while (self.folder / str(len(self._fds))).exists():
            self._open(len(self._fds))
        if not self._fds:
            self._open(0)
        self.size = self._counts[0]

    def _open(self, level: int) -> None:
        path = self.folder / str(level)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._fds.append(fd)
        # a write a SIGKILL cut short leaves a torn hash: it never counts
        self._counts.append(os.fstat(fd).st_size // HASH)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    # -- writing -------------------------------------------------------------------------

    def append(self, leaf_hash: bytes) -> int:
        """Add a leaf hash (and the parents it completes); return the leaf's index."""
        index = self.size
        self._write(0, index, leaf_hash)
        node, at, level = leaf_hash, index, 0
        while at & 1:  # a right child completes its parent
            node = merkle.node_hash(self.hash(level, at - 1), node)
            level, at = level + 1, at >> 1
            self._write(level, at, node)
        self.size = index + 1
        return index

    def _write(self, level: int, index: int, value: bytes) -> None:
        if level == len(self._fds):
            self._open(level)
        if self._counts[level] != index:
            raise LedgerError(f"{self.folder / str(level)} holds {self._counts[level]} hashes, "
                              f"expected {index} before appending: the level files disagree")
        os.write(self._fds[level], value)
        self._counts[level] = index + 1

    def truncate(self, size: int) -> None:
        """Forget every leaf from ``size`` on (what no signed checkpoint covers)."""
        if size > self.size:
            raise LedgerError(f"cannot keep {size} leaves: {self.folder} holds only {self.size}")
        for level in range(size.bit_length()):
            have = self._counts[level] if level < len(self._fds) else 0
            if have < size >> level:
                raise LedgerError(f"{self.folder / str(level)} holds {have} hashes but {size} "
                                  f"leaves need {size >> level}: a level file was cut short")
        for level, fd in enumerate(self._fds):
            keep = size >> level
            if self._counts[level] > keep or os.fstat(fd).st_size != keep * HASH:
                os.ftruncate(fd, keep * HASH)
                self._counts[level] = keep
        self.size = size

    def sync(self) -> None:
        for fd in self._fds:
            os.fsync(fd)

    # -- reading -------------------------------------------------------------------------

    def hash(self, level: int, index: int) -> bytes:
        """The hash of leaves [index * 2**level, (index + 1) * 2**level) (complete)."""
        if level >= len(self._fds) or index >= self._counts[level]:
            raise LedgerError(f"no complete subtree {index} at level {level} in a tree of "
                              f"{self.size} leaves")
        value = os.pread(self._fds[level], HASH, index * HASH)
        if len(value) != HASH:
            raise LedgerError(f"{self.folder / str(level)} is cut short at hash {index}")
        return value

    def hashes(self, level: int, start: int, count: int) -> bytes:
        """``count`` consecutive hashes of a level, concatenated (a tile is one read)."""
        if level >= len(self._fds) or start + count > self._counts[level]:
            raise LedgerError(f"level {level} has no hashes {start}..{start + count - 1} in a "
                              f"tree of {self.size} leaves")
        value = os.pread(self._fds[level], count * HASH, start * HASH)
        if len(value) != count * HASH:
            raise LedgerError(f"{self.folder / str(level)} is cut short at hash {start}")
        return value

    def range_root(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for the ranges proofs need (see ``merkle.compact_root``)."""
        if not 0 <= lo < hi <= self.size:
            raise LedgerError(f"leaves [{lo}, {hi}) are not in a tree of {self.size}")
        return merkle.compact_root(self.hash, lo, hi)

    def root(self, size: int | None = None) -> bytes:
        """The root of the first ``size`` leaves (default: all of them)."""
        size = self.size if size is None else size
        if size > self.size:
            raise LedgerError(f"no root for {size} leaves: the tree holds {self.size}")
        return merkle.root_of([]) if size == 0 else self.range_root(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        if not 0 <= index < size <= self.size:
            raise LedgerError(f"no inclusion proof for leaf {index} in a tree of {size} "
                              f"(the ledger holds {self.size} leaves)")
        return merkle.inclusion_proof(self.range_root, index, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        if not 0 <= old_size <= new_size <= self.size:
            raise LedgerError(f"no consistency proof from {old_size} to {new_size} leaves "
                              f"(the ledger holds {self.size}; the old size comes first)")
        return merkle.consistency_proof(self.range_root, old_size, new_size)
