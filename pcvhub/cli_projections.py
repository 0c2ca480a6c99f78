"""`pcvhub project` and `pcvhub projections ...` (top floor): the DuckDB projections.

``register(app)`` adds them to the ``pcvhub`` command:

- ``pcvhub project``: run the projection runner until stopped (SIGTERM or Ctrl-C finish
  the current batch), publishing read-only copies for analysts and payers;
- ``pcvhub projections rebuild --out FILE``: replay the log from the start into a fresh
  file; ``pcvhub projections digest FILE``: the digest of every table (a rebuilt file and
  the live one give the same);
- ``pcvhub projections audit COI``: the chain of identity and custody of one therapy;
- ``pcvhub projections snapshot``: a pseudonymised copy for one scope (operations,
  research, payer:<PAYER>), as DuckDB or Parquet;
- ``pcvhub projections schema``: the documented SQL schema of the views.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

import typer
from confluent_kafka import KafkaException
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pcvhub.config import ConfigError, Settings, load_settings
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.log import KEY_FILE as LEDGER_KEY_FILE
from pcvhub.ledger.note import VerifierKey
from pcvhub.ledger.trusted import CheckpointTrust
from pcvhub.ledger.witnessing import WitnessPolicy
from pcvhub.projections.digest import digest_file
from pcvhub.projections.publish import FORMATS, Publisher, PublishError, snapshot_file
from pcvhub.projections.runner import (
    DEFAULT_FILE,
    ProjectionError,
    ProjectionRunner,
    RunProgress,
    rebuild,
)
from pcvhub.projections.schema import LayoutError
from pcvhub.projections.store import ProjectionFileBusy, connect

projections_app = typer.Typer(help="DuckDB projections: rebuild, digest, audit, snapshots.",
                              no_args_is_help=True)
console = Console()
#: what a command reports instead of a traceback
EXPECTED = (ConfigError, ProjectionError, LayoutError, ProjectionFileBusy, PublishError,
            FileNotFoundError, FileExistsError, KafkaException)


def register(app: typer.Typer) -> None:
    """Add ``project`` and the ``projections`` group to the ``pcvhub`` command."""
    app.command("project")(project)
    app.add_typer(projections_app, name="projections")


def _fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=1)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc))
        raise


def _db(settings: Settings, db: Path | None) -> Path:
    return db if db is not None else settings.data_dir / DEFAULT_FILE


def project(
    db: Path | None = typer.Option(None, "--db", help="Projection file (default "
                                   "<data_dir>/projections/hub.duckdb); created if missing."),
    batch_size: int = typer.Option(2000, min=1, help="Records per transaction at most."),
    publish_dir: Path | None = typer.Option(None, help="Where to publish read-only copies "
                                            "(default <data_dir>/projections/published)."),
    publish_every: float = typer.Option(300.0, min=0, help="Seconds between publications; "
                                        "0 never publishes."),
    publish_format: str = typer.Option("duckdb", help=f"One of {', '.join(FORMATS)}."),
    report_every: float = typer.Option(10.0, min=0.1, help="Seconds between progress lines."),
    until_end: bool = typer.Option(False, "--until-end", help="Exit once caught up with the "
                                   "log as it was at start (instead of following it)."),
) -> None:
    """Project the canonical, rejected and alerts topics into DuckDB until stopped."""
    settings = _settings()
    path = _db(settings, db)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # finish the batch in hand, commit, close

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    reported_at, reported_behind = time.monotonic(), None

    def report(progress: RunProgress) -> None:
        """A line every ``report_every`` seconds, and one as soon as it has caught up."""
        nonlocal reported_at, reported_behind
        caught_up = progress.behind == 0 and reported_behind != 0
        if caught_up or time.monotonic() - reported_at >= report_every:
            reported_at, reported_behind = time.monotonic(), progress.behind
            console.print(f"projected {progress.records} records ({progress.rate:,.0f}/s); "
                          f"{progress.behind} behind", highlight=False)

    try:
        publisher = None
        if publish_every > 0:
            publisher = Publisher(settings.data_dir,
                                  publish_dir or settings.data_dir / "projections" / "published",
                                  publish_every, publish_format)
        console.print(f"projecting {settings.topic_prefix}.* into {path}", highlight=False)
        done = ProjectionRunner(settings, path, batch_size=batch_size).run(
            stop, until_end=until_end, on_batch=report, between_batches=publisher)
        console.print(f"stopped after {done.records} records; {done.behind} behind",
                      highlight=False)
    except EXPECTED as exc:
        _fail(str(exc))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _checkpoint_trust(ledger: Path, witnesses: Path) -> CheckpointTrust:
    """The ledger folder's latest checkpoint, verified against its tiles and its witnesses
    (the log's public vkeys are read from the folder's ``keys.json``)."""
    try:
        record = json.loads((ledger / LEDGER_KEY_FILE).read_text())
        return CheckpointTrust.load(ledger / "tiles", VerifierKey.parse(record["ed25519_vkey"]),
                                    VerifierKey.parse(record["ml_dsa_44_vkey"]),
                                    WitnessPolicy.read(witnesses))
    except (LedgerError, OSError, KeyError, ValueError) as exc:
        _fail(f"cannot rebuild by checkpoint: {exc}")


@projections_app.command("rebuild")
def projections_rebuild(
    out: Path = typer.Option(..., "--out", help="Fresh file to build (must not exist)."),
    batch_size: int = typer.Option(2000, min=1, help="Records per transaction at most."),
    by_checkpoint: Path | None = typer.Option(
        None, "--by-checkpoint", help="A ledger folder: records its latest checkpoint covers "
        "are admitted on that checkpoint's word instead of their own signatures (the "
        "registry chain is always verified in full); needs --witnesses."),
    witnesses: Path | None = typer.Option(
        None, help="Witness configuration (JSON) the checkpoint's quorum is judged by."),
) -> None:
    """Replay the log from the start into a fresh file; print its digest."""
    settings = _settings()
    trust = None
    if by_checkpoint is not None:
        if witnesses is None:
            _fail("--by-checkpoint needs --witnesses: a checkpoint is trusted only when a "
                  "quorum of witnesses cosigned it")
        trust = _checkpoint_trust(by_checkpoint, witnesses)
        console.print(f"rebuilding by {trust.describe()}", highlight=False)
    columns = (TextColumn("rebuilding"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("rebuild", total=None, rate="")

            def advance(progress: RunProgress) -> None:
                bar.update(task, completed=progress.records,
                           total=progress.records + (progress.behind or 0),
                           rate=f"{progress.rate:,.0f} records/s")

            done = rebuild(settings, out, batch_size=batch_size, on_batch=advance,
                           checkpoint=trust)
        digest = digest_file(out)
    except EXPECTED as exc:
        _fail(str(exc))
    console.print(f"rebuilt {out}: {done.records} records in "
                  f"{time.monotonic() - done.started:.1f}s", highlight=False)
    if trust is not None:
        console.print(f"{done.by_checkpoint} records admitted on the checkpoint's word; the "
                      f"other {done.records - done.by_checkpoint} (the registry chain, records "
                      "past the checkpoint, any whose bytes no longer match their leaf) by "
                      "their own signatures", highlight=False)
    console.print(f"digest {digest.sha256}", highlight=False)


@projections_app.command("digest")
def projections_digest(
    file: Path = typer.Argument(..., help="Projection file (not open in a runner)."),
    tables: bool = typer.Option(False, "--tables", help="Also each table's rows and digest."),
) -> None:
    """Print the digest of every table of a projection file."""
    try:
        digest = digest_file(file)
    except EXPECTED as exc:
        _fail(str(exc))
    if tables:
        table = Table(title=f"{file}")
        for column in ("table", "rows", "sha256"):
            table.add_column(column, justify="right" if column == "rows" else "left")
        for t in digest.tables:
            table.add_row(t.name, f"{t.rows:,}", t.sha256)
        console.print(table)
    console.print(f"digest {digest.sha256}", highlight=False)


@projections_app.command("audit")
def projections_audit(
    coi: str = typer.Argument(..., help="Chain-of-identity id of the therapy."),
    db: Path | None = typer.Option(None, "--db", help="Projection file or a copy."),
) -> None:
    """The chain of identity and custody of one therapy, with refusals and alerts."""
    path = _db(_settings(), db)
    try:
        con = connect(path, read_only=True)
    except EXPECTED as exc:
        _fail(str(exc))
    try:
        rows = con.execute(
            "SELECT timeline_seq, entry, event_time, event_type, actor, actor_site, key_id, "
            "outcome, verification, chain_link FROM audit(?)", [coi]).fetchall()
    finally:
        con.close()
    if not rows:
        _fail(f"no record of therapy {coi} in {path}")
    table = Table(title=f"audit trail of {coi}")
    for column in ("#", "entry", "event time (UTC)", "type", "signer", "site", "key",
                   "outcome", "verification", "chain"):
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


@projections_app.command("snapshot")
def projections_snapshot(
    out: Path = typer.Option(..., "--out", help="DuckDB file, or folder for Parquet."),
    scope: str = typer.Option("operations", help="operations, research or payer:<PAYER_ID>."),
    db: Path | None = typer.Option(None, "--db", help="Projection file (not open in a runner)."),
    fmt: str = typer.Option("duckdb", "--format", help=f"One of {', '.join(FORMATS)}."),
) -> None:
    """Write a pseudonymised, read-only copy of the views of one scope."""
    settings = _settings()
    try:
        written = snapshot_file(_db(settings, db), settings.data_dir, scope, out, fmt)
    except EXPECTED as exc:
        _fail(str(exc))
    console.print(f"wrote {scope} copy to {written}; connect with: duckdb -readonly {written}"
                  if fmt == "duckdb" else f"wrote {scope} copy to {written}/*.parquet",
                  highlight=False)


@projections_app.command("schema")
def projections_schema(
    view: str | None = typer.Argument(None, help="One view (default: list them all)."),
    db: Path | None = typer.Option(None, "--db", help="Projection file or a copy."),
) -> None:
    """The documented SQL schema of the views (their comments in the file)."""
    try:
        con = connect(_db(_settings(), db), read_only=True)
    except EXPECTED as exc:
        _fail(str(exc))
    columns: tuple[str, ...]
    try:
        if view is None:
            rows = con.execute("SELECT view_name, comment FROM duckdb_views() "
                               "WHERE NOT internal ORDER BY view_name").fetchall()
            title, columns = "views", ("view", "what it answers")
        else:
            rows = con.execute(
                "SELECT column_name, data_type, comment FROM duckdb_columns() "
                "WHERE schema_name = 'main' AND table_name = ? ORDER BY column_index",
                [view]).fetchall()
            title, columns = f"view {view}", ("column", "type", "meaning")
    finally:
        con.close()
    if not rows:
        _fail(f"no view {view!r}; `pcvhub projections schema` lists them")
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
