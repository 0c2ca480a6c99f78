"""`pcvhub demo` from start to summary (see :func:`run`)."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from pathlib import Path

from confluent_kafka import KafkaException
from rich.console import Console

from pcvhub.clock import SimulationClock
from pcvhub.config import Settings, load_settings
from pcvhub.connectors.writer import IngressWriter
from pcvhub.demo import attacker, audit_step, vault_step, witnesses
from pcvhub.demo.clients import DemoError, DropFolder, LogWatch
from pcvhub.demo.cohort import build_cohort
from pcvhub.demo.deployment import Deployment, forget_previous_run, prepare, wait_for_topics
from pcvhub.demo.driver import (
    HANDOFF_S,
    Receivables,
    World,
    account,
    cohort_start_us,
    drive_cohort,
    issue_wallets,
    settle_receivables,
)
from pcvhub.demo.stack import PayerGateway, Stack, cli_command
from pcvhub.demo.summary import Report, read_figures, render
from pcvhub.infra.topics_admin import TopicSetupError, deploy
from pcvhub.log.reader import read_verified
from pcvhub.log.verify import VerifiedRecord
from pcvhub.trust.issuer import IssuedEvent
from pcvhub.trust.keys import KeyStoreError


def run(console: Console, patients: int = 50, keep_running: bool = False, *,
        settings: Settings | None = None, data_dir: Path | None = None,
        topic_prefix: str | None = None) -> int:
    """Start the hub, drive the cohort through it, print the summary; 0 if all is well.

    :param settings: where the broker is (default: ``load_settings()``); a broker that does
        not answer there is started (and installed, the first time).
    :param data_dir: the demo's folder (default ``<data_dir>/demo``, i.e. ``.pcvhub/demo``).
    :param topic_prefix: this run's topics (default ``pcvhub-demo-<time>``).
    :param keep_running: after the summary, keep the hub and the dashboard running until
        Ctrl-C; otherwise stop everything the demo started.
    """
    began = time.monotonic()
    base = settings or load_settings()
    folder = Path(data_dir) if data_dir is not None else base.data_dir / "demo"
    prefix = topic_prefix or time.strftime("pcvhub-demo-%Y%m%d-%H%M%S")
    cohort = build_cohort(patients)
    start_us = cohort_start_us(cohort)
    console.rule("[bold]pcvhub demo")
    console.print(f"{patients} patient(s) over {cohort.days} simulated days; "
                  f"{sum(len(p.faults) for p in cohort.therapies)} injected faults (one "
                  "of them a referral that stalls at the lab); "
                  f"topics {prefix}.*; data in {folder.resolve()}", highlight=False)
    stack = Stack(console, base)
    watch: LogWatch | None = None
    world: World | None = None
    quiet = _log_to_file(folder / "demo.log")
    try:
        base = dataclasses.replace(base, bootstrap_servers=stack.broker())
        with console.status("preparing the deployment: keys, trust anchor, CA, topics ..."):
            forget_previous_run(base, folder, prefix)
            deployment = prepare(base, folder, prefix, start_us)
            deploy(deployment.settings, brokers=1)
            wait_for_topics(deployment.settings)
        worker, projections, serve = stack.start_hub(deployment)
        console.print(f"started pcvhub worker (pid {worker.proc.pid}), pcvhub project "
                      f"(pid {projections.proc.pid}), pcvhub serve (pid {serve.proc.pid}); "
                      f"logs in {deployment.run_dir / 'logs'}", highlight=False)
        watch = LogWatch(deployment.settings).start()
        wallets = issue_wallets(deployment, cohort)  # the patients' cards: registered too
        registrations = deployment.hub.registry_log
        with console.status(f"gatekeeper starting; registering {len(registrations)} actors "
                            "on the registry chain ..."):
            writer = IngressWriter(deployment.settings, "direct")
            try:
                writer.write([IssuedEvent(e.envelope, e.raw) for e in registrations])
            finally:
                writer.close()
            try:
                answers = watch.wait([e.event_id for e in registrations], timeout=240)
            except DemoError:
                worker.check()
                raise
            refused = [a for a in answers.values() if not a.accepted]
            if refused:
                raise DemoError(f"the gatekeeper refused a registration: {refused[0].code}: "
                                f"{refused[0].reason}")
            registered_at = time.monotonic()
        attacks = attacker.play(deployment.settings, deployment.hub.registry_case.head)
        with console.status("connectors starting (HL7 / MLLP, FHIR, MES drop, payer) ..."):
            endpoints = stack.endpoints(serve)
            inbox = deployment.run_dir / "payer-inbox"
            stack.gateway = PayerGateway(deployment, inbox).start()
            # the listeners check callers against the registry they fold from the log
            time.sleep(max(0.0, registered_at + HANDOFF_S - time.monotonic()))
        console.print(f"mllp {endpoints.mllp[0]}:{endpoints.mllp[1]} · fhir "
                      f"{endpoints.fhir_url} · MES drop {endpoints.drop} · payer inbox {inbox}",
                      highlight=False)
        world = World(deployment, cohort, start_us, watch, endpoints.mllp, endpoints.fhir_url,
                      DropFolder(endpoints.drop), DropFolder(inbox),
                      deployment.run_dir / "claims-outbox", wallets=wallets)
        drive = drive_cohort(world, console)
        receivables = settle_receivables(world, drive, console)
        genome_vault = vault_step.play(world, drive, console)
        hl7_ids = [o.event_id for o in read_verified(watch.settings, "ingress.hl7",
                                                     watch.verifier)
                   if isinstance(o, VerifiedRecord)]
        accounting = account(world, hl7_ids)
        ledger = witnesses.witness_the_ledger(stack, deployment, console)
        audit = audit_step.export_and_verify(stack, deployment, drive, ledger, console)
        with console.status("projecting the log into DuckDB ..."):
            stack.stop(projections)  # one writer per file: finish with a catch-up run
            stack.run_to_end(deployment, "project-catch-up", [
                *cli_command("project"), "--db", str(deployment.projection_file),
                "--until-end", "--publish-every", "0"])
            figures = read_figures(deployment.projection_file)
        report = Report(patients, figures, drive, receivables, accounting, world.faults,
                        time.monotonic() - began, watch.accepted, attacks,
                        where=_where(deployment, receivables, keep_running, world))
        if keep_running:
            report.where["dashboard"] = _dashboard(deployment, world)
            report.where["projections"] = ("the runner stays stopped while the dashboard reads "
                                           "the file (DuckDB: one writer, no reader beside it)")
        render(console, report)
        witnesses.render(console, ledger)
        audit_step.render(console, audit)
        vault_step.render(console, genome_vault)
        if keep_running:
            _wait_for_interrupt(console)
        return 0 if report.ok and genome_vault.ok and audit.ok else 1
    except (DemoError, KeyStoreError, TopicSetupError, KafkaException) as exc:
        console.print(f"[bold red]demo failed:[/] {exc}", highlight=False)
        return 1
    finally:
        if world is not None:
            world.close()
        if watch is not None:
            watch.stop()
        stack.stop_all()
        stack.stop_broker()
        quiet()


def _where(d: Deployment, receivables: Receivables, keep_running: bool,
           world: World) -> dict[str, str]:
    env = f"PCVHUB_DATA_DIR={d.data_dir} PCVHUB_TOPIC_PREFIX={d.settings.topic_prefix}"
    faulty = next((f.coi for f in world.faults if f.coi), "<COI>")
    where = {
        "DuckDB": f"{d.projection_file}  (duckdb -readonly {d.projection_file})",
        "audit a therapy": f"{env} pcvhub projections audit {faulty}",
        "837P / 835": f"{receivables.x12_files[0] if receivables.x12_files else '-'} · "
                      f"{receivables.remittance or '-'}",
        "logs": str(d.run_dir / "logs"),
    }
    if not keep_running:
        where["dashboard"] = (f"pcvhub dashboard --db {d.projection_file}  (or rerun with "
                              "--keep-running)")
    return where


def _dashboard(deployment: Deployment, world: World) -> str:
    """Serve the dashboard of the finished projection file; its URL and a faulty therapy.
    Alert ages count on the run's simulation clock, as the gatekeeper raised them."""
    from pcvhub.web import serve_dashboard

    url = serve_dashboard(deployment.projection_file,
                          clock=SimulationClock(deployment.data_dir))
    faulty = next((f.coi for f in world.faults if f.coi), None)
    return url + (f"  (a therapy with a caught fault: {url}/therapies/{faulty})" if faulty
                  else "")


def _log_to_file(path: Path):
    """Send the in-process connectors' log lines to a file instead of the summary screen;
    returns the undo."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("pcvhub")
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.propagate = propagate
        handler.close()

    return undo


def _wait_for_interrupt(console: Console) -> None:
    console.print("the hub keeps running: Ctrl-C stops it", highlight=False)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set())
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
