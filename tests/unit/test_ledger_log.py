"""The transparency log on disk: append, checkpoint, prove, resume after a kill, and what
it says when its files were altered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import LogSnapshot, TransparencyLog, load_keys, save_keys
from pcvhub.ledger.note import LogKeys
from pcvhub.ledger.proofs import (
    ConsistencyProof,
    InclusionProof,
    verify_consistency,
    verify_inclusion,
)
from pcvhub.trust import merkle

ORIGIN = "ledger.pcvhub.example/test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keys() -> LogKeys:
    return LogKeys.generate(ORIGIN)


def leaf(i: int) -> bytes:
    return LedgerLeaf(bytes([i % 256]) * 32, "events", i % 6, i).encode()


def filled(path: Path, keys: LogKeys, n: int) -> TransparencyLog:
    log = TransparencyLog(path, keys)
    for i in range(n):
        assert log.append(leaf(i)) == i
    return log


def test_leaf_round_trips_and_binds_every_field():
    one = LedgerLeaf(b"\x07" * 32, "rejected", 3, 2**40 + 5, seal=b"seal-v1:...")
    data = one.encode()
    assert LedgerLeaf.decode(data) == one
    assert data.startswith(b"pcvhub/ledger-leaf/v1\x00" + b"\x07" * 32 + b"\x08rejected")
    for changed in (LedgerLeaf(b"\x08" * 32, "rejected", 3, 2**40 + 5, b"seal-v1:..."),
                    LedgerLeaf(b"\x07" * 32, "alerts", 3, 2**40 + 5, b"seal-v1:..."),
                    LedgerLeaf(b"\x07" * 32, "rejected", 4, 2**40 + 5, b"seal-v1:..."),
                    LedgerLeaf(b"\x07" * 32, "rejected", 3, 2**40 + 6, b"seal-v1:..."),
                    LedgerLeaf(b"\x07" * 32, "rejected", 3, 2**40 + 5)):
        assert changed.encode() != data
    with pytest.raises(LedgerError, match="leaf 9 declares a 11-byte seal"):
        LedgerLeaf.decode(data[:-1], "leaf 9")
    with pytest.raises(LedgerError, match="not a version-1"):
        LedgerLeaf.decode(b"pcvhub/ledger-leaf/v2\x00" + data[22:])


def test_roots_and_proofs_equal_the_rfc_definition(tmp_path, keys):
    n = 300  # more than one full tile
    hashes = [merkle.leaf_hash(leaf(i)) for i in range(n)]
    with filled(tmp_path / "log", keys, n) as log:
        for size in (1, 2, 3, 7, 8, 255, 256, 257, 300):
            root = merkle.root_of(hashes[:size])
            assert log.levels.root(size) == root
            for index in {0, size // 2, size - 1}:
                proof = log.inclusion_proof(index, size)
                assert list(proof.path) == merkle.inclusion_path(hashes[:size], index)
                verify_inclusion(leaf(index), proof, root)
        for old, new in ((1, 300), (7, 8), (100, 257), (256, 300), (299, 300)):
            proof = log.consistency_proof(old, new)
            verify_consistency(proof, merkle.root_of(hashes[:old]), merkle.root_of(hashes[:new]))


def test_tampered_proofs_are_refused_with_a_reason(tmp_path, keys):
    with filled(tmp_path / "log", keys, 20) as log:
        root, old_root = log.levels.root(), log.levels.root(11)
        proof = log.inclusion_proof(5)
        flipped = (bytes([proof.path[0][0] ^ 1]) + proof.path[0][1:], *proof.path[1:])
        with pytest.raises(LedgerError, match="leaf 5 in 20 leads to root"):
            verify_inclusion(leaf(5), InclusionProof(5, 20, flipped), root)
        with pytest.raises(LedgerError, match="leaf 5 in 20 leads to root"):
            verify_inclusion(leaf(6), proof, root)
        with pytest.raises(LedgerError, match="cannot belong"):
            verify_inclusion(leaf(5), InclusionProof(5, 20, proof.path[:-1]), root)
        consistency = log.consistency_proof(11)
        with pytest.raises(LedgerError, match="new root"):
            verify_consistency(consistency, old_root, log.levels.root(19))
        with pytest.raises(LedgerError, match="split view"):
            verify_consistency(ConsistencyProof(20, 20, ()), root, old_root)
        with pytest.raises(LedgerError, match="cannot be a proof"):
            verify_consistency(ConsistencyProof(11, 20, consistency.path[:-1]), old_root, root)


def test_resume_cuts_what_no_checkpoint_covers_and_verifies_the_rest(tmp_path, keys):
    with filled(tmp_path / "log", keys, 40) as log:
        signed = log.checkpoint(timestamp=1000)
        for i in range(40, 55):
            log.append(leaf(i))
    with TransparencyLog(tmp_path / "log", keys) as log:
        assert log.size == 40 and log.latest == signed
        assert log.levels.root() == signed.checkpoint.root
        assert log.append(leaf(40)) == 40
        assert log.checkpoint(1001).checkpoint.size == 41


def test_an_altered_entry_or_hash_is_named_on_resume(tmp_path, keys):
    with filled(tmp_path / "log", keys, 30) as log:
        log.checkpoint(1)
    entries = tmp_path / "log" / "entries"
    data = bytearray(entries.read_bytes())
    start = int.from_bytes((tmp_path / "log" / "entries.idx").read_bytes()[8 * 15:8 * 16], "big")
    at = start + 2 + 22 + 5  # inside leaf 15's chain digest
    data[at] ^= 1
    entries.write_bytes(bytes(data))
    with pytest.raises(LedgerError, match=r"leaf 15 of .*entries does not hash"):
        TransparencyLog(tmp_path / "log", keys)
    data[at] ^= 1
    data[start] ^= 0x40  # a length prefix: the framing itself breaks
    entries.write_bytes(bytes(data))
    with pytest.raises(LedgerError, match=r"entry 15 at byte \d+ declares"):
        TransparencyLog(tmp_path / "log", keys)
    data[start] ^= 0x40
    entries.write_bytes(bytes(data))
    level1 = tmp_path / "log" / "level" / "1"
    hashes = bytearray(level1.read_bytes())
    hashes[32 * 3] ^= 1
    level1.write_bytes(bytes(hashes))
    with pytest.raises(LedgerError, match="level/1 hash 3 is not the hash of its two children"):
        TransparencyLog(tmp_path / "log", keys)


def test_lost_leaves_or_a_foreign_checkpoint_are_refused(tmp_path, keys):
    with filled(tmp_path / "log", keys, 30) as log:
        log.checkpoint(1)
    os.truncate(tmp_path / "log" / "entries.idx", 8 * 20)
    with pytest.raises(LedgerError, match="covers 30 leaves but .*holds 20"):
        TransparencyLog(tmp_path / "log", keys)
    with filled(tmp_path / "other", keys, 30) as log:
        log.checkpoint(1)
    with pytest.raises(LedgerError, match="Ed25519 line"):
        TransparencyLog(tmp_path / "other", LogKeys.generate(ORIGIN))


def test_an_empty_log_has_no_entries_and_the_empty_root(tmp_path, keys):
    with TransparencyLog(tmp_path / "log", keys) as log:
        assert list(log.entries(0, 0)) == []
        assert log.checkpoint(1).checkpoint.root == merkle.root_of([])
        with pytest.raises(LedgerError, match="no leaves"):
            list(log.entries(0, 1))


def test_the_clock_never_goes_back(tmp_path, keys):
    with filled(tmp_path / "log", keys, 3) as log:
        log.checkpoint(50)
        with pytest.raises(LedgerError, match="clock went back"):
            log.checkpoint(49)


def test_keys_are_stored_encrypted(tmp_path, keys):
    save_keys(tmp_path / "keys.json", keys, b"correct horse")
    assert keys.seeds()[0].hex() not in (tmp_path / "keys.json").read_text()
    again = load_keys(tmp_path / "keys.json", b"correct horse")
    assert again.seeds() == keys.seeds() and again.name == ORIGIN
    with pytest.raises(LedgerError, match="wrong passphrase"):
        load_keys(tmp_path / "keys.json", b"wrong")


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pcvhub.ledger.log import TransparencyLog, load_keys
    from pcvhub.ledger.leaf import LedgerLeaf
    log = TransparencyLog(Path(sys.argv[1]), load_keys(Path(sys.argv[2]), b"pw"))
    i = log.size
    while True:
        log.append(LedgerLeaf(bytes([i % 256]) * 32, "events", 0, i).encode())
        i += 1
        if i % 50 == 0:
            log.checkpoint(int(time.time()))
            print(i, flush=True)
""")


