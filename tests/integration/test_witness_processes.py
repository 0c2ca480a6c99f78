"""Two real `pcvhub witness run` processes on loopback witness a growing ledger log:
both cosign each checkpoint, a fork shown to one is refused with evidence, and a witness
SIGKILLed and restarted resumes from its state file.

No broker: the ledger side is the log and its Cosigning, as `pcvhub ledger run` drives
them on each checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from pcvhub.ledger.cosign import WitnessKey, WitnessKeys
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import TransparencyLog, save_keys
from pcvhub.ledger.note import LogKeys
from pcvhub.ledger.witness import trust_log
from pcvhub.ledger.witnessing import Cosigning, WitnessPolicy, read_history

ORIGIN = "hub.example/ledger"
PASSPHRASE = {"PCVHUB_KEY_PASSPHRASE": "witness test passphrase"}


def pcvhub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcvhub.cli", *args], capture_output=True,
                          text=True, timeout=120, env=os.environ | PASSPHRASE)


class WitnessProcess:
    """`pcvhub witness run` in its own folder; ``url`` once it listens."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pcvhub.cli", "witness", "run", "--dir", str(folder),
             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=os.environ | PASSPHRASE)
        self.banner = self._line(60)
        found = re.search(r"http://127\.0\.0\.1:[0-9]+", self.banner)
        assert found, self.banner
        self.url = found.group(0)
        self.port = int(self.url.rsplit(":", 1)[1])

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            raise AssertionError(f"witness in {self.folder} did not start: "
                                 f"{self.proc.stderr.read() if self.proc.stderr else ''}")
        line = self.proc.stdout.readline()
        assert line, f"witness exited: {self.proc.stderr.read()}"
        return line

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        return err


def leaf(i: int, fork: str = "") -> bytes:
    return LedgerLeaf(hashlib.sha256(f"{fork}{i}".encode()).digest(), "events", 0, i).encode()


def grow(log: TransparencyLog, to: int, fork: str = "") -> None:
    while log.size < to:
        log.append(leaf(log.size, fork if log.size >= 100 else ""))
    log.checkpoint(int(time.time()))


@pytest.fixture
def witnesses(tmp_path: Path, request):
    keys = LogKeys.generate(ORIGIN)
    configured, processes = [], []
    for name in ("manufacturer.example/witness", "payer.example/witness"):
        folder = tmp_path / name.split(".")[0]
        made = pcvhub("witness", "init", "--name", name, "--dir", str(folder))
        assert made.returncode == 0, made.stderr
        vkeys = dict(line.split(" ", 1) for line in made.stdout.splitlines()[1:])
        trusted = pcvhub("witness", "trust", "--dir", str(folder), "--vkey",
                         str(keys.ed25519_vkey), "--mldsa-vkey", str(keys.ml_dsa_44_vkey))
        assert trusted.returncode == 0 and ORIGIN in trusted.stdout, trusted.stderr
        process = WitnessProcess(folder)
        processes.append(process)
        configured.append(WitnessKey.parse(vkeys["vkey"], vkeys["mldsa-vkey"], process.url))
    policy = WitnessPolicy(tuple(configured), quorum=2)
    policy.write(tmp_path / "witnesses.json")
    yield keys, policy, processes
    for process in processes:
        process.stop()


