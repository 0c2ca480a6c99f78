"""The demo's offline audit: one therapy's bundle exported, then verified with no broker.

After the ledger has caught up (``witnesses.witness_the_ledger``), :func:`export_and_verify`
runs ``pcvhub audit export`` for one completed therapy (one that met a fault, if any did,
so its refusals are in the bundle too) and checks the bundle with ``verify_bundle``, the
code of ``pcvhub audit verify``, which opens no connection. :func:`render` prints the
latest checkpoint and the result under the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from pcvhub.audit.bundle import BundleReport, verify_bundle
from pcvhub.demo.deployment import Deployment
from pcvhub.demo.driver import Drive
from pcvhub.demo.stack import Stack, cli_command
from pcvhub.demo.witnesses import LedgerView


@dataclass(frozen=True)
class AuditView:
    coi: str
    bundle: Path
    report: BundleReport

    @property
    def ok(self) -> bool:
        return self.report.ok


def export_and_verify(stack: Stack, deployment: Deployment, drive: Drive,
                      ledger: LedgerView, console: Console) -> AuditView:
    done = [r for r in drive.runs if r.finished and r.broken is None and r.coi]
    run = next((r for r in done if r.patient.faults), done[0] if done else drive.runs[0])
    bundle = deployment.run_dir / "audit" / run.coi
    with console.status(f"exporting the audit bundle of {run.coi}, verifying it offline ..."):
        stack.run_to_end(deployment, "audit-export", [
            *cli_command("audit"), "export", run.coi, "--out", str(bundle),
            "--ledger", str(ledger.folder)], timeout=300)
        report = verify_bundle(bundle)
    return AuditView(run.coi, bundle, report)


def render(console: Console, view: AuditView) -> None:
    report, head = view.report, view.report.checkpoint
    if head is not None:
        c = head.checkpoint
        console.print(f"latest checkpoint: {c.origin} size {c.size} root {c.root.hex()}",
                      highlight=False)
    therapy = sum(1 for r in report.rows if r.part == "therapy" and r.ok)
    if view.ok:
        console.print(f"offline audit of {view.coi}: [bold green]verified[/] ({therapy} "
                      f"records, {len(report.consents)} consent events, "
                      f"{report.registry_records} registry records, with no broker); "
                      f"`pcvhub audit verify {view.bundle}`", highlight=False)
    else:
        console.print(f"offline audit of {view.coi}: [bold red]FAILED[/] "
                      f"{report.failures[0]}; `pcvhub audit verify {view.bundle}`",
                      highlight=False)
