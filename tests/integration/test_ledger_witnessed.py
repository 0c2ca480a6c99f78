"""`pcvhub ledger run --witnesses` on the real broker: each checkpoint goes to two real
witness processes, and the checkpoint published on the ledger topic (and in the tile
folder) carries both witnesses' cosignatures; `ledger checkpoints` counts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pcvhub.ledger.cosign import WitnessKey, count_cosignatures
from pcvhub.ledger.note import VerifierKey, verify_checkpoint
from pcvhub.ledger.witnessing import WitnessPolicy
from pcvhub.streams.sandbox import Sandbox

from .test_ledger_follow import LedgerProcess, write_gatekeepers_log
from .test_projection_kill import gatekeeper_records, hub  # noqa: F401 - the sandbox fixture
from .test_witness_processes import WitnessProcess, pcvhub

pytestmark = pytest.mark.kafka

EVENTS = 600


def test_published_checkpoints_carry_both_witnesses_cosignatures(hub: Sandbox,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    total = write_gatekeepers_log(hub, "witnessed", EVENTS, seed=5)

    init = subprocess.run([sys.executable, "-m", "pcvhub.cli", "ledger", "init", "--origin",
                           "ledger.pcvhub.example/witnessed"], env=hub.env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert init.returncode == 0, init.stderr
    vkeys = dict(line.split(" ", 1) for line in init.stdout.splitlines()[1:])
    configured, witnesses = [], []
    try:
        for name in ("manufacturer.example/witness", "payer.example/witness"):
            folder = tmp_path / name.split(".")[0]
            made = pcvhub("witness", "init", "--name", name, "--dir", str(folder))
            keys = dict(line.split(" ", 1) for line in made.stdout.splitlines()[1:])
            assert pcvhub("witness", "trust", "--dir", str(folder), "--vkey", vkeys["vkey"],
                          "--mldsa-vkey", vkeys["mldsa-vkey"]).returncode == 0
            witnesses.append(WitnessProcess(folder))
            configured.append(WitnessKey.parse(keys["vkey"], keys["mldsa-vkey"],
                                               witnesses[-1].url))
        policy = WitnessPolicy(tuple(configured), quorum=2)
        policy.write(tmp_path / "witnesses.json")
        ledger = LedgerProcess(hub, "run", "--every", "500", "--seconds", "1", "--witnesses",
                               str(tmp_path / "witnesses.json"))
        ledger.wait_for(lambda p: "caught up" in p.output and total in p.sizes(), 240)
        os.killpg(ledger.proc.pid, signal.SIGTERM)
        assert ledger.proc.wait(30) == 0, ledger.output
    finally:
        for witness in witnesses:
            witness.stop()
    lines = [line for line in ledger.lines if line.startswith("checkpoint ")]
    assert len(lines) >= 2 and all(line.rstrip().endswith("cosigned 2/2") for line in lines)

    folder = Path(hub.settings.data_dir) / "ledger"
    log_ed, log_pq = VerifierKey.parse(vkeys["vkey"]), VerifierKey.parse(vkeys["mldsa-vkey"])
    published = [r.value or b"" for r in hub.read_all("ledger")]
    assert published[-1] == (folder / "tiles" / "checkpoint").read_bytes()
    for note in published:
        verify_checkpoint(note, log_ed, log_pq)
        count = count_cosignatures(note, policy.witnesses, policy.quorum)
        assert len(count.cosigned) == 2, count.missing
    assert count.checkpoint.size == total
    shown = pcvhub("ledger", "checkpoints", "--dir", str(folder), "--witnesses",
                   str(tmp_path / "witnesses.json"))
    assert shown.returncode == 0 and "2/2" in shown.stdout and "BELOW" not in shown.stdout
