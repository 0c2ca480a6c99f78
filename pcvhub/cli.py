"""The `pcvhub` command line (top floor: composes the floors below, nothing imports it)."""

from __future__ import annotations

import sys
import time

import typer
from rich.console import Console
from rich.table import Table

from pcvhub.cli_audit import register as register_audit
from pcvhub.cli_keys import keys_app
from pcvhub.cli_ledger import register as register_ledger
from pcvhub.cli_log import register as register_log
from pcvhub.cli_mpc import register as register_mpc
from pcvhub.cli_projections import register as register_projections
from pcvhub.cli_serve import register as register_serve
from pcvhub.cli_vault import register as register_vault
from pcvhub.cli_web import register as register_web
from pcvhub.cli_witness import register as register_witness
from pcvhub.config import ConfigError, load_settings
from pcvhub.infra.kafka import InfraError, LocalKafka

app = typer.Typer(help="pcvhub: the signed, event-sourced hub for personalized cancer vaccines.",
                  no_args_is_help=True)
infra_app = typer.Typer(help="Run a local Apache Kafka (KRaft) on loopback.", no_args_is_help=True)
app.add_typer(infra_app, name="infra")
app.add_typer(keys_app, name="keys")
register_projections(app)
register_audit(app)
register_log(app)
register_ledger(app)
register_mpc(app)
register_serve(app)
register_vault(app)
register_web(app)
register_witness(app)
schemas_app = typer.Typer(help="The Avro event catalog and its released versions.",
                          no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")

console = Console()


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=1)


def _cluster(brokers: int) -> LocalKafka:
    try:
        return LocalKafka(load_settings(), brokers=brokers)
    except (ConfigError, InfraError) as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


@infra_app.command("up")
def infra_up(
    brokers: int = typer.Option(1, help="1 for a single node, 3 for a replicated cluster."),
    timeout: float = typer.Option(120.0, help="Seconds to wait for the brokers to answer."),
) -> None:
    """Install (first time), start the broker(s), create the project's topics."""
    cluster = _cluster(brokers)
    started = time.monotonic()
    try:
        with console.status(f"starting Kafka ({cluster.name}) ..."):
            bootstrap = cluster.up(timeout=timeout)
    except InfraError as exc:
        _fail(str(exc))
    console.print(f"Kafka {cluster.name} is up in {time.monotonic() - started:.1f}s")
    console.print(f"bootstrap {bootstrap}")


@infra_app.command("status")
def infra_status() -> None:
    """Say which local brokers run, where they listen and where they log."""
    table = Table(title="local Kafka")
    for column in ("cluster", "node", "pid", "state", "listens", "log"):
        table.add_column(column)
    for brokers in (1, 3):
        cluster = _cluster(brokers)
        for node in cluster.status():
            state = ("[green]up[/]" if node.answering else
                     "[yellow]starting[/]" if node.alive else "[dim]down[/]")
            table.add_row(cluster.name, str(node.node_id), str(node.pid or "-"), state,
                          f"127.0.0.1:{node.broker_port} (SASL_SSL)", str(node.log_file))
    console.print(table)


@infra_app.command("principals")
def infra_principals(
    prefix: str = typer.Option("", help="Topic prefix of the deployment (default: settings)."),
) -> None:
    """List the Kafka principals, what each may do (the ACL table), and their credentials."""
    from pcvhub.topics import acl_table, principals

    settings = load_settings()
    table = Table(title=f"principals and ACLs of {prefix or settings.topic_prefix}.*")
    for column in ("principal", "may", "credentials"):
        table.add_column(column)
    grants = acl_table(prefix or settings.topic_prefix)
    for name in principals():
        mine = [g for g in grants if g.principal == name]
        may: dict[str, list[str]] = {}
        for grant in mine:
            star = "*" if grant.pattern == "prefixed" else ""
            may.setdefault(grant.operation, []).append(f"{grant.resource}:{grant.name}{star}")
        text = ("[bold]super user[/] (topics, ACLs, credentials)" if name == "admin" else
                "\n".join(f"{op} {', '.join(names)}" for op, names in sorted(may.items())
                          if op != "DESCRIBE"))
        secret = settings.kafka_credentials / "principals" / f"{name}.json"
        table.add_row(name, text, str(secret) if secret.exists() else "[dim](not created)[/]")
    console.print(table)
    console.print("Anything not listed is refused by the broker (StandardAuthorizer).")


