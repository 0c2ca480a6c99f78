"""The ledger process on the real broker: it logs every record the gatekeeper's topics
hold, is SIGKILLed mid-stream, resumes from its last checkpoint, and ends with one leaf
per record, none twice, in a log whose tiles audit and whose checkpoints are on its topic.

The records are written straight to the sandbox's topics (as the projection kill test
does): a registry, whole valid therapies signed in batches, and refusals and alerts
signed by the gatekeeper's key.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import TransparencyLog, load_keys
from pcvhub.ledger.note import verify_checkpoint
from pcvhub.ledger.tiles import audit_tiles
from pcvhub.streams.sandbox import PASSPHRASE, Sandbox
from pcvhub.trust.issuer import EventIssuer

from ..unit.sealing import SealedWriter
from ..unit.test_projection_scenario import signed_cohort
from ..unit.therapy_builder import DAY_US, T0_US, Hub
from .test_projection_kill import (  # noqa: F401 - the sandbox fixture
    GATEKEEPER_RECORDS,
    gatekeeper_records,
    hub,
)

pytestmark = pytest.mark.kafka

EVENTS = 1500
CHECKPOINT = re.compile(r"^checkpoint (\d+) ", re.M)


class LedgerProcess:
    """`pcvhub ledger run` in its own process, its output collected in a thread."""

    def __init__(self, sandbox: Sandbox, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pcvhub.cli", "ledger", *args], env=sandbox.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        sandbox.workers.append(self.proc)
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def sizes(self) -> list[int]:
        return [int(m) for m in CHECKPOINT.findall(self.output)]

    def wait_for(self, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"ledger did not get there in {timeout:.0f}s:\n{self.output}")


def write_gatekeepers_log(sandbox: Sandbox, cast_tag: str, events: int, seed: int,
                          refusals: int = GATEKEEPER_RECORDS) -> int:
    """A cohort's log (registry, therapies, ``refusals`` of the gatekeeper's refusals and
    as many alerts) as a gatekeeper writes it, sealed in batches, put there by the admin;
    how many records."""
    builder = Hub()
    gatekeeper = sandbox.install_identities(builder.registrar.issuer.signer,
                                            valid_from_us=T0_US - 365 * DAY_US)
    builder.register_gatekeeper(gatekeeper)
    cohort = signed_cohort(builder, builder.register_cast(cast_tag), events)
    extra = gatekeeper_records(EventIssuer(gatekeeper), cohort, random.Random(seed),
                               refusals)
    writer = SealedWriter(Producer(sandbox.admin.producer(**{"linger.ms": 5})),
                          sandbox.settings.topic_prefix, gatekeeper)
    for event in builder.registry_log:
        writer.write("events", event.coi.encode(), event.raw)
    for event in cohort:
        writer.write("events", event.key, event.wire)
    for topic, record in extra:
        writer.write(topic, record.key, record.wire)
    writer.flush(60)
    return len(builder.registry_log) + len(cohort) + len(extra)


def test_sigkilled_ledger_resumes_and_logs_every_record_once(hub: Sandbox) -> None:  # noqa: F811
    total = write_gatekeepers_log(hub, "ledger", EVENTS, seed=3)

    init = subprocess.run([sys.executable, "-m", "pcvhub.cli", "ledger", "init", "--origin",
                           "ledger.pcvhub.example/kill"], env=hub.env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert init.returncode == 0, init.stderr
    first = LedgerProcess(hub, "run", "--every", "200", "--seconds", "1")
    first.wait_for(lambda p: any(s >= 800 for s in p.sizes()), 180)
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)
    # The commit point is the checkpoint file, written before the print and the publish on
    # the ledger topic: a kill between them leaves a later size on disk than last printed.
    folder = Path(hub.settings.data_dir) / "ledger"
    keys = load_keys(folder / "keys.json", PASSPHRASE.encode())
    killed_at = verify_checkpoint((folder / "tiles" / "checkpoint").read_bytes(),
                                  keys.ed25519_vkey, keys.ml_dsa_44_vkey).checkpoint.size
    assert max(first.sizes()) <= killed_at < total  # killed mid-stream

    second = LedgerProcess(hub, "run", "--every", "200", "--seconds", "1")
    second.wait_for(lambda p: "caught up" in p.output and total in p.sizes(), 240)
    assert second.lines[0].startswith(f"ledger ledger.pcvhub.example/kill: {killed_at} ")
    os.killpg(second.proc.pid, signal.SIGTERM)
    assert second.proc.wait(30) == 0, second.output
    assert "discrepancy" not in second.output

    with TransparencyLog(folder, keys) as log:
        assert log.size == total
        leaves = [LedgerLeaf.decode(e) for e in log.entries(0, log.size)]
    logged = {(leaf.topic, leaf.partition, leaf.offset) for leaf in leaves}
    on_log = {(r.topic, r.partition, r.offset) for topic in ("events", "rejected", "alerts")
              for r in hub.read_all(topic)}
    assert len(logged) == len(leaves) == total  # none twice
    assert all(leaf.seal for leaf in leaves)  # each leaf binds the gatekeeper's seal
    assert logged == on_log  # and none missing
    assert audit_tiles(folder / "tiles", keys.ed25519_vkey,
                       keys.ml_dsa_44_vkey).entries_checked == total
    # every checkpoint went to the ledger topic too (the one resumed from, if the kill came
    # before its publish, by the restart); the last one is the file's
    published = [verify_checkpoint(r.value or b"", keys.ed25519_vkey, keys.ml_dsa_44_vkey)
                 for r in hub.read_all("ledger")]
    assert published[-1].note == (folder / "tiles" / "checkpoint").read_bytes()
    sizes = [p.checkpoint.size for p in published]
    assert sizes == sorted(sizes) and killed_at in sizes