def test_two_witnesses_cosign_a_growing_log_refuse_a_fork_and_resume(witnesses, tmp_path):
    keys, policy, (manufacturer, payer) = witnesses
    assert "(none yet)" in manufacturer.banner
    save_keys(tmp_path / "ledger" / "keys.json", keys, PASSPHRASE["PCVHUB_KEY_PASSPHRASE"].encode())
    with TransparencyLog(tmp_path / "ledger", keys) as log:
        cosigning = Cosigning(log, policy)
        try:
            for size in (120, 700, 701, 1500):  # every tree shape: odd, powers, tile edges
                grow(log, size)
                witnessed = cosigning(log.latest)
                assert [c.witness for c in witnessed.count.cosigned] == [
                    "manufacturer.example/witness", "payer.example/witness"]
                assert not witnessed.count.below_quorum
                # the published checkpoint carries the cosignatures
                assert (log.tiles / "checkpoint").read_bytes() == witnessed.signed.note
                assert witnessed.signed.note.count("\u2014".encode()) == 6

            # a fork: the same log keys sign another tree, shown to the payer only
            with TransparencyLog(tmp_path / "fork", keys) as fork:
                grow(fork, 1600, fork="forked")
                forked = Cosigning(fork, WitnessPolicy(policy.witnesses[1:], quorum=1))
                try:
                    refused = forked(fork.latest)
                finally:
                    forked.close()
            assert refused.count.cosigned == ()
            assert refused.count.below_quorum
            reason = refused.count.missing[0][1]
            assert "HTTP 422" in reason and "split view" in reason
            shown = pcvhub("witness", "evidence", "--dir", str(payer.folder))
            assert shown.returncode == 1 and "1500" in shown.stdout and "1600" in shown.stdout
            with urllib.request.urlopen(payer.url + "/evidence", timeout=10) as answer:
                evidence = json.loads(answer.read())
            assert len(evidence) == 1
            assert evidence[0]["cosigned"].split("\n")[1] == "1500"
            assert evidence[0]["shown"].split("\n")[1] == "1600"

            # the payer's witness is killed and restarted: it resumes at 1500, and the
            # ledger (which forgets nothing but learns the size from a 409) goes on
            payer.kill()
            grow(log, 1800)
            down = cosigning(log.latest)
            assert [c.witness for c in down.count.cosigned] == ["manufacturer.example/witness"]
            assert down.count.below_quorum and "did not answer" in down.count.missing[0][1]
            restarted = WitnessProcess(payer.folder, port=payer.port)
            payer.proc = restarted.proc
            assert f"{ORIGIN} at 1500" in restarted.banner
            grow(log, 2000)
            cosigning.clients[1].known_size = 0  # as a ledger restarted meanwhile would
            back = cosigning(log.latest)
            assert len(back.count.cosigned) == 2 and not back.count.below_quorum
        finally:
            cosigning.close()

    history = list(read_history(tmp_path / "ledger", keys.ed25519_vkey, keys.ml_dsa_44_vkey,
                                policy))
    assert [(h.checkpoint.size, len(h.cosigned), h.below_quorum) for h in history] == [
        (120, 2, False), (700, 2, False), (701, 2, False), (1500, 2, False), (1800, 1, True),
        (2000, 2, False)]
    table = pcvhub("ledger", "checkpoints", "--dir", str(tmp_path / "ledger"),
                   "--witnesses", str(tmp_path / "witnesses.json"))
    assert table.returncode == 0, table.stderr
    assert "BELOW QUORUM" in table.stdout and "1/2" in table.stdout


def test_a_witness_killed_mid_request_never_forgets_what_it_cosigned(tmp_path):
    """SIGKILL while add-checkpoint requests are in flight, twice: after each
    restart the witness's state is at least the largest size it returned a cosignature
    for (it persists before answering), and the ledger goes on from there."""
    keys = LogKeys.generate(ORIGIN)
    folder = tmp_path / "witness"
    witness_keys = WitnessKeys.generate("payer.example/witness")
    save_keys(folder / "keys.json", witness_keys, PASSPHRASE["PCVHUB_KEY_PASSPHRASE"].encode())
    trust_log(folder, str(keys.ed25519_vkey), str(keys.ml_dsa_44_vkey))
    process = WitnessProcess(folder)
    key = WitnessKey(witness_keys.name, witness_keys.ed25519_vkey, witness_keys.ml_dsa_44_vkey,
                     process.url)
    rng = random.Random(17)
    with TransparencyLog(tmp_path / "ledger", keys) as log:
        cosigning = Cosigning(log, WitnessPolicy((key,), quorum=1), timeout=2)
        try:
            for _ in range(2):
                cosigned_sizes: list[int] = []
                stop = threading.Event()

                def submit(stop: threading.Event = stop,
                           cosigned_sizes: list[int] = cosigned_sizes) -> None:
                    while not stop.is_set():
                        grow(log, log.size + rng.randrange(1, 40))
                        if cosigning(log.latest).count.cosigned:
                            cosigned_sizes.append(log.size)

                sender = threading.Thread(target=submit)
                sender.start()
                time.sleep(rng.uniform(0.5, 1.5))
                process.kill()
                stop.set()
                sender.join(30)
                assert cosigned_sizes, "nothing was cosigned before the kill"
                process = WitnessProcess(folder, port=process.port)
                resumed = int(re.search(rf"{ORIGIN} at (\d+)", process.banner).group(1))
                assert resumed >= max(cosigned_sizes)
                cosigning.clients[0].known_size = 0
                grow(log, log.size + 1)
                assert cosigning(log.latest).count.cosigned
        finally:
            cosigning.close()
            process.stop()