@infra_app.command("down")
def infra_down(
    brokers: int = typer.Option(0, help="1 or 3 to stop one cluster; default stops both."),
) -> None:
    """Stop the local broker(s) cleanly; data and jars stay for the next `up`."""
    for size in ((brokers,) if brokers else (1, 3)):
        cluster = _cluster(size)
        pids = cluster.down()
        if pids:
            console.print(f"stopped {cluster.name} (pids {', '.join(map(str, pids))})")


@schemas_app.command("check")
def schemas_check() -> None:
    """Fail if a current schema cannot read data written with any released version."""
    from pcvhub.schemas.compat import check

    report = check()
    for finding in report.errors:
        console.print(f"[red]incompatible[/] {finding}")
    for name in report.unreleased:
        console.print(f"[yellow]unreleased[/] {name} differs from its last release")
    if report.errors:
        _fail(f"{len(report.errors)} schema(s) break backward-transitive compatibility")
    if report.unreleased:
        _fail(f"{len(report.unreleased)} changed schema(s) are compatible but not released: "
              "run `pcvhub schemas release` and commit pcvhub/schemas/released/")
    console.print(f"schemas compatible: {report.checked_pairs} reader/writer pairs checked")


@schemas_app.command("release")
def schemas_release() -> None:
    """Snapshot every schema whose canonical form changed as its next released version."""
    from pcvhub.schemas.compat import release

    try:
        written = release()
    except ValueError as exc:
        _fail(str(exc))
    for path in written:
        console.print(f"released {path}")
    console.print(f"{len(written)} schema version(s) released")


@schemas_app.command("list")
def schemas_list() -> None:
    """Every event type with its fingerprint and number of released versions."""
    from pcvhub.schemas.catalog import load_catalog, released_schema_files

    catalog = load_catalog()
    releases: dict[str, int] = {}
    for path in released_schema_files():
        releases[path.parent.name] = releases.get(path.parent.name, 0) + 1
    table = Table(title="pcvhub event catalog")
    for column in ("type", "fingerprint", "fields", "released versions"):
        table.add_column(column)
    for name, version in sorted(catalog.current.items()):
        table.add_row(name, version.fingerprint.hex(), str(len(version.raw["fields"])),
                      str(releases.get(name, 0)))
    console.print(table)


@app.command("worker")
def worker(
    app_id: str = typer.Option("pcvhub-gatekeeper", help="Consumer group / Faust app id."),
    loglevel: str = typer.Option("WARNING", help="Faust log level."),
) -> None:
    """Run the gatekeeper: verify and rule-check ingress, write canonical/rejected/alerts."""
    from pcvhub.streams.worker import run
    from pcvhub.trust.keys import KeyStoreError

    try:
        run(load_settings(), app_id=app_id, loglevel=loglevel)
    except (ConfigError, KeyStoreError, FileNotFoundError, TimeoutError) as exc:
        _fail(str(exc))


@app.command("demo")
def demo(
    patients: int = typer.Option(50, "--patients", min=1, help="Patients in the synthetic "
                                 "cohort (each a whole therapy with two doses)."),
    keep_running: bool = typer.Option(False, "--keep-running", help="After the summary, keep "
                                      "the hub and the dashboard running until Ctrl-C."),
) -> None:
    """Start the hub (broker, gatekeeper, projections, connectors) and drive a synthetic
    cohort through it end to end, with faults the hub must catch; print a summary."""
    from pcvhub.demo import run_demo

    try:
        code = run_demo(console, patients=patients, keep_running=keep_running)
    except (ConfigError, InfraError) as exc:
        _fail(str(exc))
    raise typer.Exit(code=code)


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
