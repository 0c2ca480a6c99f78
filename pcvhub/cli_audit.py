"""`pcvhub audit ...` (top floor): export one therapy's bundle, verify a bundle offline.

``export`` reads the broker and the ledger folder (``pcvhub.audit.export``); ``verify``
needs neither, only the bundle (``pcvhub.audit.bundle.verify_bundle``), and exits 1 naming
the first record (therapy, position, what failed) if anything does not verify.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pcvhub.audit.bundle import CHECKPOINT, BundleError, BundleReport, verify_bundle
from pcvhub.config import ConfigError, load_settings
from pcvhub.ledger.errors import LedgerError
from pcvhub.log.reader import LogReadError
from pcvhub.times import utc_iso
from pcvhub.topics import Principal


def register(app: typer.Typer) -> None:
    """Add the ``audit`` command group to the ``pcvhub`` application."""
    audit_app = typer.Typer(help="Offline audit bundles of one therapy.", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @audit_app.command("export")
    def export_command(
            coi: str = typer.Argument(..., help="The therapy's chain-of-identity id."),
            out: Path = typer.Option(..., "--out", help="The bundle folder to write (new)."),
            ledger: Path | None = typer.Option(None, help="The ledger folder (default: "
                                                          "<data_dir>/ledger)."),
            wait: float = typer.Option(30.0, help="Wait this long for a checkpoint that "
                                                  "covers every record.")) -> None:
        """Write the therapy's records, their ledger proofs, the checkpoint, the seals, the
        registry chain, the trust anchor and the .avsc files into BUNDLE."""
        from pcvhub.audit.export import export

        try:
            settings = load_settings().as_principal(Principal.READER)
            done = export(settings, coi, out, ledger, wait)
        except (BundleError, LedgerError, ConfigError, LogReadError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(code=1) from None
        print(f"exported {done.records} records ({done.therapy_records} of {coi}, the rest "
              f"the registry chain), {done.heads} seal heads, proved against checkpoint "
              f"size {done.size} root {done.root.hex()} into {done.out}"
              + (f"; {done.missing} logged record(s) MISSING from the broker"
                 if done.missing else ""))

    @audit_app.command("verify")
    def verify_command(
            bundle: Path = typer.Argument(..., help="A bundle folder (`audit export`)."),
            anchor: Path | None = typer.Option(None, help="Pin the trust anchor: the "
                                                          "deployment's trust-anchor.json."),
            against: list[Path] = typer.Option([], help="Another checkpoint of the log (a "
                                                        "file, or a bundle folder): one of "
                                                        "the same size with another root is "
                                                        "a split view. Repeatable."),
            registry: bool = typer.Option(False, help="List every registry record too.")
            ) -> None:
        """Verify BUNDLE with no broker and no network; exit 1 naming what failed."""
        try:
            others = [(p / CHECKPOINT if p.is_dir() else p).read_bytes() for p in against]
        except OSError as exc:
            print(f"error: --against: {exc}", file=sys.stderr)
            raise typer.Exit(code=2) from None
        report = verify_bundle(bundle, anchor, others)
        render(Console(), report, registry)
        if not report.ok:
            first = report.failures[0]
            print(f"FAILED {first}", file=sys.stderr)
            raise typer.Exit(code=1)


def _time(us: int | None) -> str:
    return "" if us is None else utc_iso(us)[:19].replace("T", " ")


def render(console: Console, report: BundleReport, registry: bool = False) -> None:
    """The verification as tables: the therapy's records, its consent history, failures."""
    head = report.checkpoint
    console.print(f"therapy {report.coi}; trust anchor sha256 {report.anchor_sha256[:16]}...",
                  highlight=False)
    if head is not None:
        c = head.checkpoint
        console.print(f"checkpoint {c.origin} size {c.size} root {c.root.hex()} (Ed25519 and "
                      "ML-DSA-44 lines verified)", highlight=False)
    table = Table(title=f"records of {report.coi}")
    for column in ("position", "event", "occurred (UTC)", "signer", "result"):
        table.add_column(column)
    for row in report.rows:
        if row.part == "registry" and row.ok and not registry:
            continue
        result = ("[green]OK[/] " if row.ok else "[bold red]FAILED[/] ") + escape(row.detail)
        table.add_row(row.where, row.what, _time(row.occurred_at_us), row.signer, result)
    console.print(table)
    if report.archive:
        console.print(f"archive seal: {report.archive}", highlight=False)
    console.print(f"registry chain: {report.registry_records} record(s) verified (the keys "
                  "and actors that signed)", highlight=False)
    if report.consents:
        consents = Table(title="consent history (the patient's own signature shows as "
                               "PATIENT)")
        for column in ("occurred (UTC)", "event", "scope", "signed by", "signer", "verified"):
            consents.add_column(column)
        for line in report.consents:
            consents.add_row(_time(line.occurred_at_us), line.event_type, line.scope,
                             line.signed_by, line.signer,
                             "[green]yes[/]" if line.ok else
                             f"[bold red]NO[/] {escape(line.detail[:80])}")
        console.print(consents)
    failures = report.failures
    if failures:
        console.print(f"[bold red]{len(failures)} check(s) FAILED[/]; the first: "
                      f"{escape(str(failures[0]))}", highlight=False)
    else:
        console.print("[bold green]bundle verified[/]: every record signed, sealed by the "
                      "gatekeeper, on its hash chain and in the ledger", highlight=False)
