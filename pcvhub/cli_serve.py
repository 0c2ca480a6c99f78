"""`pcvhub serve` (top floor): run every connector; ``register(app)`` adds the command."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import typer

from pcvhub.config import ConfigError, load_settings
from pcvhub.connectors.serve import ServeOptions, serve
from pcvhub.trust.keys import KeyStoreError


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the ``pcvhub`` application."""

    @app.command("serve")
    def serve_command(
        site: str = typer.Option(..., help="The hospital site the HL7 and FHIR listeners "
                                           "serve (its registered site id)."),
        actor: str = typer.Option(..., help="The site's connector actor (a key in the key "
                                            "store, registered with role CONNECTOR)."),
        host: str = typer.Option("127.0.0.1", help="Address every listener binds."),
        mllp_port: int = typer.Option(2575, help="HL7 v2 MLLP port (0: a free port)."),
        http_port: int = typer.Option(8443, help="FHIR R4 HTTPS port (0: a free port)."),
        drop: Path | None = typer.Option(None, help="MES/LIMS drop folder (none: no drop)."),
        drop_actor: str | None = typer.Option(None, help="Actor of the file drop."),
        drop_site: str | None = typer.Option(None, help="Site of the file drop."),
        settle: float = typer.Option(2.0, help="Seconds to wait for a therapy's previous "
                                               "event to be accepted before chaining on it."),
        logger_drop: Path | None = typer.Option(None, help="Data logger upload folder "
                                                           "(none: no logger drop)."),
        logger_drop_actor: str | None = typer.Option(
            None, help="Actor of the logger drop (role CONNECTOR; default coldchain-loggers)."),
        logger_drop_site: str | None = typer.Option(None, help="Site of the logger drop."),
    ) -> None:
        """Start the HL7 v2 (MLLP), FHIR R4, file-drop and logger-drop connectors; print
        their addresses."""
        options = ServeOptions(site, actor, host, mllp_port, http_port, drop, drop_actor,
                               drop_site, settle, logger_drop, logger_drop_actor,
                               logger_drop_site)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await serve(load_settings(), options, stop,
                        announce=lambda line: print(line, flush=True))

        try:
            asyncio.run(main())
        except (ConfigError, KeyStoreError, FileNotFoundError, OSError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(code=1) from None
