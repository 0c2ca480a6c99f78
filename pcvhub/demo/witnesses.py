"""The demo's ledger and its two witnesses (the manufacturer's and the payer's).

After the cohort has run, :func:`witness_the_ledger` creates the run's ledger, starts two
``pcvhub witness run`` processes (each its own folder and keys, trusting the ledger's
two vkeys), runs ``pcvhub ledger run --witnesses`` until it has caught up with the
gatekeeper's outputs, and stops them; :func:`render` shows the last checkpoint's
cosignatures under the summary, flagged when below quorum. Every step is a real process
on loopback, as in a deployment where each witness belongs to another organisation.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pcvhub.demo.clients import DemoError
from pcvhub.demo.deployment import Deployment
from pcvhub.demo.stack import HubProcess, Stack, cli_command
from pcvhub.ledger.cosign import WitnessCount, WitnessKey
from pcvhub.ledger.note import VerifierKey
from pcvhub.ledger.witnessing import WitnessPolicy, read_history

WITNESSES = ("manufacturer", "payer")
_URL = re.compile(r"http://127\.0\.0\.1:[0-9]+")


@dataclass(frozen=True)
class LedgerView:
    """What the summary shows of the ledger: its last checkpoint and who cosigned it."""

    origin: str
    checkpoints: int
    last: WitnessCount | None
    witnesses: int
    folder: Path


class _Lines:
    """A process's stdout, line by line, copied to its log (the process never blocks)."""

    def __init__(self, process: HubProcess) -> None:
        self.process = process
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.proc.stdout is not None
        threading.Thread(target=self._pump, args=(process.proc.stdout,), daemon=True).start()

    def _pump(self, stream) -> None:
        with self.process.log.open("a") as log:
            for raw in stream:
                text = raw.decode(errors="replace").rstrip("\n")
                self._queue.put(text)
                log.write(f"[stdout] {text}\n")
                log.flush()
        self._queue.put(None)

    def until(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise DemoError(f"{self.process.name} did not print {pattern!r} within "
                                f"{timeout:.0f} s; the end of {self.process.log}:\n"
                                f"{self.process.tail()}") from None
            if line is None:
                self.process.check()
                raise DemoError(f"{self.process.name} closed its output; see "
                                f"{self.process.log}")
            if re.search(pattern, line):
                return line


def _run(stack: Stack, deployment: Deployment, name: str, args: list[str]) -> str:
    """A one-shot command; its output (the vkeys it prints) read back from its log."""
    stack.run_to_end(deployment, name, [*cli_command(args[0]), *args[1:]], timeout=120)
    return (deployment.run_dir / "logs" / f"{name}.log").read_text()


def witness_the_ledger(stack: Stack, deployment: Deployment, console: Console,
                       timeout: float = 300.0) -> LedgerView:
    run_dir = deployment.run_dir
    folder = run_dir / "ledger"
    origin = f"{deployment.settings.topic_prefix}.hub.example/ledger"
    with console.status("the ledger and two witnesses (manufacturer, payer) ..."):
        # `ledger init` prints its vkeys on stdout, which run_to_end sends to the log
        out = _run(stack, deployment, "ledger-init", ["ledger", "init", "--origin", origin,
                                                      "--dir", str(folder)])
        vkeys = dict(line.split(" ", 1) for line in out.splitlines()
                     if line.startswith(("vkey ", "mldsa-vkey ")))
        configured, running = [], []
        try:
            for who in WITNESSES:
                home = run_dir / "witnesses" / who
                made = _run(stack, deployment, f"witness-{who}-init", [
                    "witness", "init", "--name", f"{who}.example/witness", "--dir", str(home)])
                keys = dict(line.split(" ", 1) for line in made.splitlines()
                            if line.startswith(("vkey ", "mldsa-vkey ")))
                _run(stack, deployment, f"witness-{who}-trust", [
                    "witness", "trust", "--dir", str(home), "--vkey", vkeys["vkey"],
                    "--mldsa-vkey", vkeys["mldsa-vkey"]])
                process = stack.start(deployment, f"witness-{who}", [
                    *cli_command("witness"), "run", "--dir", str(home), "--port", "0"],
                    stdout=subprocess.PIPE)
                running.append(process)
                url = _URL.search(_Lines(process).until(_URL.pattern, 60))
                assert url is not None
                configured.append(WitnessKey.parse(keys["vkey"], keys["mldsa-vkey"],
                                                   url.group(0)))
            policy = WitnessPolicy(tuple(configured), quorum=len(configured))
            policy.write(run_dir / "witnesses.json")
            ledger = stack.start(deployment, "ledger", [
                *cli_command("ledger"), "run", "--dir", str(folder), "--seconds", "1",
                "--witnesses", str(run_dir / "witnesses.json")], stdout=subprocess.PIPE)
            _Lines(ledger).until(r"^caught up", timeout)
            stack.stop(ledger)  # SIGTERM: it checkpoints (and has cosigned) what is left
        finally:
            for process in running:
                stack.stop(process)
    counts = list(read_history(folder, VerifierKey.parse(vkeys["vkey"]),
                               VerifierKey.parse(vkeys["mldsa-vkey"]), policy))
    return LedgerView(origin, len(counts), counts[-1] if counts else None,
                      len(policy.witnesses), folder)


def render(console: Console, view: LedgerView) -> None:
    last = view.last
    if last is None:
        console.print(f"[bold red]ledger {view.origin}: no checkpoint recorded[/]")
        return
    table = Table(title=f"ledger {view.origin}: last of {view.checkpoints} checkpoints, "
                        f"size {last.checkpoint.size}, root {last.checkpoint.root.hex()[:16]}")
    table.add_column("witness")
    table.add_column("cosigned")
    for cosignature in last.cosigned:
        table.add_row(cosignature.witness, time.strftime(
            "yes, at %Y-%m-%d %H:%M:%S UTC", time.gmtime(cosignature.timestamp)))
    for name, why in last.missing:
        table.add_row(name, f"[bold red]no[/]: {why[:100]}")
    console.print(table)
    verdict = (f"[bold red]BELOW QUORUM[/] ({len(last.cosigned)} of {last.quorum} needed)"
               if last.below_quorum else f"quorum met ({len(last.cosigned)}/{view.witnesses})")
    console.print(f"witnessed: {verdict}; history {view.folder / 'checkpoints.jsonl'}; "
                  f"`pcvhub ledger checkpoints --dir {view.folder} --witnesses "
                  f"{view.folder.parent / 'witnesses.json'}`", highlight=False)
