"""`pcvhub log check TOPIC` (top floor): read a topic through the one log reader, say what
it admitted and what it quarantined, and why.

For an operator or an auditor who suspects a write that did not come through the
gatekeeper: every record of the topic is decoded and verified from the trust anchor
(``pcvhub.log.verify``); the command prints the counts per reason and the first
quarantined records with their positions. It exits 1 when anything was quarantined, so
a monitoring job can run it.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from pcvhub.config import ConfigError, load_settings
from pcvhub.log.reader import LogReadError, TopicReader, deployment_verifier, read_raw
from pcvhub.topics import TOPICS, Principal, TopicRole

console = Console()

#: topics the hub reads back as events (the ledger's checkpoints are signed notes:
#: `pcvhub ledger verify` checks them)
CHECKABLE = [s.suffix for s in TOPICS if s.role is not TopicRole.LEDGER]


def register(app: typer.Typer) -> None:
    """Add the ``log`` command group to the ``pcvhub`` application."""
    log_app = typer.Typer(help="Read topics back through the one log reader.",
                          no_args_is_help=True)
    app.add_typer(log_app, name="log")

    @log_app.command("check")
    def check(topic: str = typer.Argument(..., help=f"One of {', '.join(CHECKABLE)}."),
              show: int = typer.Option(10, help="How many quarantined records to list.")
              ) -> None:
        """Verify every record of TOPIC; print what was admitted and what quarantined."""
        if topic not in CHECKABLE:
            console.print(f"[bold red]error:[/] no topic {topic!r} to check; one of "
                          f"{', '.join(CHECKABLE)}")
            raise typer.Exit(code=2)
        try:
            settings = load_settings().as_principal(Principal.READER)
            verifier = deployment_verifier(settings, f"log check {topic}")
        except (ConfigError, FileNotFoundError) as exc:
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from None
        try:
            with TopicReader(settings, [topic]) as reader:
                total = sum(reader.ends().values())
            columns = (TextColumn("verifying {task.description}"), BarColumn(),
                       MofNCompleteColumn())
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task(topic, total=total)
                for record in read_raw(settings, topic):
                    verifier.admit(record)
                    progress.advance(task)
        except LogReadError as exc:
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from None
        finally:
            verifier.close()
        report = verifier.report
        console.print(f"{topic}: {report.admitted + report.quarantined} records read, "
                      f"{report.admitted} admitted, {report.quarantined} quarantined")
        if not report.quarantined:
            return
        counts = Table(title="quarantined, by reason")
        counts.add_column("reason code")
        counts.add_column("records", justify="right")
        for code, n in report.by_code.most_common():
            counts.add_row(code, str(n))
        console.print(counts)
        first = Table(title=f"first {min(show, len(report.first))} quarantined")
        for column in ("position", "code", "reason"):
            first.add_column(column, overflow="fold")
        for q in report.first[:show]:
            first.add_row(str(q.position), q.code, q.reason)
        console.print(first)
        raise typer.Exit(code=1)
