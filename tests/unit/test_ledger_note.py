"""Checkpoints as C2SP signed notes: the spec's own example, both lines, and forgeries."""

from __future__ import annotations

import base64
import struct

import pytest

from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.note import (
    ML_DSA_44_SIGNATURE_SIZE,
    Checkpoint,
    LogKeys,
    SignedNote,
    VerifierKey,
    cosigned_message,
    key_id,
    verify_checkpoint,
)

# c2sp.org/signed-note, "Verifier keys" example: this vkey verifies this note.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = ("This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnag"
             "v1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n").encode()
ORIGIN = "ledger.pcvhub.example/test"
ROOT = bytes(range(32))


@pytest.fixture(scope="module")
def keys() -> LogKeys:
    return LogKeys.generate(ORIGIN)


def test_the_spec_example_note_verifies_and_a_changed_text_does_not():
    key = VerifierKey.parse(SPEC_VKEY)
    assert str(key) == SPEC_VKEY
    assert SignedNote.parse(SPEC_NOTE).verify_ed25519(key).line == 3
    altered = SPEC_NOTE.replace(b"example message", b"exemple message")
    with pytest.raises(LedgerError, match="line 3: the Ed25519 signature of example.com/foo"):
        SignedNote.parse(altered).verify_ed25519(key)


def test_a_checkpoint_has_the_tlog_checkpoint_body_and_both_lines(keys):
    note = keys.sign(Checkpoint(ORIGIN, 7, ROOT), timestamp=1_767_225_600)
    body, _, sigs = note.decode().partition("\n\n")
    assert body == f"{ORIGIN}\n7\n{base64.b64encode(ROOT).decode()}"
    ed_line, pq_line = sigs.splitlines()
    ed_sig = base64.b64decode(ed_line.split(" ")[2])
    pq_sig = base64.b64decode(pq_line.split(" ")[2])
    pub_ed = keys.ed25519.public_key().public_bytes_raw()
    pub_pq = keys.ml_dsa_44.public_key().public_bytes_raw()
    assert ed_sig[:4] == key_id(ORIGIN, 0x01, pub_ed) and len(ed_sig) == 4 + 64
    assert pq_sig[:4] == key_id(ORIGIN, 0x06, pub_pq)
    assert struct.unpack(">Q", pq_sig[4:12]) == (1_767_225_600,)
    assert len(pq_sig) == 4 + 8 + ML_DSA_44_SIGNATURE_SIZE
    verified = verify_checkpoint(note, keys.ed25519_vkey, keys.ml_dsa_44_vkey)
    assert verified.checkpoint == Checkpoint(ORIGIN, 7, ROOT)
    assert verified.timestamp == 1_767_225_600


def test_the_ml_dsa_44_message_is_the_subtree_v1_structure():
    message = cosigned_message("w.example/a", 5, Checkpoint("log.example/x", 9, ROOT))
    assert message == (b"subtree/v1\n\x00" + b"\x0bw.example/a" + (5).to_bytes(8, "big")
                       + b"\x0dlog.example/x" + (0).to_bytes(8, "big") + (9).to_bytes(8, "big")
                       + ROOT)


def test_vkeys_round_trip_and_a_wrong_key_id_is_refused(keys):
    for vkey in (keys.ed25519_vkey, keys.ml_dsa_44_vkey):
        assert VerifierKey.parse(str(vkey)) == vkey
    name, _, material = str(keys.ed25519_vkey).split("+", 2)
    with pytest.raises(LedgerError, match="hashes to"):
        VerifierKey.parse(f"{name}+00000000+{material}")


def _lines(note: bytes) -> list[bytes]:
    return note.split(b"\n")


def test_a_forged_or_missing_line_is_named(keys):
    good = keys.sign(Checkpoint(ORIGIN, 7, ROOT), 100)
    other = LogKeys.generate(ORIGIN)
    lines = _lines(good)
    forged_pq = _lines(other.sign(Checkpoint(ORIGIN, 7, ROOT), 100))
    # the forger's line under our key id: the name and id match, the signature does not
    ours_id = base64.b64decode(lines[5].split(b" ")[2])[:4]
    theirs = base64.b64decode(forged_pq[5].split(b" ")[2])
    lines_forged = [*lines]
    lines_forged[5] = (b"\xe2\x80\x94 " + ORIGIN.encode() + b" "
                       + base64.b64encode(ours_id + theirs[4:]))
    with pytest.raises(LedgerError, match="line 6: the ML-DSA-44 signature of"):
        verify_checkpoint(b"\n".join(lines_forged), keys.ed25519_vkey, keys.ml_dsa_44_vkey)
    without_pq = b"\n".join([*lines[:5], b""])
    with pytest.raises(LedgerError, match="no ML-DSA-44 line"):
        verify_checkpoint(without_pq, keys.ed25519_vkey, keys.ml_dsa_44_vkey)
    bigger = good.replace(b"\n7\n", b"\n8\n")
    with pytest.raises(LedgerError, match="line 5: the Ed25519 signature"):
        verify_checkpoint(bigger, keys.ed25519_vkey, keys.ml_dsa_44_vkey)


def test_lines_of_unknown_keys_are_ignored(keys):
    note = keys.sign(Checkpoint(ORIGIN, 3, ROOT), 1)
    witness = (b"\xe2\x80\x94 witness.example/w1 "
               + base64.b64encode(b"\x01\x02\x03\x04" + b"s" * 72))
    assert verify_checkpoint(note + witness + b"\n", keys.ed25519_vkey,
                             keys.ml_dsa_44_vkey).checkpoint.size == 3


@pytest.mark.parametrize(("body", "named"), [
    (b"o\n007\nAAAA\n", "line 2"), (b"o\n7\nAAAA\n", "line 3"),
    (b"\n7\n" + base64.b64encode(ROOT) + b"\n", "line 1"),
    (b"o\n7\n" + base64.b64encode(ROOT) + b"\next\n", "extension")])
def test_malformed_bodies_are_named(body, named):
    with pytest.raises(LedgerError, match=named):
        Checkpoint.parse_body(body)
