"""The end of the demo: a summary a person reads in ten seconds.

The figures come from the DuckDB projections (what an analyst would query): therapies and
their stage, vein-to-vein times, doses by status, claims paid and outstanding. The faults
come from the hub's own answers, read by the demo from the rejected topic, the ACKs and
the drop folders' result files, each with the reason the hub gave.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import duckdb
from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from pcvhub.demo.attacker import Attempt
from pcvhub.demo.clients import DemoError
from pcvhub.demo.cohort import Fault
from pcvhub.demo.driver import Accounting, CaughtFault, Drive, Receivables
from pcvhub.projections.store import connect


@dataclass
class Figures:
    """What the projections say at the end of the run."""

    therapies: int
    completed: int
    median_vein_to_vein_days: float | None
    doses: list[tuple[str, int]]
    claims: list[tuple[str, int, Decimal, Decimal, Decimal]]  # status, n, billed, paid, owed
    rejections: int
    open_alerts: list[tuple[str, str, int]]  # severity, code, count
    events: int
    cards: int  # patients' cards a clinician bound to a therapy
    consents: dict[str, int]  # grants by whose signature they carry (the consents view)

    @property
    def paid(self) -> Decimal:
        return sum((c[3] for c in self.claims), Decimal(0))

    @property
    def outstanding(self) -> Decimal:
        return sum((c[4] for c in self.claims), Decimal(0))

    def claims_with(self, *statuses: str) -> int:
        return sum(c[1] for c in self.claims if c[0] in statuses)


def read_figures(path: Path) -> Figures:
    """Query the projection file (read-only; no runner may hold it)."""
    con = connect(path, read_only=True)
    try:
        def rows(sql: str) -> list[tuple]:
            try:
                return con.execute(sql).fetchall()
            except duckdb.Error as exc:
                raise DemoError(f"the projection file {path} cannot answer the summary's "
                                f"query ({exc}); was it built by this version of pcvhub?"
                                ) from exc

        (therapies, completed), = rows(
            "SELECT count(*), count(*) FILTER (WHERE stage = 'FOLLOW_UP' AND doses_usable = 0) "
            "FROM case_status")
        (median,), = rows("SELECT median(vein_to_vein_days) FROM turnaround")
        doses = rows("SELECT status, count(*) FROM inventory GROUP BY status "
                     "ORDER BY count(*) DESC, status")
        claims = rows("SELECT status, count(*), sum(amount), sum(paid_amount), "
                      "sum(outstanding_amount) FROM billing_claims GROUP BY status "
                      "ORDER BY status")
        (rejections,), = rows("SELECT count(*) FROM rejections")
        open_alerts = rows("SELECT severity, code, count(*) FROM alerts WHERE status <> 'RESOLVED' "
                           "GROUP BY ALL ORDER BY severity, code")
        (events,), = rows("SELECT count(*) FROM log.envelopes WHERE log_topic = 'events'")
        (cards,), = rows("SELECT count(*) FROM log.patient_credential_issued "
                         "WHERE log_topic = 'events'")
        consents = dict(rows("SELECT signed_by, count(*) FROM consents GROUP BY signed_by"))
    finally:
        con.close()
    return Figures(therapies, completed, median, doses,
                   [(s, n, Decimal(b or 0), Decimal(p or 0), Decimal(o or 0))
                    for s, n, b, p, o in claims],
                   rejections, open_alerts, events, cards, consents)


@dataclass
class Report:
    """Everything the summary shows, and whether the run is what it should be."""

    patients: int
    figures: Figures
    drive: Drive
    receivables: Receivables
    accounting: Accounting
    faults: list[CaughtFault]
    wall_s: float
    accepted: int  # events the demo saw accepted on the canonical log
    attacks: list[Attempt]  # what the broker answered the attacker
    where: dict[str, str] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        found = [f"therapy {r.patient.tag} ({r.coi or 'not enrolled'}) stopped: {r.broken}"
                 for r in self.drive.broken]
        found += [f"fault not caught: {f.fault} ({f.patient}): {f.caught_by} {f.code}"
                  for f in self.faults if not f.caught]
        found += [f"unexplained refusal: {r}" for r in self.accounting.unexplained_refusals]
        found += [f"unexplained alert: {a}" for a in self.accounting.unexplained_alerts]
        found += [f"attack not refused by the broker: {a.attack} ({a.answer})"
                  for a in self.attacks if not a.refused]
        if self.figures.completed != self.patients:
            found.append(f"{self.figures.completed} of {self.patients} therapies completed")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems


def _money(amount: Decimal) -> str:
    return f"${amount:,.0f}"


def render(console: Console, report: Report) -> None:
    f = report.figures
    median = ("—" if f.median_vein_to_vein_days is None
              else f"{f.median_vein_to_vein_days:.1f} days")
    stalled = sum(fault.fault is Fault.STALLED for fault in report.faults)
    headline = (f"[bold]{f.completed} of {report.patients} therapies completed[/] "
                f"(+{stalled} stalled on purpose) · median "
                f"vein-to-vein [bold]{median}[/] · claims paid [bold]{_money(f.paid)}[/] "
                f"({f.claims_with('PAID')}), outstanding [bold]{_money(f.outstanding)}[/] "
                f"({sum(c[1] for c in f.claims if c[4] > 0)})")

    consents = (f"patients' cards bound at enrolment: [bold]{f.cards}[/] · consents signed by "
                f"the patient's own card: [bold]{f.consents.get('PATIENT', 0)}[/], witnessed "
                f"for a patient who could not sign: {f.consents.get('WITNESSED', 0)}, the "
                f"EMR's record of a treatment form: {f.consents.get('HOSPITAL', 0)}")

    doses = Table(title="doses by status", title_justify="left", box=None, pad_edge=False)
    doses.add_column("status")
    doses.add_column("doses", justify="right")
    for status, count in f.doses:
        doses.add_row(status.lower(), str(count))

    claims = Table(title="claims (USD)", title_justify="left", box=None, pad_edge=False)
    for column in ("status", "claims", "billed", "paid", "outstanding"):
        claims.add_column(column, justify="left" if column == "status" else "right")
    for status, count, billed, paid, owed in f.claims:
        claims.add_row(status.lower(), str(count), _money(billed), _money(paid), _money(owed))

    caught = sum(fault.caught for fault in report.faults)
    wide = console.width >= 140  # room to say what was injected, too
    faults = Table(title=f"faults injected and caught: {caught} of {len(report.faults)}",
                   title_justify="left", expand=True, box=box.SIMPLE_HEAD, pad_edge=False)
    faults.add_column("", width=1)
    faults.add_column("fault", ratio=7 if wide else 5)
    faults.add_column("", no_wrap=True)  # the therapy
    faults.add_column("caught by", ratio=4)
    faults.add_column("the hub's reason", ratio=12 if wide else 9, overflow="fold")
    for fault in sorted(report.faults, key=lambda x: (list(Fault).index(x.fault), x.patient)):
        alerted = fault.event_id in report.accounting.fault_alerts
        what = str(fault.fault) + (f"\n[dim]{escape(fault.injected)}[/]" if wide else "")
        faults.add_row("[green]✔[/]" if fault.caught else "[red]✘[/]", what, fault.patient,
                       escape(fault.caught_by + (" + alert" if alerted else "")),
                       escape(f"{fault.code}: "
                              f"{_first_sentence(fault.reason, 200 if wide else 100)}"))

    attacks = Table(title=f"attacks on the broker refused: "
                          f"{sum(x.refused for x in report.attacks)} of {len(report.attacks)}",
                    title_justify="left", expand=True, box=box.SIMPLE_HEAD, pad_edge=False)
    for column, ratio in (("", None), ("attack", 6), ("as principal", 2), ("topic", 3),
                          ("refused by the broker's ACLs: its answer", 5)):
        attacks.add_column(column, ratio=ratio, width=1 if ratio is None else None)
    for x in report.attacks:
        attacks.add_row("[green]✔[/]" if x.refused else "[red]✘[/]", escape(x.attack),
                        x.principal, x.topic, escape(x.answer))

    a = report.accounting
    explained = (f"{a.refusals} refusals and {a.alerts} alerts on the log, "
                 f"{len(a.unexplained_refusals)} refusals and {len(a.unexplained_alerts)} "
                 "alerts unexplained by an injected fault")
    rate = report.accepted / report.wall_s if report.wall_s else 0.0
    timing = (f"wall time {report.wall_s:.0f} s · {report.accepted} events accepted "
              f"({rate:.1f} events/s end to end; the cohort itself took "
              f"{report.drive.seconds:.0f} s, {report.accepted / max(report.drive.seconds, 1):.1f}"
              " events/s) · 837P: "
              f"{report.receivables.billed} claims billed, 835: {report.receivables.paid} paid")
    where = Table.grid(padding=(0, 2))
    where.add_column(style="bold")
    where.add_column(overflow="fold")
    for label, value in report.where.items():
        where.add_row(label, escape(value))

    side = Table.grid(padding=(0, 6))
    side.add_row(doses, claims)
    style = "green" if report.ok else "red"
    body: list = [headline, consents, "", side, "", faults, attacks,
                  f"[{'green' if not a.unexplained_refusals else 'red'}]{explained}[/]",
                  timing, "", where]
    for problem in report.problems:
        body.append(f"[red]problem:[/] {escape(problem)}")
    console.print(Panel(Group(*body), title="pcvhub demo: summary", border_style=style))


_UUID = re.compile(r"\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def _first_sentence(reason: str, limit: int = 200) -> str:
    """A reason, event ids shortened, without its remedy (after '; '), short enough for
    one table cell."""
    text = _UUID.sub(r"\1…", reason).split("; ")[0]
    return text if len(text) <= limit else text[:limit - 1] + "…"
