"""`pcvhub project` as a real process on the real broker.

Given the scripted scenario answered by a real gatekeeper worker (canonical, rejected and
alerts topics), when the runner projects it, then the views show the therapies, analysts
read a published copy while the runner holds the live file, the runner stops cleanly on
SIGTERM, and a rebuild gives the live file's digest. Records that are not envelopes on
the canonical topic are kept aside and the runner carries on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
import typer
from confluent_kafka import Producer
from typer.testing import CliRunner

from pcvhub.cli_projections import register
from pcvhub.log.verify import RawRecord
from pcvhub.projections.digest import digest_file
from pcvhub.projections.store import connect
from pcvhub.streams.sandbox import Sandbox
from pcvhub.topics import partition_for, topic_name, topic_spec

from ..unit.sealing import KafkaSeals, sealed
from ..unit.test_projection_scenario import scripted_log
from ..unit.therapy_builder import DAY_US, T0_US, Hub, TherapyScenario

pytestmark = pytest.mark.kafka

LAUNCHER = ("import typer; from pcvhub.cli_projections import register; "
            "app = typer.Typer(); register(app); app()")
PROGRESS = re.compile(r"projected (\d+) records .*; (\d+) behind")


@pytest.fixture
def hub(kafka, settings, tmp_path):
    isolated = Sandbox.create(settings, kafka.bootstrap_servers, tmp_path)
    yield isolated
    isolated.stop_all()


class RunnerProcess:
    """`pcvhub project` (registered on a fresh Typer app) in its own process group."""

    def __init__(self, sandbox: Sandbox, db: Path, *options: str, name: str = "runner") -> None:
        self.log = sandbox.root / f"{name}.log"
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, "project", "--db", str(db), *options],
                env=dict(sandbox.env, COLUMNS="200"), stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        sandbox.workers.append(self.proc)  # stopped with the sandbox's workers

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def progress(self) -> list[tuple[int, int]]:
        """(records projected by this process, records behind) per progress line."""
        return [(int(m[1]), int(m[2])) for m in PROGRESS.finditer(self.output())]

    def wait_for(self, condition: Callable[[list[tuple[int, int]]], bool],
                 timeout: float) -> list[tuple[int, int]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.progress()
            if condition(lines):
                return lines
            if self.proc.poll() is not None:
                raise AssertionError(f"runner exited with {self.proc.returncode}:\n"
                                     f"{self.output()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"runner did not get there in {timeout:.0f}s:\n"
                             f"{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout)


def caught_up(total: int) -> Callable[[list[tuple[int, int]]], bool]:
    return lambda lines: bool(lines) and lines[-1] == (total, 0)


def cli(sandbox: Sandbox, *args: object) -> str:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, [str(a) for a in args],
                                env={**sandbox.env, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_a_worker_answered_scenario_projected_live_published_and_rebuilt(hub: Sandbox) -> None:
    builder = Hub()
    gatekeeper = hub.install_identities(builder.registrar.issuer.signer,
                                        valid_from_us=T0_US - 365 * DAY_US)
    scripted = scripted_log(builder, gatekeeper)
    worker = hub.start_worker()
    hub.send(scripted.registrations)
    assert hub.wait_answered(len(scripted.registrations), 120, worker) == len(
        scripted.registrations), hub.worker_log()
    hub.send(scripted.ingress)
    answered = len(scripted.registrations) + len(scripted.ingress)
    assert hub.wait_answered(answered, 180, worker) == answered, hub.worker_log()
    total = answered + 2  # and two alerts
    deadline = time.monotonic() + 30
    while hub.count("alerts") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sum(hub.count(t) for t in ("events", "rejected", "alerts")) == total

    live = hub.root / "live.duckdb"
    published = hub.root / "published"
    runner = RunnerProcess(hub, live, "--publish-dir", str(published), "--publish-every", "0.5",
                           "--report-every", "0.5")
    runner.wait_for(caught_up(total), 120)
    copy = published / "operations.duckdb"

    def published_records() -> int:
        """How many log records the latest published copy was made from (0: none yet)."""
        if not copy.exists():
            return 0
        analyst = duckdb.connect(str(copy), read_only=True)  # what an analyst does
        try:
            return analyst.execute("SELECT log_records FROM snapshot_info").fetchone()[0]
        finally:
            analyst.close()

    deadline = time.monotonic() + 30  # a copy is at most --publish-every behind
    while published_records() < total and time.monotonic() < deadline:
        time.sleep(0.2)
    # the analyst reads the published copy while the runner holds the live file
    analyst = duckdb.connect(str(copy), read_only=True)
    try:
        stages = dict(analyst.execute("SELECT stage, count(*) FROM case_status GROUP BY ALL")
                      .fetchall())
    finally:
        analyst.close()
    assert stages == {"FOLLOW_UP": 2, "COLLECTED": 1}
    app = typer.Typer()
    register(app)
    busy = CliRunner().invoke(app, ["projections", "digest", str(live)],
                              env={**hub.env, "COLUMNS": "200"})
    assert busy.exit_code == 1 and "open in another process" in busy.output

    assert runner.stop() == 0, runner.output()
    assert f"stopped after {total} records; 0 behind" in runner.output()

    con = connect(live, read_only=True)
    try:
        a = con.execute("SELECT stage, open_alerts, critical_open_alerts, rejections, events "
                        "FROM case_status WHERE coi = ?", [scripted.coi_a]).fetchone()
        quarantined = con.execute("SELECT status FROM inventory WHERE coi = ? AND dose_id = ?",
                                  [scripted.coi_a, scripted.quarantined_dose]).fetchone()
        denied = con.execute("SELECT status, outstanding_amount FROM billing_claims "
                             "WHERE claim_id = 'CLM-2'").fetchone()
        verified = con.execute("SELECT DISTINCT verification FROM audit_trail").fetchall()
    finally:
        con.close()
    assert a == ("FOLLOW_UP", 1, 1, 4, len(scripted.therapies["A"].log))
    assert quarantined == ("QUARANTINED",)
    assert denied == ("DENIED", 0)
    assert verified == [("VERIFIED",)]  # every record re-verified, refusals and alerts too

    rebuilt = hub.root / "rebuilt.duckdb"
    output = cli(hub, "projections", "rebuild", "--out", rebuilt)
    assert f"rebuilt {rebuilt}: {total} records" in output.replace("\n", "")
    assert digest_file(rebuilt).sha256 == digest_file(live).sha256
    assert f"digest {digest_file(live).sha256}" in output


def test_a_record_that_is_no_envelope_is_kept_aside_and_the_runner_carries_on(
        hub: Sandbox) -> None:
    builder = Hub()
    gatekeeper = builder.deploy_gatekeeper(hub)  # the trust anchor the runner verifies from
    cast = builder.register_cast("k")
    first, second = (TherapyScenario(builder, cast=cast) for _ in range(2))
    canonical = topic_name("events", hub.settings.topic_prefix)
    producer = Producer(hub.admin.producer())
    seals = KafkaSeals(producer, hub.settings.topic_prefix)

    def write(records: list[tuple[bytes, bytes]]) -> None:
        """Straight to the canonical topic, sealed as the gatekeeper seals."""
        partitions = topic_spec("events").partitions
        drafts = [RawRecord.at("events", partition_for(key, partitions), i, key, value)
                  for i, (key, value) in enumerate(records)]
        for record in sealed(gatekeeper, drafts, book=seals):
            producer.produce(canonical, key=record.key, value=record.value,
                             partition=record.partition, headers=list(record.headers))
        assert producer.flush(30) == 0

    write([(e.coi.encode(), e.raw) for e in [*builder.registry_log, *first.full_therapy()]])
    live = hub.root / "live.duckdb"
    runner = RunnerProcess(hub, live, "--publish-every", "0", "--report-every", "0.5")
    before = len(builder.registry_log) + len(first.log)
    runner.wait_for(caught_up(before), 120)
    write([(first.coi.encode(), b"\xc3\x01 torn record")])
    write([(e.coi.encode(), e.raw) for e in second.full_therapy()])
    runner.wait_for(caught_up(before + 1 + len(second.log)), 120)
    assert runner.stop() == 0, runner.output()
    con = connect(live, read_only=True)
    try:
        unreadable = con.execute("SELECT record, error FROM log.unreadable").fetchall()
        therapies = con.execute("SELECT coi, events FROM case_status ORDER BY coi").fetchall()
    finally:
        con.close()
    assert unreadable == [(b"\xc3\x01 torn record", unreadable[0][1])]
    assert "envelope header" in unreadable[0][1]
    assert therapies == sorted([(first.coi, len(first.log)), (second.coi, len(second.log))])


def test_a_deployment_without_topics_is_told_to_create_them(hub: Sandbox,
                                                            tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    env = {**hub.env, "PCVHUB_TOPIC_PREFIX": "nosuchprefix0", "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["project", "--db", str(tmp_path / "x.duckdb"),
                                      "--publish-every", "0"], env=env)
    assert result.exit_code == 1
    said = " ".join(result.output.split())  # as read, not as the console wrapped it
    assert "nosuchprefix0.events" in said and "pcvhub infra up" in said