def test_sigkill_mid_append_resumes_from_the_last_checkpoint(tmp_path, keys):
    save_keys(tmp_path / "keys.json", keys, b"pw")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sizes = []
    for _ in range(2):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "log"),
                                   str(tmp_path / "keys.json")], stdout=subprocess.PIPE,
                                  text=True, env=env)
        assert writer.stdout is not None
        lines = [writer.stdout.readline() for _ in range(3)]  # three checkpoints at least
        time.sleep(0.05)  # and some appends past the last one
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        sizes.append(int(lines[-1]))
        with TransparencyLog(tmp_path / "log", keys) as log:
            assert log.size >= sizes[-1] and log.size % 50 == 0
            assert log.levels.root() == log.latest.checkpoint.root
            assert [LedgerLeaf.decode(e).offset for e in log.entries(0, log.size)] == list(
                range(log.size))
    assert sizes[1] > sizes[0]


def test_a_snapshot_reads_only_what_the_checkpoint_signed_beside_a_running_writer(
        tmp_path: Path, keys):
    with filled(tmp_path, keys, 37) as log:
        signed = log.checkpoint(1_800_000_000)
        for i in range(37, 50):  # appended, not signed yet
            log.append(leaf(i))
        with LogSnapshot(tmp_path, keys.ed25519_vkey, keys.ml_dsa_44_vkey) as snapshot:
            assert snapshot.size == 37 and snapshot.latest.note == signed.note
            assert list(snapshot.entries(0, 37)) == [leaf(i) for i in range(37)]
            verify_inclusion(leaf(36), snapshot.inclusion_proof(36), signed.checkpoint.root)
            with pytest.raises(LedgerError, match="no leaf 40"):
                snapshot.entry(40)
        assert log.size == 50  # the writer's unsigned leaves are untouched
    other = LogKeys.generate(ORIGIN)
    with pytest.raises(LedgerError, match="carries no Ed25519 line"):
        LogSnapshot(tmp_path, other.ed25519_vkey, other.ml_dsa_44_vkey)
