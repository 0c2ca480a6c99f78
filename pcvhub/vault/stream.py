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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

import numpy as np

from pcvhub.trust.merkle import leaf_hash
from pcvhub.vault import shamir, xorshare
from pcvhub.vault.chunks import DEFAULT_CHUNK_SIZE, ChunkTree, read_chunks
from pcvhub.vault.randomness import OsRandomness, Randomness
from pcvhub.vault.shamir import ShamirSplitter, interpolate, share_sets

#: sink(share_index, chunk_index, share bytes); the bytes are only valid during the call
ShareSink = Callable[[int, int, memoryview], None]
#: source(share_index, chunk_index) -> the share, or None when that site cannot provide it;
#: the bytes must stay valid until the source has been asked for the chunk after next
#: (restore checks one chunk while it rebuilds the next)
ShareSource = Callable[[int, int], "bytes | memoryview | None"]


class Splitter(Protocol):
    def split(self, chunk: bytes | memoryview) -> list[memoryview]: ...


@dataclass(frozen=True)
class Scheme:
    """One threshold scheme as split and restore use it (both over whole chunks)."""

    splitter: Callable[[int, int, Randomness, int], Splitter]  # (k, n, randomness, chunk size)
    share_length: Callable[[int, int], int]  # (chunk length, n)
    #: (k, n, exactly k shares, chunk length, out) -> the chunk, not yet verified, then the
    #: scheme's padding up to the share length (zero unless a share was altered there)
    recover: Callable[[int, int, dict[int, bytes | memoryview], int, np.ndarray | None],
                      memoryview]
    #: (k, n, k good shares, x, chunk length) -> share x recomputed, or None if they do not
    #: fix it (then a share outside the good set is judged by swapping it into the set)
    share_at: Callable[[int, int, dict[int, bytes | memoryview], int, int], memoryview | None]


