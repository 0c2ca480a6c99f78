"""`pcvhub audit export` and `audit verify` on the real broker: a therapy's bundle verifies
offline, and fails naming the record after a one-byte change anywhere in it.

The log is the gatekeeper's as the ledger drills write it (registry, whole therapies with
the patient's card and consents, refusals and alerts, sealed in batches), followed by a
real `pcvhub ledger run` until it has caught up; then export and verify run as processes.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from pcvhub.audit.bundle import (
    ARCHIVE_SEAL,
    CHECKPOINT,
    RECORDS,
    SEALS,
    BundledRecord,
    verify_bundle,
)
from pcvhub.streams.sandbox import Sandbox
from pcvhub.topics import SEAL_HEADER

from .test_ledger_follow import LedgerProcess, write_gatekeepers_log
from .test_projection_kill import hub  # noqa: F401 - the sandbox fixture

pytestmark = pytest.mark.kafka

EVENTS = 120


def cli(sandbox: Sandbox, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pcvhub.cli", *args], env=sandbox.env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def logged(sandbox: Sandbox, origin: str) -> int:
    """A ledger that has logged everything on the gatekeeper's topics; how many records."""
    total = write_gatekeepers_log(sandbox, "audit", EVENTS, seed=11, refusals=60)
    init = cli(sandbox, "ledger", "init", "--origin", origin)
    assert init.returncode == 0, init.stderr
    ledger = LedgerProcess(sandbox, "run", "--seconds", "1")
    ledger.wait_for(lambda p: "caught up" in p.output and total in p.sizes(), 120)
    os.killpg(ledger.proc.pid, signal.SIGTERM)
    assert ledger.proc.wait(30) == 0, ledger.output
    return total


def busiest_therapy(sandbox: Sandbox) -> str:
    """The therapy with the most canonical records that also has a refusal or an alert."""
    side = {r.key for topic in ("rejected", "alerts") for r in sandbox.read_all(topic)}
    counts = Counter(r.key for r in sandbox.read_all("events")
                     if r.key in side and r.key != b"pcvhub:registry")
    return counts.most_common(1)[0][0].decode()


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_bundle_verifies_offline_and_any_one_byte_change_names_what_failed(
        hub: Sandbox, tmp_path: Path) -> None:  # noqa: F811
    logged(hub, "audit.pcvhub.example/ledger")
    coi = busiest_therapy(hub)
    bundle = tmp_path / "bundle"
    out = cli(hub, "audit", "export", coi, "--out", str(bundle))
    assert out.returncode == 0, out.stderr
    assert f"of {coi}" in out.stdout

    # verify: a process that is given no broker at all
    offline = {k: v for k, v in hub.env.items() if not k.startswith("PCVHUB_")}
    offline["PYTHONPATH"] = hub.env.get("PYTHONPATH", "")
    offline["PCVHUB_BOOTSTRAP_SERVERS"] = "127.0.0.1:9"  # nothing listens there
    ok = subprocess.run([sys.executable, "-m", "pcvhub.cli", "audit", "verify", str(bundle)],
                        env=offline, capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "bundle verified" in ok.stdout
    assert "consent history" in ok.stdout and "PATIENT" in ok.stdout
    report = verify_bundle(bundle)
    assert report.ok and report.consents and report.registry_records
    # the ledger's first checkpoint was archive-sealed (SPHINCS+) and the bundle's extends it
    assert (bundle / ARCHIVE_SEAL).exists() and "sealed with SPHINCS+" in report.archive
    assert "archive seal: checkpoint" in ok.stdout
    without = tmp_path / "without-seal"
    shutil.copytree(bundle, without)
    (without / ARCHIVE_SEAL).unlink()
    assert [f.where for f in verify_bundle(without).failures] == [ARCHIVE_SEAL]
    therapy_rows = [r for r in report.rows if r.part == "therapy"]
    assert {r.where.split("[")[0] for r in therapy_rows} >= {"events"}
    assert all(r.coi == coi for r in therapy_rows)

    # a one-byte change in a therapy record's value: the CLI names therapy and position
    lines = (bundle / RECORDS).read_text().splitlines(keepends=True)
    target = next(n for n, line in enumerate(lines) if f'"key":"{coi.encode().hex()}"' in line
                  and '"topic":"events"' in line)
    changed = tmp_path / "changed"
    shutil.copytree(bundle, changed)
    start = sum(len(line) for line in lines[:target])
    flip(changed / RECORDS, start + lines[target].index('"value":"') + 200)
    bad = cli(hub, "audit", "verify", str(changed))
    assert bad.returncode == 1
    position = verify_bundle(bundle).rows[target].where
    assert f"FAILED therapy {coi} {position}" in bad.stderr, bad.stderr

    # the same record without the gatekeeper's seal (as one written straight to the log
    # with broker access would be): named as not accepted by the gatekeeper
    unsealed = tmp_path / "unsealed"
    shutil.copytree(bundle, unsealed)
    checkpoint = verify_bundle(bundle).checkpoint
    assert checkpoint is not None
    size = checkpoint.checkpoint.size
    bundled = BundledRecord.parse(lines[target].rstrip("\n"), size, "test")
    stripped = replace(bundled, record=replace(bundled.record, headers=tuple(
        h for h in bundled.record.headers if h[0] != SEAL_HEADER)))
    (unsealed / RECORDS).write_text("".join(
        [*lines[:target], stripped.line() + "\n", *lines[target + 1:]]))
    report = verify_bundle(unsealed)
    [failure] = [f for f in report.failures if f.where == position]
    assert "UNSEALED" in failure.detail and "not accepted by the gatekeeper" in failure.detail

    # one byte anywhere in the bundle: every file, several places each
    rng = random.Random(16)
    files = sorted(p for p in bundle.rglob("*") if p.is_file() and p.stat().st_size)
    files = [p for p in files if p.parent.name != "events"] + rng.sample(
        [p for p in files if p.parent.name == "events"], 3)
    for path in files:
        size = path.stat().st_size
        for at in sorted({0, size - 1, *rng.sample(range(size), min(size, 4))}):
            copy = tmp_path / f"flip-{path.name}-{at}"
            shutil.copytree(bundle, copy)
            flip(copy / path.relative_to(bundle), at)
            got = verify_bundle(copy)
            assert not got.ok, f"a flipped byte {at} of {path.name} went unnoticed"
            assert got.failures[0].detail, got.failures[0]
            shutil.rmtree(copy)

    # a changed seal head fails the records it seals, by name; a changed checkpoint, itself
    for name, parts in ((SEALS, {"therapy", "registry"}), (CHECKPOINT, {"checkpoint"})):
        size = (bundle / name).stat().st_size
        for at in (size // 3, size // 2):
            copy = tmp_path / f"mid-{name}-{at}"
            shutil.copytree(bundle, copy)
            flip(copy / name, at)
            failures = verify_bundle(copy).failures
            assert {f.part for f in failures} & parts, failures[:3]
            shutil.rmtree(copy)
