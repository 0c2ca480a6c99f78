"""Streaming split and restore: files of any size through a few chunks of memory.

:func:`split_stream` reads a file chunk by chunk, hashes each chunk into the chunk tree
and hands each chunk's n shares to a sink (which seals and ships them); memory stays at
about (n + 2) chunks. :func:`restore_stream` asks a share source for k shares of each
chunk, interpolates, and checks the result against the tree. When a chunk fails, every
other available share set is tried; the set that verifies fixes the polynomial, so each
other share is recomputed and compared, and a bad share is named by share index, chunk
index and byte range. With no consistent set the restore refuses, listing the bad chunks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from pcvhub.trust.merkle import leaf_hash
from pcvhub.vault.chunks import DEFAULT_CHUNK_SIZE, ChunkTree, read_chunks
from pcvhub.vault.randomness import OsRandomness, Randomness
from pcvhub.vault.shamir import SCHEME, ShamirSplitter, interpolate, share_sets

#: sink(share_index, chunk_index, share bytes); the bytes are only valid during the call
ShareSink = Callable[[int, int, memoryview], None]
#: source(share_index, chunk_index) -> the share, or None when that site cannot provide it
ShareSource = Callable[[int, int], "bytes | memoryview | None"]


@dataclass(frozen=True)
class Manifest:
    """What is needed besides k shares to restore and verify a file (no secret in it)."""

    tree: ChunkTree
    k: int
    n: int
    scheme: str
    randomness: str
    security: str

    @property
    def root(self) -> bytes:
        return self.tree.root

    def to_json(self) -> str:
        return json.dumps({"k": self.k, "n": self.n, "scheme": self.scheme,
                           "randomness": self.randomness, "security": self.security,
                           "chunk_size": self.tree.chunk_size, "size": self.tree.size,
                           "leaf_hashes": [h.hex() for h in self.tree.leaf_hashes]})

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text)
        tree = ChunkTree(d["chunk_size"], d["size"],
                         tuple(bytes.fromhex(h) for h in d["leaf_hashes"]))
        return cls(tree, d["k"], d["n"], d["scheme"], d["randomness"], d["security"])


def split_stream(source: BinaryIO, sink: ShareSink, k: int = 2, n: int = 3,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, randomness: Randomness | None = None,
                 on_chunk: Callable[[int], None] | None = None) -> Manifest:
    """Split ``source`` into k-of-n shares chunk by chunk; the manifest carries the tree."""
    randomness = randomness or OsRandomness()
    splitter = ShamirSplitter(k, n, randomness, chunk_size)
    leaves: list[bytes] = []
    size = 0
    for chunk_index, chunk in enumerate(read_chunks(source, chunk_size)):
        leaves.append(leaf_hash(chunk))
        size += len(chunk)
        for share_index, share in enumerate(splitter.split(chunk), start=1):
            sink(share_index, chunk_index, share)
        if on_chunk:
            on_chunk(len(chunk))
    return Manifest(ChunkTree(chunk_size, size, tuple(leaves)), k, n, SCHEME,
                    randomness.name, randomness.security)


class ShareTampered(Exception):
    """Raised by a share source when a share it holds fails its own check (its seal)."""


@dataclass(frozen=True)
class BadShare:
    """One share of one chunk that disagrees with the chunk tree, and where."""

    share_index: int
    chunk_index: int
    start: int  # first differing byte, offset within the share (= within the chunk)
    end: int  # one past the last differing byte

    def __str__(self) -> str:
        return (f"share {self.share_index} of chunk {self.chunk_index}: "
                f"bytes {self.start}..{self.end - 1} differ")


@dataclass
class RestoreReport:
    size: int = 0
    bad_shares: list[BadShare] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)  # (share, chunk) not provided
    bad_chunks: list[int] = field(default_factory=list)


class RestoreRefused(Exception):
    """No set of k available shares reproduces these chunks: nothing may be trusted."""

    def __init__(self, report: RestoreReport) -> None:
        self.report = report
        super().__init__(f"restore refused: chunks {report.bad_chunks} have no consistent "
                         f"set of shares; bad shares found: "
                         f"{[str(b) for b in report.bad_shares] or 'none named'}")


def _differing_range(a: bytes | memoryview, b: bytes | memoryview) -> tuple[int, int] | None:
    if len(a) != len(b):
        return 0, max(len(a), len(b))
    diff = np.flatnonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8))
    return None if diff.size == 0 else (int(diff[0]), int(diff[-1]) + 1)


def restore_chunk(manifest: Manifest, chunk_index: int, source: ShareSource,
                  report: RestoreReport, out: np.ndarray | None = None) -> memoryview | None:
    """One chunk, verified; bad shares named in ``report``. None when no set verifies.

    ``out`` (uint64 words, a chunk's worth) receives the chunk on the fast path instead of a
    new array: the result is then only valid until ``out`` is reused.
    """
    expected = manifest.tree.leaf_hashes[chunk_index]
    start, end = manifest.tree.byte_range(chunk_index)
    fetched: dict[int, bytes | memoryview] = {}
    points = list(range(1, manifest.n + 1))

    def fetch(x: int) -> bool:
        if x not in fetched:
            try:
                share = source(x, chunk_index)
            except ShareTampered:  # e.g. its seal's tag failed: every byte is suspect
                report.bad_shares.append(BadShare(x, chunk_index, 0, end - start))
                return False
            if share is None:
                report.missing.append((x, chunk_index))
                return False
            if len(share) != end - start:
                report.bad_shares.append(BadShare(x, chunk_index, 0, max(len(share),
                                                                         end - start)))
                return False
            fetched[x] = share
        return True

    # Fast path: the first k shares that can be fetched; the others only if needed.
    available = []
    for x in points:
        if len(available) == manifest.k:
            break
        if fetch(x):
            available.append(x)
    if len(available) == manifest.k:
        chunk = interpolate({x: fetched[x] for x in available}, out=out)
        if leaf_hash(chunk) == expected:
            return chunk
    # Slow path: every share, every k-subset, until one reproduces the leaf hash.
    available = [x for x in points if fetch(x)]
    for subset in share_sets(available, manifest.k):
        chunk = interpolate({x: fetched[x] for x in subset})
        if leaf_hash(chunk) != expected:
            continue
        good = {x: fetched[x] for x in subset}
        for other in available:
            if other in good:
                continue
            differs = _differing_range(interpolate(good, at=other), fetched[other])
            if differs:
                report.bad_shares.append(BadShare(other, chunk_index, *differs))
        return chunk
    report.bad_chunks.append(chunk_index)
    return None


def restore_stream(manifest: Manifest, source: ShareSource, write: Callable[[memoryview], object],
                   expected_root: bytes | None = None,
                   on_chunk: Callable[[int], None] | None = None) -> RestoreReport:
    """Restore every chunk in order into ``write`` (each chunk's bytes are only valid during
    the call, as for a :data:`ShareSink`); raise :class:`RestoreRefused` at the end
    if any chunk had no consistent share set (after scanning all, so the list is complete).

    ``expected_root`` is the root from the event or the card: the leaf list is checked
    against it first. Chunks after a bad one are still checked but not written, so a
    caller writing to a temporary file must discard it on refusal.
    """
    if expected_root is not None:
        manifest.tree.check_root(expected_root)
    report = RestoreReport()
    # one output buffer for every chunk: no allocation (and no fresh pages) per chunk
    out = np.empty((manifest.tree.chunk_size + 7) // 8, dtype=np.uint64)
    for chunk_index in range(manifest.tree.chunk_count):
        chunk = restore_chunk(manifest, chunk_index, source, report, out)
        if chunk is not None and not report.bad_chunks:
            write(chunk)
            report.size += len(chunk)
        if on_chunk:
            on_chunk(manifest.tree.chunk_size)
    if report.bad_chunks:
        raise RestoreRefused(report)
    return report
