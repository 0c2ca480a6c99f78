"""Go's transparency-log code verifies what the ledger publishes, and refuses tampering.

Nothing here trusts pcvhub's own verifiers: ``infra/tlog-verify`` checks the checkpoint's
Ed25519 line with ``golang.org/x/mod/sumdb/note``, its ML-DSA-44 line (C2SP
tlog-cosignature) with ``cloudflare/circl``, recomputes the root from the C2SP tiles and
every entry's leaf hash with ``golang.org/x/mod/sumdb/tlog``, and checks the ledger's
inclusion and consistency proofs with ``transparency-dev/merkle`` (and against the proofs
sumdb/tlog builds from the tiles), from the folder and over ``pcvhub ledger serve``. Each
tamper case must fail in Go, and in pcvhub's own audit too, naming the same thing.

Sumdb/tlog before v0.43 did not check the lower tiles it read when several subtree roots
of the tree share one tile (a flipped byte in ``tile/0/004`` of a 70,000-leaf tree went
through); the flipped-tile case below is what caught it, hence the pinned version.

The verifier is built once (``infra/tlog-verify/build.sh``, run by ``make setup``; cached
under ``.cache/tlog-verify``), so a warm run costs one process per case.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import TransparencyLog
from pcvhub.ledger.note import LogKeys
from pcvhub.ledger.serve import TileServer
from pcvhub.ledger.tiles import audit_tiles

pytestmark = pytest.mark.go

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "ledger.pcvhub.example/interop"
# three tile levels: 273 full level-0 tiles, partials at levels 0, 1 and 2
SIZE = 70_000
CHECKPOINTS = (1, 255, 256, 257, 65_536, SIZE)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, LogKeys, Path]:
    """A ledger of SIZE leaves checkpointed at several sizes, and the proofs it gave."""
    root = tmp_path_factory.mktemp("ledger")
    keys = LogKeys.generate(ORIGIN)
    with TransparencyLog(root / "log", keys) as log:
        for size in CHECKPOINTS:
            while log.size < size:
                i = log.size
                log.append(LedgerLeaf(i.to_bytes(32, "big"), "events", i % 6, i).encode())
            log.checkpoint(timestamp=1_767_225_600 + size)
        pairs = [(0, 1), (0, SIZE), (255, 256), (256, 257), (1234, 65_536), (65_535, SIZE),
                 (SIZE - 1, SIZE), (7, 8), (69_888, 69_999)]
        proofs = {
            "inclusion": [log.inclusion_proof(i, n).to_json() for i, n in pairs],
            "consistency": [log.consistency_proof(m, n).to_json() for m, n in
                            [(0, 5), (1, SIZE), (255, 256), (256, 257), (257, 65_536),
                             (65_536, SIZE), (1000, 69_999), (SIZE, SIZE)]],
        }
    proof_file = root / "proofs.json"
    proof_file.write_text(json.dumps(proofs))
    return root / "log" / "tiles", keys, proof_file


def run_go(binary: Path, tiles: Path, keys: LogKeys, proofs: Path | None = None,
           url: str | None = None):
    args = [str(binary), "-tiles", url or str(tiles), "-vkey", str(keys.ed25519_vkey),
            "-mldsa-vkey", str(keys.ml_dsa_44_vkey)]
    if proofs is not None:
        args += ["-proofs", str(proofs)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_go_verifies_the_checkpoint_tiles_entries_and_proofs(go_verifier, published):
    tiles, keys, proofs = published
    ran = run_go(go_verifier, tiles, keys, proofs)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [
        f"ok checkpoint Ed25519 line (x/mod/sumdb/note): {ORIGIN} size {SIZE} root "
        + (tiles / "checkpoint").read_text().splitlines()[2],
        "ok checkpoint ML-DSA-44 line (circl)",
        "ok root from tiles (x/mod/sumdb/tlog)",
        f"ok {SIZE} entries hash to their leaf hashes",
        "ok 9 inclusion proofs (transparency-dev/merkle, equal to x/mod/sumdb/tlog's)",
        "ok 8 consistency proofs (transparency-dev/merkle, equal to x/mod/sumdb/tlog's)",
    ]
    assert audit_tiles(tiles, keys.ed25519_vkey, keys.ml_dsa_44_vkey).entries_checked == SIZE


def test_go_fetches_and_verifies_the_log_over_the_tile_server(go_verifier, published):
    """What an existing tlog client does: fetch checkpoint and tiles over HTTP."""
    tiles, keys, proofs = published
    server = TileServer(tiles)
    server.start()
    try:
        ran = run_go(go_verifier, tiles, keys, proofs, url=server.url)
    finally:
        server.shutdown()
        server.server_close()
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-1].startswith("ok 8 consistency proofs")


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _forge_line(path: Path, line: int) -> None:
    """Flip a bit inside the signature of one signature line (0: Ed25519, 1: ML-DSA-44)."""
    text = path.read_bytes().split(b"\n")
    prefix, sig = text[4 + line].rsplit(b" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[-1] ^= 0x01
    text[4 + line] = prefix + b" " + base64.b64encode(bytes(raw))
    path.write_bytes(b"\n".join(text))


TAMPERS = {
    "flipped byte in a hash tile": (lambda t: _flip(t / "tile/0/004", 40),
                                    "tile/0/004", "tile/0/004 does not hash"),
    "flipped byte in an entry bundle": (lambda t: _flip(t / "tile/entries/001", 2 + 22 + 3),
                                        "tile/entries/001: entry 0 (leaf 256)",
                                        r"tile/entries/001 entry 0 \(leaf 256\)"),
    "flipped byte in the top partial tile": (lambda t: _flip(t / "tile/2/000.p/1", 0),
                                             "inconsistent tile",
                                             r"tile/1/000 does not hash to entry 0 of "
                                             r"tile/2/000\.p/1"),
    "forged Ed25519 line": (lambda t: _forge_line(t / "checkpoint", 0),
                            "Ed25519 note signature", "line 5: the Ed25519 signature"),
    "forged ML-DSA-44 line": (lambda t: _forge_line(t / "checkpoint", 1),
                              "ML-DSA-44 line of", "line 6: the ML-DSA-44 signature"),
    "wrong root in the checkpoint": (
        lambda t: (t / "checkpoint").write_bytes((t / "checkpoint").read_bytes().replace(
            (t / "checkpoint").read_bytes().split(b"\n")[2], base64.b64encode(bytes(32)))),
        "Ed25519 note signature", "line 5: the Ed25519 signature"),
}


@pytest.mark.parametrize("case", list(TAMPERS))
def test_go_and_pcvhub_both_refuse_a_tampered_log(go_verifier, published, tmp_path, case):
    tiles, keys, _ = published
    copy = tmp_path / "tiles"
    shutil.copytree(tiles, copy)
    tamper, go_says, we_say = TAMPERS[case]
    tamper(copy)
    ran = run_go(go_verifier, copy, keys)
    assert ran.returncode == 1, f"Go accepted the log with a {case}:\n{ran.stdout}"
    assert go_says in ran.stderr, ran.stderr
    with pytest.raises(LedgerError, match=we_say):
        audit_tiles(copy, keys.ed25519_vkey, keys.ml_dsa_44_vkey)


def test_go_refuses_a_tampered_proof(go_verifier, published, tmp_path):
    tiles, keys, proofs = published
    data = json.loads(proofs.read_text())
    path = data["inclusion"][4]["path"]
    path[0] = base64.b64encode(bytes(32)).decode()
    data["consistency"] = []
    bad = tmp_path / "proofs.json"
    bad.write_text(json.dumps(data))
    ran = run_go(go_verifier, tiles, keys, bad)
    assert ran.returncode == 1
    assert "inclusion proof of leaf 1234 in 65536 (transparency-dev/merkle)" in ran.stderr
