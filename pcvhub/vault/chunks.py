"""The chunk tree: an RFC 9162 Merkle tree whose leaves are a file's fixed-size chunks.

Its root is what a ``GenomeStored`` event carries (and what a person's card can hold):
with the list of leaf hashes, which travels beside the shares, it pins every chunk, so a
wrong byte is located to its chunk rather than only detected in the whole file. The same
tree over a vaccine design file names the chunk, and so the epitope, that was altered.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pcvhub.trust.merkle import leaf_hash, root_of

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024


def read_chunks(source: BinaryIO, chunk_size: int) -> Iterator[memoryview]:
    """The chunks of ``source``, read into one reused buffer (consume each before the next)."""
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    while True:
        filled = 0
        while filled < chunk_size:
            got = source.readinto(view[filled:])  # type: ignore[attr-defined]
            if not got:
                break
            filled += got
        if filled:
            yield view[:filled]
        if filled < chunk_size:
            return


@dataclass(frozen=True)
class ChunkTree:
    """Leaf hashes of every chunk, in order, and the chunking that produced them."""

    chunk_size: int
    size: int  # bytes in the whole file
    leaf_hashes: tuple[bytes, ...]

    @property
    def root(self) -> bytes:
        return root_of(self.leaf_hashes)

    @property
    def chunk_count(self) -> int:
        return len(self.leaf_hashes)

    def byte_range(self, chunk_index: int) -> tuple[int, int]:
        """[start, end) of the chunk in the file."""
        start = chunk_index * self.chunk_size
        return start, min(self.size, start + self.chunk_size)

    def verifies(self, chunk_index: int, chunk: bytes | memoryview) -> bool:
        return leaf_hash(chunk) == self.leaf_hashes[chunk_index]

    @classmethod
    def of_bytes(cls, data: bytes, chunk_size: int) -> ChunkTree:
        leaves = [leaf_hash(data[i:i + chunk_size]) for i in range(0, len(data), chunk_size)]
        return cls(chunk_size, len(data), tuple(leaves))

    @classmethod
    def of_stream(cls, source: BinaryIO, chunk_size: int) -> ChunkTree:
        size, leaves = 0, []
        for chunk in read_chunks(source, chunk_size):
            size += len(chunk)
            leaves.append(leaf_hash(chunk))
        return cls(chunk_size, size, tuple(leaves))

    def check_root(self, expected_root: bytes) -> None:
        """Refuse a leaf list that does not reproduce the root held elsewhere (event, card)."""
        if self.root != expected_root:
            raise ValueError(f"chunk tree root {self.root.hex()} is not the expected "
                             f"{expected_root.hex()}: the leaf list itself was altered")


@dataclass(frozen=True)
class ChangedChunk:
    chunk_index: int
    start: int  # byte offset in the file, inclusive
    end: int  # exclusive


def changed_chunks(tree: ChunkTree, data: bytes) -> list[ChangedChunk]:
    """Every chunk of ``data`` that does not match ``tree`` (a design file checked in place).

    A length change shows as the chunks from the first one that differs to the end.
    """
    found = []
    count = max(tree.chunk_count, (len(data) + tree.chunk_size - 1) // tree.chunk_size)
    for index in range(count):
        start = index * tree.chunk_size
        chunk = data[start:start + tree.chunk_size]
        if index >= tree.chunk_count or leaf_hash(chunk) != tree.leaf_hashes[index]:
            found.append(ChangedChunk(index, start, min(max(len(data), tree.size),
                                                        start + tree.chunk_size)))
    return found
