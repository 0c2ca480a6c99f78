"""The read-only tile server: spec paths and content types, nothing else of the folder."""

from __future__ import annotations

import httpx
import pytest

from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import TransparencyLog
from pcvhub.ledger.note import LogKeys
from pcvhub.ledger.serve import TileServer


@pytest.fixture()
def served(tmp_path):
    log = TransparencyLog(tmp_path / "log", LogKeys.generate("ledger.pcvhub.example/serve"))
    for i in range(300):
        log.append(LedgerLeaf(bytes(32), "events", 0, i).encode())
    log.checkpoint(1)
    (log.tiles / "secret").write_text("not a tile")
    server = TileServer(log.tiles)
    server.start()
    yield log, server.url
    server.shutdown()
    server.server_close()
    log.close()


def test_checkpoint_and_tiles_are_served_with_their_types(served):
    log, url = served
    checkpoint = httpx.get(url + "checkpoint")
    assert checkpoint.status_code == 200
    assert checkpoint.headers["content-type"] == "text/plain; charset=utf-8"
    assert checkpoint.content == (log.tiles / "checkpoint").read_bytes()
    tile = httpx.get(url + "tile/0/001.p/44")
    assert tile.headers["content-type"] == "application/octet-stream"
    assert "immutable" in tile.headers["cache-control"]
    assert tile.content == log.levels.hashes(0, 256, 44)
    assert httpx.get(url + "tile/entries/000").content == (
        log.tiles / "tile/entries/000").read_bytes()


def test_nothing_but_tile_paths_is_answered_and_nothing_is_written(served):
    _, url = served
    for path in ("secret", "tile/0/../secret", "tile/0/../../keys.json", "level/0",
                 "tile/0/002"):
        assert httpx.get(url + path).status_code == 404, path
    assert httpx.post(url + "checkpoint", content=b"x").status_code == 405


def test_only_loopback(tmp_path):
    with pytest.raises(LedgerError, match="loopback only"):
        TileServer(tmp_path, host="0.0.0.0")
