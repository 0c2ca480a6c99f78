"""Private keys at rest: encrypted, bound to their actor, unlocked only with the passphrase."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pcvhub.cli import app
from pcvhub.trust.keys import KeyStore, KeyStoreError


def test_store_and_load_round_trip(tmp_path):
    store = KeyStore(tmp_path, b"correct horse")
    signer = store.create("lab-1", "2026-11-30T00:00:00+00:00", key_id="lab-1-k1")
    loaded = KeyStore(tmp_path, b"correct horse").load("lab-1", "lab-1-k1")
    assert loaded.keys.public == signer.keys.public
    message = b"pcvhub test"
    # Ed25519 signatures are deterministic: the same seed signs identically.
    assert loaded.keys.sign(message).ed25519 == signer.keys.sign(message).ed25519
    assert [k.key_id for k in store.list()] == ["lab-1-k1"]


def test_private_seeds_are_not_in_the_file(tmp_path):
    signer = KeyStore(tmp_path, b"pw").create("lab-1", "t", key_id="lab-1-k1")
    text = (tmp_path / "lab-1" / "lab-1-k1.json").read_text()
    for seed in signer.keys.seeds():
        assert seed.hex() not in text
    assert oct((tmp_path / "lab-1" / "lab-1-k1.json").stat().st_mode)[-3:] == "600"


def test_wrong_passphrase_is_refused(tmp_path):
    KeyStore(tmp_path, b"pw").create("lab-1", "t", key_id="lab-1-k1")
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        KeyStore(tmp_path, b"not it").load("lab-1", "lab-1-k1")


def test_key_file_moved_to_another_actor_does_not_unlock(tmp_path):
    KeyStore(tmp_path, b"pw").create("lab-1", "t", key_id="k1")
    record = json.loads((tmp_path / "lab-1" / "k1.json").read_text())
    (tmp_path / "courier").mkdir()
    record["actor_id"] = "courier"
    (tmp_path / "courier" / "k1.json").write_text(json.dumps(record))
    with pytest.raises(KeyStoreError, match="moved from another actor"):
        KeyStore(tmp_path, b"pw").load("courier", "k1")


def test_cli_new_list_rotate(tmp_path, monkeypatch):
    monkeypatch.setenv("PCVHUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PCVHUB_KEY_PASSPHRASE", "pw")
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "new", "site-1-emr"])
    assert created.exit_code == 0, created.output
    rotated = runner.invoke(app, ["keys", "rotate", "site-1-emr"])
    assert rotated.exit_code == 0 and "rotated site-1-emr" in rotated.output
    listed = runner.invoke(app, ["keys", "list"], env={"COLUMNS": "200"})
    assert listed.output.count("site-1-emr-k") == 2


def test_cli_without_passphrase_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("PCVHUB_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PCVHUB_KEY_PASSPHRASE", raising=False)
    result = CliRunner().invoke(app, ["keys", "list"])
    assert result.exit_code == 1 and "PCVHUB_KEY_PASSPHRASE" in result.output
