"""The daily archive seal (SPHINCS+ through liboqs) of the ledger's latest checkpoint.

Like test_archive, these need the liboqs that infra/liboqs/build.sh builds and do not skip
without it. liboqs is the independent implementation here: the seal is made and checked
with its SPHINCS+, not with code of ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from pcvhub.config import Settings
from pcvhub.ledger.archive import (
    ARCHIVE_DIR,
    LATEST,
    ArchiveSeal,
    DailyArchive,
    seal_checkpoint,
    verify_archive_seal,
)
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.follow import LedgerFollower
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import (
    TransparencyLog,
    archive_public_key,
    load_archive_signer,
    load_keys,
    save_keys,
)
from pcvhub.ledger.note import LogKeys
from pcvhub.ledger.serve import TileServer
from pcvhub.log.verify import LogPosition, VerifiedRecord
from pcvhub.trust.archive import ArchiveSigner

pytestmark = pytest.mark.liboqs

SETTINGS = cast(Settings, None)  # never read: nothing here follows a broker
T0 = 1_800_000_000


@pytest.fixture(scope="module")
def keys() -> LogKeys:
    return LogKeys.generate("ledger.pcvhub.example/archive")


@pytest.fixture(scope="module")
def signer() -> ArchiveSigner:
    return ArchiveSigner.generate()


def record(offset: int) -> VerifiedRecord:
    return VerifiedRecord(LogPosition("events", 0, offset), b"k", cast(Any, None),
                          offset.to_bytes(32, "big"))


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


def test_the_first_checkpoint_of_a_day_is_sealed_and_the_rest_wait_a_day(
        tmp_path: Path, keys: LogKeys, signer: ArchiveSigner) -> None:
    clock = Clock()
    with TransparencyLog(tmp_path, keys) as log:
        archive = DailyArchive(log.tiles, signer, keys.ed25519_vkey, keys.ml_dsa_44_vkey,
                               every=86_400, clock=clock)
        follower = LedgerFollower(SETTINGS, log, every=3, seconds=3600, clock=clock,
                                  archive=archive)
        for offset in range(7):  # checkpoints at 3 and 6: only the first is sealed
            follower.on_record(record(offset))
            clock.now += 60
        folder = log.tiles / ARCHIVE_DIR
        assert sorted(p.name for p in folder.iterdir()) == ["3", LATEST]
        seal, sealed = verify_archive_seal((folder / LATEST).read_bytes(), signer.public_key,
                                           keys.ed25519_vkey, keys.ml_dsa_44_vkey)
        assert sealed.checkpoint.size == 3 and seal.sealed_at == T0 + 2 * 60
        clock.now = T0 + 86_400 + 2 * 60  # a day after that seal
        follower.flush()  # the checkpoint of 7
        assert sorted(p.name for p in folder.iterdir()) == ["3", "7", LATEST]
        clock.now += 2 * 86_400  # an unchanged tree stays covered by its seal
        assert follower.flush() is None and archive.due(log.latest) is False

        # a restart reads its own last seal back (and so does not seal again at once)
        again = DailyArchive(log.tiles, signer, keys.ed25519_vkey, keys.ml_dsa_44_vkey,
                             clock=clock)
        assert again.last_size == 7
        # ... and refuses one that was altered, naming the file
        data = bytearray((folder / LATEST).read_bytes())
        data[len(data) // 2] ^= 0x01
        (folder / LATEST).write_bytes(bytes(data))
        with pytest.raises(LedgerError, match=f"{ARCHIVE_DIR}/{LATEST}"):
            DailyArchive(log.tiles, signer, keys.ed25519_vkey, keys.ml_dsa_44_vkey)


def test_any_changed_byte_of_a_seal_fails_and_says_what(
        tmp_path: Path, keys: LogKeys, signer: ArchiveSigner) -> None:
    with TransparencyLog(tmp_path, keys) as log:
        for i in range(5):
            log.append(LedgerLeaf(bytes(32), "events", 0, i).encode())
        signed = log.checkpoint(T0)
    data = seal_checkpoint(signed, signer, T0 + 1).encode()
    seal, checkpoint = verify_archive_seal(data, signer.public_key, keys.ed25519_vkey,
                                           keys.ml_dsa_44_vkey)
    assert checkpoint == signed and ArchiveSeal.parse(data) == seal

    for at in range(0, len(data), 7):  # every 7th byte: header lines, signature and note
        changed = bytearray(data)
        changed[at] ^= 0x01
        with pytest.raises(LedgerError) as failed:
            verify_archive_seal(bytes(changed), signer.public_key, keys.ed25519_vkey,
                                keys.ml_dsa_44_vkey, where="seal")
        assert str(failed.value).startswith(("seal", "the checkpoint in seal")), at

    # sealed with another archive key; over another log's checkpoint
    other = ArchiveSigner.generate()
    with pytest.raises(LedgerError, match="not the log's"):
        verify_archive_seal(seal_checkpoint(signed, other, T0).encode(), signer.public_key,
                            keys.ed25519_vkey, keys.ml_dsa_44_vkey)
    stranger = LogKeys.generate("ledger.pcvhub.example/stranger")
    with TransparencyLog(tmp_path / "stranger", stranger) as log:
        theirs = log.checkpoint(T0)
    with pytest.raises(LedgerError, match="the checkpoint in"):
        verify_archive_seal(seal_checkpoint(theirs, signer, T0).encode(), signer.public_key,
                            keys.ed25519_vkey, keys.ml_dsa_44_vkey)


def test_the_archive_key_is_sealed_at_rest_beside_the_log_keys(
        tmp_path: Path, keys: LogKeys, signer: ArchiveSigner) -> None:
    path = tmp_path / "keys.json"
    save_keys(path, keys, b"correct horse", signer)
    raw = path.read_bytes()
    secret = signer.secret_key_to_seal()
    assert secret not in raw and secret.hex().encode() not in raw
    assert archive_public_key(path) == signer.public_key
    loaded = load_archive_signer(path, b"correct horse")
    assert loaded is not None and loaded.public_key == signer.public_key
    message = b"a sealed checkpoint"
    assert ArchiveSigner.verify(signer.public_key, message, loaded.sign(message))
    assert load_keys(path, b"correct horse").name == keys.name
    with pytest.raises(LedgerError, match="wrong passphrase"):
        load_archive_signer(path, b"wrong")
    # a log made before the archive seal has no archive key, and says so by None
    older = tmp_path / "older.json"
    save_keys(older, keys, b"correct horse")
    assert load_archive_signer(older, b"correct horse") is None
    assert "archive" not in json.loads(older.read_text())


def test_the_tile_server_answers_the_seals_and_nothing_beside_them(
        tmp_path: Path, keys: LogKeys, signer: ArchiveSigner) -> None:
    with TransparencyLog(tmp_path, keys) as log:
        log.append(LedgerLeaf(bytes(32), "events", 0, 0).encode())
        signed = log.checkpoint(T0)
        DailyArchive(log.tiles, signer, keys.ed25519_vkey, keys.ml_dsa_44_vkey,
                     clock=lambda: T0).seal(signed)
        (log.tiles / ARCHIVE_DIR / "notes.txt").write_text("not a seal")
        server = TileServer(log.tiles)
        server.start()
        try:
            latest = httpx.get(server.url + f"{ARCHIVE_DIR}/{LATEST}")
            assert latest.status_code == 200
            assert latest.content == (log.tiles / ARCHIVE_DIR / "1").read_bytes()
            assert "max-age=5" in latest.headers["cache-control"]
            assert "immutable" in httpx.get(server.url + f"{ARCHIVE_DIR}/1").headers[
                "cache-control"]
            for path in (f"{ARCHIVE_DIR}/notes.txt", f"{ARCHIVE_DIR}/../../keys.json",
                         f"{ARCHIVE_DIR}/01", f"{ARCHIVE_DIR}/2"):
                assert httpx.get(server.url + path).status_code == 404, path
        finally:
            server.shutdown()
            server.server_close()
