"""The running hub of the demo: broker, gatekeeper, projections and connectors.

Each part runs the way an operator runs it, as its own process with its own log under
the run folder: ``pcvhub worker`` (the gatekeeper), ``pcvhub project`` (the DuckDB
projections) and ``pcvhub serve`` (HL7 / MLLP, FHIR and the MES drop folder, on free
ports it prints). The payer's remittance gateway has no command of its own yet, so it
runs inside the demo process (``PayerGateway``). The broker is started only if none
answers, and stopped at the end only if the demo started it.

Every process is started in its own session and stopped by its process group: SIGTERM
(each finishes what it holds: the worker its batch, the projection runner its
transaction), then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from confluent_kafka.admin import AdminClient
from rich.console import Console

from pcvhub.config import ConfigError, Settings
from pcvhub.connectors.payer import RemittanceDrop
from pcvhub.demo.clients import DemoError
from pcvhub.demo.deployment import CONNECTOR, GATEWAY, MES, PAYER, PLANT, SITE, Deployment
from pcvhub.infra.kafka import LocalKafka
from pcvhub.topics import Principal

GRACE_S = 30.0


def broker_answers(settings: Settings, timeout: float = 3.0) -> bool:
    """True if a Kafka cluster answers metadata at the configured bootstrap servers, to
    the admin (no credentials yet: nothing of ours answers)."""
    try:
        admin = AdminClient(settings.as_principal(Principal.ADMIN).librdkafka(log_level=0))
    except ConfigError:
        return False
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:  # noqa: BLE001 - not answering is what we ask about
        return False


def cli_command(name: str) -> list[str]:
    """``python -m pcvhub.cli NAME``: each part of the hub runs as its own process."""
    return [sys.executable, "-m", "pcvhub.cli", name]


@dataclass
class HubProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise DemoError(f"{self.name} exited with {self.proc.returncode}; the end of "
                            f"{self.log}:\n{self.tail()}")


@dataclass(frozen=True)
class Endpoints:
    """Where ``pcvhub serve`` listens (as it printed them)."""

    mllp: tuple[str, int]
    fhir_url: str
    drop: Path


@dataclass
class Stack:
    console: Console
    base: Settings  # the broker's settings (its data folder holds the broker)
    processes: list[HubProcess] = field(default_factory=list)
    started_broker: bool = False
    gateway: PayerGateway | None = None

    # -- the broker -----------------------------------------------------------------------

    def broker(self) -> str:
        """The bootstrap servers; starts (and installs, the first time) the local broker
        if nothing answers there."""
        if broker_answers(self.base):
            return self.base.bootstrap_servers
        kafka = LocalKafka(self.base, brokers=1)
        with self.console.status("starting the local Apache Kafka broker (the first time, "
                                 "Maven fetches it) ..."):
            bootstrap = kafka.up()
        self.started_broker = True
        return bootstrap

    def stop_broker(self) -> None:
        if self.started_broker:
            LocalKafka(self.base, brokers=1).down()
            self.started_broker = False

    # -- hub processes ------------------------------------------------------------------------

    def start(self, deployment: Deployment, name: str, command: list[str],
              stdout: int | None = None) -> HubProcess:
        logs = deployment.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        workdir = deployment.run_dir / name
        workdir.mkdir(exist_ok=True)
        log = logs / f"{name}.log"
        out: IO[bytes] = log.open("ab")
        proc = subprocess.Popen(command, cwd=workdir, env={**os.environ, **deployment.env},
                                stdout=stdout if stdout is not None else out,
                                stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        started = HubProcess(name, proc, log)
        self.processes.append(started)
        return started

    def start_hub(self, deployment: Deployment) -> tuple[HubProcess, HubProcess, HubProcess]:
        """The gatekeeper, the projection runner and the connectors, started together."""
        prefix = deployment.settings.topic_prefix
        worker = self.start(deployment, "worker", [*cli_command("worker"), "--app-id",
                                                   f"{prefix}-gatekeeper"])
        projections = self.start(deployment, "project", [
            *cli_command("project"), "--db", str(deployment.projection_file),
            "--publish-every", "0", "--report-every", "5"])
        drop = deployment.run_dir / "mes-drop"
        serve = self.start(deployment, "serve", [
            *cli_command("serve"), "--site", SITE, "--actor", CONNECTOR, "--mllp-port", "0",
            "--http-port", "0", "--drop", str(drop), "--drop-actor", MES, "--drop-site", PLANT],
            stdout=subprocess.PIPE)
        return worker, projections, serve

    def endpoints(self, serve: HubProcess, timeout: float = 180.0) -> Endpoints:
        """Read the three lines ``pcvhub serve`` prints once each listener is up."""
        lines: queue.Queue[str | None] = queue.Queue()
        assert serve.proc.stdout is not None
        stream = serve.proc.stdout

        def pump() -> None:  # keep reading, so serve never blocks on a full pipe
            with serve.log.open("a") as log:
                for raw in stream:
                    text = raw.decode(errors="replace").strip()
                    lines.put(text)
                    log.write(f"[stdout] {text}\n")
            lines.put(None)

        threading.Thread(target=pump, name="serve-stdout", daemon=True).start()
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while len(found) < 3:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise DemoError(f"pcvhub serve did not announce its listeners within "
                                f"{timeout:.0f} s; the end of {serve.log}:\n{serve.tail()}"
                                ) from None
            if line is None:
                serve.check()
                raise DemoError(f"pcvhub serve closed its output; see {serve.log}")
            kind, _, value = line.partition(" ")
            if kind in ("mllp", "http", "drop"):
                found[kind] = value
        host, port = found["mllp"].rsplit(":", 1)
        return Endpoints((host, int(port)), found["http"], Path(found["drop"]))

    def stop(self, process: HubProcess) -> None:
        if process.proc.poll() is None:
            try:
                os.killpg(process.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                process.proc.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.proc.pid, signal.SIGKILL)
                process.proc.wait(10)
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        if self.gateway is not None:
            self.gateway.close()
            self.gateway = None
        for process in reversed(list(self.processes)):
            self.stop(process)

    def run_to_end(self, deployment: Deployment, name: str, command: list[str],
                   timeout: float = 600.0) -> None:
        """Run a command to completion (e.g. a projection catch-up); DemoError if it fails."""
        process = self.start(deployment, name, command)
        try:
            process.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(process)
            raise DemoError(f"{name} did not finish within {timeout:.0f} s; see "
                            f"{process.log}") from None
        self.processes.remove(process)
        if process.proc.returncode != 0:
            raise DemoError(f"{name} failed ({process.proc.returncode}); the end of "
                            f"{process.log}:\n{process.tail()}")


class PayerGateway:
    """The payer connector's 835 inbox (``RemittanceDrop``) on its own event loop."""

    def __init__(self, deployment: Deployment, inbox: Path) -> None:
        self.deployment = deployment
        self.inbox = inbox
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="payer-gateway", daemon=True)

    def start(self, timeout: float = 120.0) -> PayerGateway:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        if not self.ready.wait(timeout) or self.error is not None:
            raise DemoError(f"the payer gateway did not start: {self.error!r}")
        return self

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start() or close()
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        d = self.deployment
        await RemittanceDrop.serve(d.settings, self.inbox, self._stop, actor_id=GATEWAY,
                                   site_id=PAYER.payer_id, passphrase=d.passphrase.encode(),
                                   ready=self.ready.set)

    def close(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(GRACE_S)
