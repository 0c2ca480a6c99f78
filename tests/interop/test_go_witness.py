"""Go's tlog-cosignature code verifies the witnesses' cosignatures on the ledger's
checkpoint, refuses a tampered one, and agrees with pcvhub on quorum.

``infra/tlog-verify -witness-vkey`` checks each witness line with
``github.com/transparency-dev/formats/note`` (Ed25519 cosignature/v1, type 0x04; ML-DSA-44,
type 0x06, on ``filippo.io/mldsa``) through ``x/mod/sumdb/note``'s ``Open``, and
``-witness-policy`` evaluates a Tessera witness policy (``formats/witness``) over the
checkpoint. The witnesses answer over real HTTP on loopback (``WitnessServer``).
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import threading
from pathlib import Path

import pytest

from pcvhub.ledger.cosign import WitnessKey, WitnessKeys, count_cosignatures
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import TransparencyLog
from pcvhub.ledger.note import LogKeys
from pcvhub.ledger.witness import Witness, WitnessServer, trust_log
from pcvhub.ledger.witnessing import Cosigning, WitnessPolicy

pytestmark = pytest.mark.go

ORIGIN = "ledger.pcvhub.example/witnessed"
NAMES = ("manufacturer.example/w", "advocate.example/w")


@pytest.fixture
def witnessed(tmp_path: Path):
    """A 300-leaf log whose checkpoint two witnesses over HTTP cosigned."""
    keys = LogKeys.generate(ORIGIN)
    servers, configured = [], []
    for name in NAMES:
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        trust_log(folder, str(keys.ed25519_vkey), str(keys.ml_dsa_44_vkey))
        server = WitnessServer(Witness(folder, WitnessKeys.generate(name)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        w = server.witness.keys
        configured.append(WitnessKey(name, w.ed25519_vkey, w.ml_dsa_44_vkey, server.url))
    policy = WitnessPolicy(tuple(configured), quorum=2)
    log = TransparencyLog(tmp_path / "log", keys)
    cosigning = Cosigning(log, policy)
    for size in (77, 300):
        while log.size < size:
            log.append(LedgerLeaf(hashlib.sha256(b"%d" % log.size).digest(), "events", 0,
                                  log.size).encode())
        cosigning(log.checkpoint(1_767_225_600 + size))
    yield log, keys, policy, servers
    cosigning.close()
    log.close()
    for server in servers:
        server.shutdown()
        server.server_close()
        server.witness.close()


def go(verifier: Path, tiles: Path, keys: LogKeys, policy: WitnessPolicy, *extra: str
       ) -> subprocess.CompletedProcess[str]:
    args = [str(verifier), "-tiles", str(tiles), "-vkey", str(keys.ed25519_vkey),
            "-mldsa-vkey", str(keys.ml_dsa_44_vkey)]
    for w in policy.witnesses:
        args += ["-witness-vkey", str(w.ed25519), "-witness-vkey", str(w.ml_dsa_44)]
    return subprocess.run(args + list(extra), capture_output=True, text=True, timeout=120,
                          check=False)


def tessera_policy(path: Path, policy: WitnessPolicy, threshold: str) -> Path:
    lines = [f"witness w{i} {w.ed25519} {w.url}" for i, w in enumerate(policy.witnesses)]
    lines += [f"group g {threshold} " + " ".join(f"w{i}" for i in range(len(lines))),
              "quorum g"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_go_verifies_both_cosignatures_of_each_witness(go_verifier, witnessed, tmp_path):
    log, keys, policy, _ = witnessed
    result = go(go_verifier, log.tiles, keys, policy, "-witness-policy",
                str(tessera_policy(tmp_path / "policy", policy, "all")))
    assert result.returncode == 0, result.stderr
    cosigned = [line for line in result.stdout.splitlines() if "ok cosignature of" in line]
    assert len(cosigned) == 4  # two lines (0x04, 0x06) of each of the two witnesses
    assert {line.split()[3] for line in cosigned} == set(NAMES)
    assert "ok witness policy satisfied" in result.stdout
    count = count_cosignatures(log.latest.note, policy.witnesses, policy.quorum)
    assert not count.below_quorum and count.checkpoint.size == 300


@pytest.mark.parametrize("line", [-5, -2], ids=["ed25519-cosignature", "ml-dsa-44"])
def test_a_tampered_cosignature_fails_in_go_and_in_pcvhub(go_verifier, witnessed, tmp_path,
                                                          line):
    log, keys, policy, _ = witnessed
    note = log.latest.note.decode().split("\n")
    dash, name, b64 = note[line].split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 0x01
    note[line] = f"{dash} {name} {base64.b64encode(bytes(raw)).decode()}"
    (log.tiles / "checkpoint").write_text("\n".join(note))
    result = go(go_verifier, log.tiles, keys, policy)
    assert result.returncode == 1 and "invalid signature" in result.stderr, result.stdout
    count = count_cosignatures("\n".join(note).encode(), policy.witnesses, policy.quorum)
    assert [n for n, _ in count.missing] == [name] and count.below_quorum
    assert "does not verify" in count.missing[0][1]


def test_go_and_pcvhub_agree_a_checkpoint_is_below_quorum(go_verifier, witnessed, tmp_path):
    log, keys, policy, servers = witnessed
    servers[1].shutdown()  # the advocate's witness stops answering
    servers[1].server_close()
    one = Cosigning(log, WitnessPolicy(policy.witnesses, quorum=2), timeout=2)
    try:
        log.append(LedgerLeaf(b"\x07" * 32, "events", 0, 300).encode())
        witnessed_now = one(log.checkpoint(1_767_229_999))
    finally:
        one.close()
    assert witnessed_now.count.below_quorum and len(witnessed_now.count.cosigned) == 1
    both = tessera_policy(tmp_path / "all", policy, "all")
    refused = go(go_verifier, log.tiles, keys, WitnessPolicy(policy.witnesses[:1], 1),
                 "-witness-policy", str(both))
    assert refused.returncode == 1 and "does not carry its quorum" in refused.stderr
    anyone = tessera_policy(tmp_path / "any", policy, "any")
    assert go(go_verifier, log.tiles, keys, WitnessPolicy(policy.witnesses[:1], 1),
              "-witness-policy", str(anyone)).returncode == 0
    assert "did not answer" in witnessed_now.count.missing[0][1]
