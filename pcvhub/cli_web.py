"""`pcvhub dashboard` (top floor): the read-only web dashboard over a projection file.

``register(app)`` adds the command to the ``pcvhub`` application.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console
from rich.markup import escape

from pcvhub.clock import clock_for
from pcvhub.config import ConfigError, load_settings

console = Console()


def register(app: typer.Typer) -> None:
    """Add the ``dashboard`` command to the ``pcvhub`` application."""
    app.command("dashboard")(dashboard)


def dashboard(
    db: Path | None = typer.Option(None, "--db", help="Projection file that no running "
                                   "`pcvhub project` holds, e.g. one written by `pcvhub "
                                   "projections rebuild --out FILE` (default "
                                   "<data_dir>/projections/hub.duckdb)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8088, min=0, max=65535, help="Port (0: a free port)."),
) -> None:
    """Serve the read-only web dashboard of a projection file until Ctrl-C or SIGTERM."""
    # imported here: the web stack takes half a second to load, which other commands skip
    from pcvhub.projections.runner import DEFAULT_FILE
    from pcvhub.web import DashboardError, DashboardServer

    try:
        settings = load_settings()
        path = db if db is not None else settings.data_dir / DEFAULT_FILE
        # alert ages count on the clock the deployment's gatekeeper raises them by
        server = DashboardServer(path, host, port,
                                 clock_for(settings.timer_clock, settings.data_dir))
    except (ConfigError, DashboardError, OSError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(code=1) from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        url = server.start()
        console.print(f"dashboard of {path} at {url} (Ctrl-C stops it)", highlight=False)
        while not stop.wait(0.5):
            if server.thread is not None and not server.thread.is_alive():
                console.print("[bold red]error:[/] the dashboard server stopped")
                raise typer.Exit(code=1)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print("dashboard stopped", highlight=False)
