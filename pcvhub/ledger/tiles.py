"""C2SP tlog-tiles static files: hash tiles, entry bundles, the checkpoint; and their audit.

Layout under a prefix folder (c2sp.org/tlog-tiles)::

    checkpoint                     the signed note (pcvhub.ledger.note)
    tile/<L>/<N>[.p/<W>]           256 (or W) hashes of tree level 8 L, 32 bytes each
    tile/entries/<N>[.p/<W>]       the leaves, each as a big-endian u16 length || bytes

``<N>`` is written in 3-digit groups, all but the last prefixed with ``x``
(1234067 -> ``x001/x234/067``). A full tile never changes; a partial one exists for each
checkpointed size until its full tile is written, and is deleted then (the spec allows
it). ``audit_tiles`` is the offline check of such a folder: the checkpoint's two lines, the
root recomputed from the tiles, and every entry against its leaf hash.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.note import VerifiedCheckpoint, VerifierKey, verify_checkpoint
from pcvhub.trust import merkle

WIDTH = 256
TILE_HEIGHT = 8
HASH = 32
#: the request paths a tile server answers (anything else is refused before the disk)
TILE_PATH = re.compile(r"checkpoint|tile/(?:[0-9]|[1-5][0-9]|6[0-3]|entries)"
                       r"/(?:x[0-9]{3}/)*[0-9]{3}(?:\.p/(?:[1-9][0-9]?|1[0-9]{2}|2[0-4][0-9]|25[0-5]))?")


def index_path(n: int) -> str:
    """``<N>`` in 3-digit groups: 1234067 -> x001/x234/067."""
    digits = f"{n:03d}"
    digits = digits.rjust(-(-len(digits) // 3) * 3, "0")
    groups = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


def tile_path(level: int | str, n: int, width: int = WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]``; ``level`` "entries" for an entry bundle."""
    suffix = "" if width == WIDTH else f".p/{width}"
    return f"tile/{level}/{index_path(n)}{suffix}"


