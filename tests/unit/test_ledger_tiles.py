"""C2SP tlog-tiles files the ledger writes, and the offline audit that names a tampered one."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import TransparencyLog
from pcvhub.ledger.note import LogKeys
from pcvhub.ledger.tiles import TILE_PATH, audit_tiles, index_path, tile_path, tiles_for

ORIGIN = "ledger.pcvhub.example/tiles"


@pytest.fixture(scope="module")
def keys() -> LogKeys:
    return LogKeys.generate(ORIGIN)


def build(path: Path, keys: LogKeys, sizes: list[int]) -> TransparencyLog:
    log = TransparencyLog(path, keys)
    for size in sizes:
        while log.size < size:
            i = log.size
            log.append(LedgerLeaf(i.to_bytes(32, "big"), "alerts", i % 6, i).encode())
        log.checkpoint(timestamp=size)
    return log


def audit(log: TransparencyLog, keys: LogKeys):
    return audit_tiles(log.tiles, keys.ed25519_vkey, keys.ml_dsa_44_vkey)


def test_tile_paths_follow_the_spec():
    assert index_path(1234067) == "x001/x234/067"
    assert index_path(5) == "005" and index_path(1000) == "x001/000"
    assert tile_path(0, 1234067, 12) == "tile/0/x001/x234/067.p/12"
    assert tile_path("entries", 3) == "tile/entries/003"
    # the spec's example: a tree of 70,000 leaves
    kinds = Counter((level, width == 256) for level, _, width in tiles_for(70_000))
    assert kinds == {(0, True): 273, (0, False): 1, (1, True): 1, (1, False): 1, (2, False): 1}
    assert [w for lvl, _, w in tiles_for(70_000) if w != 256] == [112, 17, 1]
    assert tiles_for(256) == [(0, 0, 256), (1, 0, 1)]
    for path in ("checkpoint", "tile/0/x001/x234/067.p/12", "tile/entries/003", "tile/63/000"):
        assert TILE_PATH.fullmatch(path)
    for path in ("tile/64/000", "tile/0/1234", "tile/0/000.p/256", "tile/0/../keys.json",
                 "tile/0/000.p/0"):
        assert not TILE_PATH.fullmatch(path)


def test_the_tiles_of_each_checkpoint_audit_and_partials_give_way(tmp_path, keys):
    with build(tmp_path / "log", keys, [5, 255, 256, 600]) as log:
        result = audit(log, keys)
        assert result.checkpoint.checkpoint.size == 600 and result.entries_checked == 600
        assert (log.tiles / "tile/0/001").is_file() and (log.tiles / "tile/0/002.p/88").is_file()
        assert (log.tiles / "tile/1/000.p/2").is_file()
        assert not (log.tiles / "tile/0/000.p").exists()  # its full tile replaced it
        assert (log.tiles / "tile/entries/002.p/88").is_file()


def test_a_flipped_byte_in_a_hash_tile_is_named(tmp_path, keys):
    with build(tmp_path / "log", keys, [600]) as log:
        tile = log.tiles / "tile/0/001"
        data = bytearray(tile.read_bytes())
        data[100] ^= 1
        tile.write_bytes(bytes(data))
        with pytest.raises(LedgerError, match=r"tile/0/001 does not hash to entry 1 of "
                                              r"tile/1/000\.p/2"):
            audit(log, keys)


def test_a_flipped_byte_in_the_top_tile_or_an_entry_is_named(tmp_path, keys):
    with build(tmp_path / "log", keys, [300]) as log:
        top = log.tiles / "tile/0/001.p/44"
        data = bytearray(top.read_bytes())
        data[5] ^= 1
        top.write_bytes(bytes(data))
        with pytest.raises(LedgerError, match="the tiles of .* give root .* checkpoint says"):
            audit(log, keys)
        data[5] ^= 1
        top.write_bytes(bytes(data))
        bundle = log.tiles / "tile/entries/000"
        data = bytearray(bundle.read_bytes())
        data[2 + 22 + 31] ^= 1  # the last byte of leaf 0's chain digest
        bundle.write_bytes(bytes(data))
        with pytest.raises(LedgerError, match=r"tile/entries/000 entry 0 \(leaf 0\) does not "
                                              "hash"):
            audit(log, keys)


def test_tiles_of_another_tree_under_a_genuine_checkpoint_are_caught(tmp_path, keys):
    with build(tmp_path / "a", keys, [40]) as a, build(tmp_path / "b", keys, [39, 40]) as b:
        assert a.latest.checkpoint.root == b.latest.checkpoint.root  # same leaves, same root
        other = TransparencyLog(tmp_path / "c", keys)
        for i in range(40):
            other.append(LedgerLeaf(bytes(32), "events", 0, i).encode())
        other.checkpoint(1)
        shutil.copy(other.tiles / "tile/0/000.p/40", a.tiles / "tile/0/000.p/40")
        with pytest.raises(LedgerError, match="give root"):
            audit(a, keys)
        other.close()


def test_a_forged_checkpoint_line_stops_the_audit(tmp_path, keys):
    with build(tmp_path / "log", keys, [10]) as log:
        path = log.tiles / "checkpoint"
        path.write_bytes(path.read_bytes().replace(b"\n10\n", b"\n11\n"))
        with pytest.raises(LedgerError, match="line 5: the Ed25519 signature"):
            audit(log, keys)


def test_a_missing_tile_is_named(tmp_path, keys):
    with build(tmp_path / "log", keys, [20]) as log:
        (log.tiles / "tile/entries/000.p/20").unlink()
        with pytest.raises(LedgerError, match=r"tile/entries/000\.p/20 is missing"):
            audit(log, keys)