#: scheme name, as written into the manifest and the GenomeStored event -> the scheme
SCHEMES: dict[str, Scheme] = {
    shamir.SCHEME: Scheme(
        ShamirSplitter, lambda length, n: length,
        lambda k, n, shares, length, out: interpolate(shares, out=out),
        lambda k, n, good, x, length: interpolate(good, at=x)),
    xorshare.SCHEME: Scheme(xorshare.XorSplitter, xorshare.share_length, xorshare.recover,
                            xorshare.share_at),
}


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
                 on_chunk: Callable[[int], None] | None = None,
                 scheme: str = shamir.SCHEME) -> Manifest:
    """Split ``source`` into k-of-n shares chunk by chunk; the manifest carries the tree.

    ``scheme``: a key of :data:`SCHEMES` (Shamir over GF(2^8), or the XOR-only scheme)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown sharing scheme {scheme!r}; known: {sorted(SCHEMES)}")
    randomness = randomness or OsRandomness()
    splitter = SCHEMES[scheme].splitter(k, n, randomness, chunk_size)
    leaves: list[bytes] = []
    size = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vault-tree") as hasher:
        for chunk_index, chunk in enumerate(read_chunks(source, chunk_size)):
            # the tree hash runs on another thread while this one splits the same read-only
            # buffer (hashlib and the kernels release the GIL): SHA-256 alone costs more
            # than the rest of a DRBG split, so this is what takes the split past 1 GB/s
            leaf = hasher.submit(leaf_hash, chunk)
            size += len(chunk)
            for share_index, share in enumerate(splitter.split(chunk), start=1):
                sink(share_index, chunk_index, share)
            leaves.append(leaf.result())  # before read_chunks reuses the buffer
            if on_chunk:
                on_chunk(len(chunk))
    return Manifest(ChunkTree(chunk_size, size, tuple(leaves)), k, n, scheme,
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


class _ChunkShares:
    """The shares of one chunk fetched so far; each one that cannot be used is reported."""

    def __init__(self, manifest: Manifest, chunk_index: int, source: ShareSource,
                 report: RestoreReport) -> None:
        self.manifest, self.chunk_index, self.source, self.report = (
            manifest, chunk_index, source, report)
        self.scheme = SCHEMES[manifest.scheme]  # checked by restore_stream
        self.expected = manifest.tree.leaf_hashes[chunk_index]
        start, end = manifest.tree.byte_range(chunk_index)
        self.chunk_length = end - start
        self.length = self.scheme.share_length(self.chunk_length, manifest.n)
        self.fetched: dict[int, bytes | memoryview] = {}
        self.failed: set[int] = set()  # reported once, not asked again
        self.points = list(range(1, manifest.n + 1))

    def fetch(self, x: int) -> bool:
        if x in self.fetched:
            return True
        if x in self.failed:
            return False
        self.failed.add(x)  # until it arrives whole
        try:
            share = self.source(x, self.chunk_index)
        except ShareTampered:  # e.g. its seal's tag failed: every byte is suspect
            self.report.bad_shares.append(BadShare(x, self.chunk_index, 0, self.length))
            return False
        if share is None:
            self.report.missing.append((x, self.chunk_index))
            return False
        if len(share) != self.length:
            self.report.bad_shares.append(BadShare(x, self.chunk_index, 0,
                                                   max(len(share), self.length)))
            return False
        self.failed.discard(x)
        self.fetched[x] = share
        return True

    def first_candidate(self, out: np.ndarray | None) -> memoryview | None:
        """The chunk from the first k shares that can be fetched (not yet verified)."""
        available: list[int] = []
        for x in self.points:
            if len(available) == self.manifest.k:
                break
            if self.fetch(x):
                available.append(x)
        if len(available) < self.manifest.k:
            return None
        return self._recover(available, out)

    def _recover(self, points: list[int] | tuple[int, ...],
                 out: np.ndarray | None = None) -> memoryview | None:
        """The chunk from these shares, not yet verified; None if the padding is not zero."""
        rebuilt = self.scheme.recover(self.manifest.k, self.manifest.n,
                                      {x: self.fetched[x] for x in points}, self.chunk_length,
                                      out)
        if any(rebuilt[self.chunk_length:]):
            return None
        return rebuilt[:self.chunk_length]

    def search(self) -> memoryview | None:
        """Every share, every k-subset, until one reproduces the leaf hash; the shares
        outside that set are recomputed from it and compared, so a bad one is named."""
        available = [x for x in self.points if self.fetch(x)]
        k, n = self.manifest.k, self.manifest.n
        for subset in share_sets(available, k):
            chunk = self._recover(subset)
            if chunk is None or leaf_hash(chunk) != self.expected:
                continue
            good = {x: self.fetched[x] for x in subset}
            for other in available:
                if other in good:
                    continue
                recomputed = self.scheme.share_at(k, n, good, other, self.chunk_length)
                if recomputed is not None:
                    differs = _differing_range(recomputed, self.fetched[other])
                else:  # swapped into the good set, does it still reproduce the chunk?
                    swapped = self._recover((*subset[1:], other))
                    ok = swapped is not None and leaf_hash(swapped) == self.expected
                    differs = None if ok else (0, self.length)  # only the whole share
                if differs:
                    self.report.bad_shares.append(BadShare(other, self.chunk_index, *differs))
            return chunk
        self.report.bad_chunks.append(self.chunk_index)
        return None


#: a chunk rebuilt from its first k shares, and its leaf hash being computed
_Pending = tuple[_ChunkShares, memoryview | None, "Future[bytes] | None"]


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
    # two output buffers, reused: chunk i is hashed on another thread (hashlib releases the
    # GIL) while chunk i + 1 is rebuilt into the other buffer; no allocation per chunk
    if manifest.scheme not in SCHEMES:
        raise ValueError(f"manifest names unknown sharing scheme {manifest.scheme!r}; "
                         f"known: {sorted(SCHEMES)}")
    # the XOR scheme rebuilds whole pieces: up to a share's length, not only the chunk's
    chunk_size = manifest.tree.chunk_size
    words = (max(chunk_size, SCHEMES[manifest.scheme].share_length(chunk_size, manifest.n))
             + 7) // 8
    outs = [np.empty(words, dtype=np.uint64), np.empty(words, dtype=np.uint64)]
    def finish(pending: _Pending) -> None:
        shares, candidate, leaf = pending
        chunk = candidate if leaf is not None and leaf.result() == shares.expected else None
        if chunk is None:  # the first k shares did not verify: try every other set
            chunk = shares.search()
        if chunk is not None and not report.bad_chunks:
            write(chunk)
            report.size += len(chunk)
        if on_chunk:
            on_chunk(manifest.tree.chunk_size)

    previous: _Pending | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vault-tree") as hasher:
        for chunk_index in range(manifest.tree.chunk_count):
            shares = _ChunkShares(manifest, chunk_index, source, report)
            candidate = shares.first_candidate(outs[chunk_index % 2])
            leaf = None if candidate is None else hasher.submit(leaf_hash, candidate)
            if previous is not None:
                finish(previous)
            previous = (shares, candidate, leaf)
        if previous is not None:
            finish(previous)
    if report.bad_chunks:
        raise RestoreRefused(report)
    return report
