"""The ledger's witness client against an independent witness: torchwood's litewitness.

litewitness (filippo.io/torchwood v0.6.1, built by ``infra/litewitness/build.sh``) speaks
c2sp.org/tlog-witness with its own code: it verifies the log's Ed25519 note line with
``x/mod/sumdb/note``, the consistency proof with ``x/mod/sumdb/tlog``, keeps its state in
SQLite and signs with an Ed25519 key held by an ssh-agent. It cosigns with Ed25519
cosignature/v1 only (no ML-DSA-44 in that version), so it is configured without an
ML-DSA key. Beside it runs pcvhub's own witness; the ledger's ``Cosigning`` drives both.

Checked: both cosign a growing log (pcvhub verifies litewitness's cosignature lines);
the 409 size answer (a ledger that forgot the witness's size) is followed; a fork is
refused by both; litewitness SIGKILLed and restarted resumes from its database.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pcvhub.ledger.cosign import WitnessKey, WitnessKeys
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import TransparencyLog
from pcvhub.ledger.note import LogKeys
from pcvhub.ledger.witness import Witness, WitnessServer, trust_log
from pcvhub.ledger.witnessing import Cosigning, WitnessPolicy

pytestmark = pytest.mark.go

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "litewitness" / "build.sh"
ORIGIN = "ledger.pcvhub.example/litewitness"
NAME = "litewitness.example/w"


@pytest.fixture(scope="session")
def litewitness_bin() -> Path:
    built = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                           timeout=1200, check=False)
    if built.returncode != 0:
        pytest.fail(f"building litewitness failed:\n{built.stderr}")
    return Path(built.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Litewitness:
    """litewitness with its own ssh-agent, database and port."""

    def __init__(self, bin_dir: Path, folder: Path, log_vkey: str) -> None:
        self.bin_dir, self.folder = bin_dir, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.db, self.sock = folder / "litewitness.db", folder / "agent.sock"
        key = folder / "witness-key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True, timeout=30)
        self.agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(self.sock)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["ssh-add", "-q", str(key)], check=True, timeout=30,
                       env=os.environ | {"SSH_AUTH_SOCK": str(self.sock)},
                       stderr=subprocess.DEVNULL)
        fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], check=True,
                                     capture_output=True, text=True).stdout.split()[1]
        for args in (["add-log", "-origin", ORIGIN],
                     ["add-key", "-origin", ORIGIN, "-key", log_vkey]):
            subprocess.run([str(bin_dir / "witnessctl"), args[0], "-db", str(self.db),
                            *args[1:]], check=True, timeout=30, capture_output=True)
        self.port = free_port()
        self.args = [str(bin_dir / "litewitness"), "-db", str(self.db), "-name", NAME,
                     "-key", fingerprint, "-ssh-agent", str(self.sock), "-listen",
                     f"127.0.0.1:{self.port}"]
        self.vkey = self.start()

    def start(self) -> str:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        vkey = ""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # slog lines; the vkey comes before "listening"
            found = re.search(r"vkey=(\S+)", line)
            if found:
                vkey = found.group(1)
            if "listening" in line:
                break
        else:
            raise AssertionError(f"litewitness exited with {self.proc.wait()}")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drain
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return vkey
            except OSError:
                time.sleep(0.05)
        raise AssertionError("litewitness does not accept connections")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        for proc in (self.proc, self.agent):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


def grow(log: TransparencyLog, to: int, fork: str = "") -> None:
    while log.size < to:
        i = log.size
        log.append(LedgerLeaf(hashlib.sha256(f"{fork if i >= 50 else ''}{i}".encode()).digest(),
                              "events", 0, i).encode())
    log.checkpoint(int(time.time()))


def test_litewitness_and_pcvhub_witness_cosign_refuse_a_fork_and_resume(litewitness_bin,
                                                                         tmp_path):
    keys = LogKeys.generate(ORIGIN)
    lite = Litewitness(litewitness_bin, tmp_path / "lite", str(keys.ed25519_vkey))
    ours_dir = tmp_path / "ours"
    ours_dir.mkdir()
    trust_log(ours_dir, str(keys.ed25519_vkey), str(keys.ml_dsa_44_vkey))
    ours = WitnessServer(Witness(ours_dir, WitnessKeys.generate("advocate.example/w")))
    threading.Thread(target=ours.serve_forever, daemon=True).start()
    w = ours.witness.keys
    policy = WitnessPolicy((WitnessKey.parse(lite.vkey, None, lite.url),
                            WitnessKey(w.name, w.ed25519_vkey, w.ml_dsa_44_vkey, ours.url)),
                           quorum=2)
    assert policy.witnesses[0].name == NAME
    log = TransparencyLog(tmp_path / "log", keys)
    cosigning = Cosigning(log, policy)
    try:
        for size in (1, 2, 100, 257, 1000):
            grow(log, size)
            got = cosigning(log.latest)
            assert [c.witness for c in got.count.cosigned] == [NAME, w.name], got.count.missing

        # the ledger forgot the sizes (a restart): both answer 409 with theirs, then cosign
        for client in cosigning.clients:
            client.known_size = 0
        grow(log, 1001)
        assert len(cosigning(log.latest).count.cosigned) == 2

        # a fork with the log's keys: litewitness refuses it as pcvhub's witness does
        with TransparencyLog(tmp_path / "fork", keys) as fork:
            grow(fork, 1100, fork="forked")
            forked = Cosigning(fork, policy)
            try:
                refused = forked(fork.latest)
            finally:
                forked.close()
        assert refused.count.cosigned == ()
        reasons = dict(refused.count.missing)
        assert "HTTP 422" in reasons[NAME] and "HTTP 422" in reasons[w.name], reasons
        assert len(ours.witness.evidence()) == 1

        # litewitness SIGKILLed and restarted: its database resumes at 1001
        lite.kill()
        assert lite.start() == lite.vkey
        cosigning.clients[0].known_size = 0
        grow(log, 1500)
        back = cosigning(log.latest)
        assert len(back.count.cosigned) == 2 and not back.count.below_quorum
        assert cosigning.clients[0].known_size == 1500
    finally:
        cosigning.close()
        log.close()
        ours.shutdown()
        ours.server_close()
        ours.witness.close()
        lite.close()