def tiles_for(size: int) -> list[tuple[int, int, int]]:
    """Every (level, index, width) tile a tree of ``size`` leaves has, partial ones last per
    level; level 0 also stands for the entry bundles."""
    found = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        count = size >> (TILE_HEIGHT * level)
        found += [(level, n, WIDTH) for n in range(count // WIDTH)]
        if count % WIDTH:
            found.append((level, count // WIDTH, count % WIDTH))
        level += 1
    return found


def write_file(path: Path, data: bytes) -> None:
    """Write whole or not at all: a reader (or a restart) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


@dataclass(frozen=True)
class TileSource:
    """What tiles are cut from: a level's hashes and the framed entries of a leaf range."""

    hashes: Callable[[int, int, int], bytes]
    entries: Callable[[int, int], bytes]


def write_tiles(prefix: Path, size: int, source: TileSource) -> int:
    """Write the tiles of a tree of ``size`` leaves that are not there yet; return how many.

    Full tiles are written once; the partial ones of this size replace nothing (their
    path names their width), and a partial tile whose full tile now exists is deleted.
    """
    written = 0
    for level, n, width in tiles_for(size):
        tile = prefix / tile_path(level, n, width)
        bundle = prefix / tile_path("entries", n, width)
        if width == WIDTH and tile.exists() and (level or bundle.exists()):
            continue
        write_file(tile, source.hashes(TILE_HEIGHT * level, n * WIDTH, width))
        written += 1
        if level == 0:
            write_file(bundle, source.entries(n * WIDTH, n * WIDTH + width))
            written += 1
        if width == WIDTH:
            for kind in (level, "entries") if level == 0 else (level,):
                partials = prefix / tile_path(kind, n, 1)
                for stale in partials.parent.glob("*"):
                    stale.unlink()
                if partials.parent.exists():
                    partials.parent.rmdir()
    return written


def frame(entry: bytes) -> bytes:
    """One entry of a bundle: big-endian u16 length, then the bytes."""
    if len(entry) > 0xFFFF:
        raise LedgerError(f"an entry of {len(entry)} bytes does not fit an entry bundle")
    return struct.pack(">H", len(entry)) + entry


def unframe(bundle: bytes, where: str) -> list[bytes]:
    entries: list[bytes] = []
    at = 0
    while at < len(bundle):
        if at + 2 > len(bundle):
            raise LedgerError(f"{where}: a length prefix is cut short at byte {at}")
        (length,) = struct.unpack_from(">H", bundle, at)
        if at + 2 + length > len(bundle):
            raise LedgerError(f"{where}: entry {len(entries)} at byte {at} declares {length} "
                              f"bytes, {len(bundle) - at - 2} remain")
        entries.append(bundle[at + 2:at + 2 + length])
        at += 2 + length
    return entries


# -- the offline audit of a tile folder ----------------------------------------------------

@dataclass(frozen=True)
class TileAudit:
    """What ``audit_tiles`` established: the verified checkpoint and what it read."""

    checkpoint: VerifiedCheckpoint
    tiles_read: int
    entries_checked: int


def _read(prefix: Path, rel: str, expect: int | None = None) -> bytes:
    path = prefix / rel
    if not path.is_file():
        raise LedgerError(f"{rel} is missing from {prefix}: the checkpoint needs it")
    data = path.read_bytes()
    if expect is not None and len(data) != expect:
        raise LedgerError(f"{rel} is {len(data)} bytes, a tile of its width is {expect}")
    return data


def audit_tiles(prefix: Path, ed25519_key: VerifierKey, ml_dsa_44_key: VerifierKey,
                entries: bool = True,
                on_entry: Callable[[int, bytes], None] | None = None) -> TileAudit:
    """Verify a tile folder offline; raise ``LedgerError`` naming the file that fails.
    ``on_entry(index, entry)`` sees each entry once it is checked (with ``entries``).

    1. the checkpoint's Ed25519 and ML-DSA-44 lines (``verify_checkpoint``);
    2. each full tile at level L+1 holds the subtree roots of the level-L tiles below it,
       and the root recomputed from the tiles equals the checkpoint's;
    3. (``entries``) each entry of each bundle hashes to its hash in the level-0 tile.
    """
    verified = verify_checkpoint(_read(prefix, "checkpoint"), ed25519_key, ml_dsa_44_key,
                                 where=f"{prefix}/checkpoint")
    size = verified.checkpoint.size
    tiles = tiles_for(size)
    content: dict[tuple[int, int], list[bytes]] = {}
    for level, n, width in tiles:
        rel = tile_path(level, n, width)
        data = _read(prefix, rel, width * HASH)
        content[(level, n)] = [data[i:i + HASH] for i in range(0, len(data), HASH)]
    for level, n, width in tiles:
        below = [content.get((level - 1, n * WIDTH + i)) for i in range(width)] if level else []
        for i, hashes in enumerate(below):
            if hashes is None or len(hashes) != WIDTH:
                raise LedgerError(f"{tile_path(level, n, width)} hash {i} stands over an "
                                  "incomplete tile below it")
            if merkle.root_of(hashes) != content[(level, n)][i]:
                raise LedgerError(
                    f"{tile_path(level - 1, n * WIDTH + i)} does not hash to entry {i} of "
                    f"{tile_path(level, n, width)}: one of the two tiles was altered")
    if size:
        stored = {(8 * level, n * WIDTH + i): h for (level, n), hashes in content.items()
                  for i, h in enumerate(hashes)}
        root = merkle.compact_root(lambda lvl, idx: _subtree(stored, lvl, idx), 0, size)
    else:
        root = merkle.root_of([])
    if root != verified.checkpoint.root:
        raise LedgerError(f"the tiles of {prefix} give root {root.hex()[:16]}... for {size} "
                          f"leaves, the checkpoint says {verified.checkpoint.root.hex()[:16]}...: "
                          "a tile was altered or belongs to another tree")
    checked = 0
    if entries:
        for level, n, width in tiles:
            if level:
                continue
            rel = tile_path("entries", n, width)
            bundle = unframe(_read(prefix, rel), rel)
            if len(bundle) != width:
                raise LedgerError(f"{rel} holds {len(bundle)} entries, its tile {width}")
            for i, entry in enumerate(bundle):
                if merkle.leaf_hash(entry) != content[(0, n)][i]:
                    raise LedgerError(f"{rel} entry {i} (leaf {n * WIDTH + i}) does not hash "
                                      f"to its leaf hash in {tile_path(0, n, width)}: the "
                                      "entry or the tile was altered")
                if on_entry is not None:
                    on_entry(n * WIDTH + i, entry)
                checked += 1
    return TileAudit(verified, len(tiles) * (2 if entries else 1), checked)


def _subtree(stored: dict[tuple[int, int], bytes], level: int, index: int) -> bytes:
    """A complete subtree's hash from tile hashes: stored at levels 0, 8, 16..., rebuilt
    from the nearest stored level below for the levels between."""
    base = level - level % TILE_HEIGHT
    span = 1 << (level - base)
    hashes = [stored.get((base, index * span + i)) for i in range(span)]
    if any(h is None for h in hashes):
        raise LedgerError(f"the tiles hold no hashes for subtree {index} of level {level}")
    return merkle.root_of(hashes)  # type: ignore[arg-type]
