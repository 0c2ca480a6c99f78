"""The witness (c2sp.org/tlog-witness) and its cosignatures (c2sp.org/tlog-cosignature):
every answer of add-checkpoint, the split views it keeps, its state across a reopen."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from pcvhub.ledger.cosign import (
    WitnessKey,
    WitnessKeys,
    cosignature_v1_message,
    count_cosignatures,
    verify_cosignature,
)
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import TransparencyLog, load_keys, save_keys
from pcvhub.ledger.note import COSIGNATURE_V1_TYPE, LogKeys, SignedNote, VerifierKey
from pcvhub.ledger.witness import Submission, Witness, trust_log

ORIGIN = "hub.example/ledger"


@pytest.fixture(scope="module")
def log_keys() -> LogKeys:
    return LogKeys.generate(ORIGIN)


@pytest.fixture(scope="module")
def witness_keys() -> WitnessKeys:
    return WitnessKeys.generate("payer.example/witness")


def witness_key(keys: WitnessKeys) -> WitnessKey:
    return WitnessKey(keys.name, keys.ed25519_vkey, keys.ml_dsa_44_vkey)


def leaf(i: int, fork: str = "") -> bytes:
    return LedgerLeaf(hashlib.sha256(f"{fork}{i}".encode()).digest(), "events", 0, i).encode()


def grow(log: TransparencyLog, to: int, fork: str = "") -> None:
    while log.size < to:
        log.append(leaf(log.size, fork if log.size >= 3 else ""))
    log.checkpoint(1_800_000_000 + log.size)


def submit(log: TransparencyLog, old: int) -> bytes:
    assert log.latest is not None
    proof = log.consistency_proof(old).path if 0 < old < log.size else ()
    return Submission(old, proof, log.latest.note).encode()


@pytest.fixture
def witness(tmp_path: Path, log_keys: LogKeys, witness_keys: WitnessKeys):
    folder = tmp_path / "witness"
    folder.mkdir()
    trust_log(folder, str(log_keys.ed25519_vkey), str(log_keys.ml_dsa_44_vkey))
    w = Witness(folder, witness_keys, clock=lambda: 1_900_000_000)
    yield w
    w.close()


def test_cosignature_v1_line_is_the_spec_format(witness_keys: WitnessKeys, log_keys: LogKeys,
                                               tmp_path: Path):
    with TransparencyLog(tmp_path / "log", log_keys) as log:
        grow(log, 5)
        assert log.latest is not None
        lines = witness_keys.cosign(log.latest.checkpoint, 1679315147)
    ed_line = lines.decode().split("\n")[0]
    dash, name, b64 = ed_line.split(" ")
    assert (dash, name) == ("\u2014", witness_keys.name)
    raw = base64.b64decode(b64)
    public = witness_keys.ed25519.public_key().public_bytes_raw()
    # key id: SHA-256(name || "\n" || 0x04 || key)[:4]; then u64 timestamp; then Ed25519
    assert raw[:4] == hashlib.sha256(witness_keys.name.encode() + b"\n\x04" + public).digest()[:4]
    assert struct.unpack(">Q", raw[4:12])[0] == 1679315147
    message = b"cosignature/v1\ntime 1679315147\n" + log.latest.checkpoint.body()
    assert message == cosignature_v1_message(1679315147, log.latest.checkpoint.body())
    ed25519.Ed25519PublicKey.from_public_bytes(public).verify(raw[12:], message)
    assert witness_keys.ed25519_vkey.sig_type == COSIGNATURE_V1_TYPE
    assert str(VerifierKey.parse(str(witness_keys.ed25519_vkey))) == str(
        witness_keys.ed25519_vkey)


def test_cosignatures_verify_and_tampering_is_named(witness_keys: WitnessKeys,
                                                    log_keys: LogKeys, tmp_path: Path):
    with TransparencyLog(tmp_path / "log", log_keys) as log:
        grow(log, 7)
        assert log.latest is not None
        note = log.latest.note + witness_keys.cosign(log.latest.checkpoint, 1_900_000_000)
    key = witness_key(witness_keys)
    assert verify_cosignature(SignedNote.parse(note), key).timestamp == 1_900_000_000
    # another size in the body: both the log's and the witness's lines now fail
    forged = note.replace(b"\n7\n", b"\n8\n", 1)
    with pytest.raises(LedgerError, match="cosignature/v1 of payer.example/witness does not "
                                          "verify over size 8"):
        verify_cosignature(SignedNote.parse(forged), key)
    # the ML-DSA-44 line's timestamp changed (the Ed25519 one intact)
    lines = note.decode().split("\n")
    name, b64 = lines[-2].split(" ")[1:]
    raw = bytearray(base64.b64decode(b64))
    raw[11] ^= 1
    lines[-2] = f"\u2014 {name} {base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(LedgerError, match="ML-DSA-44 cosignature of payer.example/witness "
                                          "does not verify"):
        verify_cosignature(SignedNote.parse("\n".join(lines).encode()), key)
    count = count_cosignatures(log.latest.note, (key,), quorum=1)
    assert count.below_quorum and count.missing[0][0] == key.name


def test_witness_keys_round_trip_and_never_sign_as_a_log(witness_keys: WitnessKeys,
                                                         tmp_path: Path, log_keys: LogKeys):
    save_keys(tmp_path / "keys.json", witness_keys, b"pass")
    back = load_keys(tmp_path / "keys.json", b"pass", WitnessKeys)
    assert isinstance(back, WitnessKeys)
    assert str(back.ed25519_vkey) == str(witness_keys.ed25519_vkey)
    with TransparencyLog(tmp_path / "log", log_keys) as log:
        grow(log, 1)
        with pytest.raises(LedgerError, match="is a witness"):
            back.sign(log.latest.checkpoint, 1)


def test_add_checkpoint_answers_each_case(witness: Witness, log_keys: LogKeys,
                                          tmp_path: Path):
    with TransparencyLog(tmp_path / "log", log_keys) as log:
        grow(log, 10)
        first = submit(log, 0)
        assert witness.add_checkpoint(b"old 01\n\n" + first.split(b"\n\n", 1)[1]).status == 400
        assert witness.add_checkpoint(b"no blank line").status == 400
        assert witness.add_checkpoint(b"old 0\nnot-base64\n\n" + log.latest.note).status == 400
        assert witness.add_checkpoint(b"old 11\n\n" + log.latest.note).status == 400
        # a log it does not witness: 404; a forged log signature: 403
        with TransparencyLog(tmp_path / "other", LogKeys.generate("other.example/log")) as o:
            grow(o, 2)
            assert witness.add_checkpoint(submit(o, 0)).status == 404
        with TransparencyLog(tmp_path / "impostor", LogKeys.generate(ORIGIN)) as impostor:
            grow(impostor, 2)
            answer = witness.add_checkpoint(submit(impostor, 0))
            assert answer.status == 403 and b"no Ed25519 line of hub.example/ledger" in answer.body
        answer = witness.add_checkpoint(first)
        assert answer.status == 200
        note = SignedNote.parse(log.latest.note + answer.body)
        assert verify_cosignature(note, witness_key(witness.keys)).timestamp == 1_900_000_000
        # the log grows; asking from 0 again gets 409 and the witness's size
        grow(log, 300)
        stale = witness.add_checkpoint(submit(log, 0))
        assert (stale.status, stale.body, stale.content_type) == (409, b"10\n",
                                                                   "text/x.tlog.size")
        assert witness.add_checkpoint(submit(log, 10)).status == 200
        # from its own size to the same size the proof is empty
        same = Submission(300, log.consistency_proof(299, 300).path, log.latest.note)
        assert witness.add_checkpoint(same.encode()).status == 400
        # a wrong proof (a damaged path) is refused with 422
        grow(log, 301)
        bad = Submission(300, log.consistency_proof(299, 301).path, log.latest.note)
        answer = witness.add_checkpoint(bad.encode())
        assert answer.status == 422 and b"or a broken proof" in answer.body
        # the same checkpoint again is cosigned again (a retry after a lost answer)
        assert witness.add_checkpoint(submit(log, 300)).status == 200
        assert witness.add_checkpoint(submit(log, 301)).status == 200
    assert witness.latest[ORIGIN].checkpoint.size == 301


def test_a_fork_is_refused_and_both_checkpoints_kept(witness: Witness, log_keys: LogKeys,
                                                     tmp_path: Path):
    with TransparencyLog(tmp_path / "log", log_keys) as log, \
            TransparencyLog(tmp_path / "fork", log_keys) as fork:
        grow(log, 40)
        grow(fork, 40, fork="forked")  # same first 3 leaves, then other ones, same keys
        assert witness.add_checkpoint(submit(log, 0)).status == 200
        same_size = witness.add_checkpoint(submit(fork, 40))
        assert same_size.status == 409 and b"split view" in same_size.body
        grow(fork, 90, fork="forked")
        grown = witness.add_checkpoint(submit(fork, 40))
        assert grown.status == 422 and b"not a prefix" in grown.body
        grow(log, 90)
        assert witness.add_checkpoint(submit(log, 40)).status == 200
    evidence = witness.evidence()
    assert [e["reason"][:30] for e in evidence] and len(evidence) == 2
    for e in evidence:
        assert e["origin"] == ORIGIN
        assert e["cosigned"].split("\n")[1] == "40"
        assert e["shown"] != e["cosigned"]
    assert {e["shown"].split("\n")[1] for e in evidence} == {"40", "90"}
    on_disk = [json.loads(p.read_text()) for p in (witness.folder / "evidence").glob("*")]
    assert len(on_disk) == 2


def test_state_survives_reopen_and_one_process_per_folder(witness: Witness, log_keys: LogKeys,
                                                          witness_keys: WitnessKeys,
                                                          tmp_path: Path):
    with TransparencyLog(tmp_path / "log", log_keys) as log:
        grow(log, 25)
        assert witness.add_checkpoint(submit(log, 0)).status == 200
        with pytest.raises(LedgerError, match="another witness process holds"):
            Witness(witness.folder, witness_keys)
        witness.close()
        again = Witness(witness.folder, witness_keys)
        try:
            assert again.latest[ORIGIN].checkpoint.size == 25
            assert again.add_checkpoint(submit(log, 0)).body == b"25\n"
        finally:
            again.close()
        # a state file altered on disk is named on open, not trusted
        state = next((witness.folder / "state").iterdir())
        state.write_bytes(state.read_bytes().replace(b"\n25\n", b"\n26\n"))
        with pytest.raises(LedgerError, match="does not verify"):
            Witness(witness.folder, witness_keys)
