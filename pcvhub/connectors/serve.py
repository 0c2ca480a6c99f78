"""`pcvhub serve`: every connector of one deployment in one process.

Each listener prints one line when it is ready: ``mllp 127.0.0.1:PORT`` (HL7 v2 over
MLLP, mutual TLS), ``http https://127.0.0.1:PORT`` (FHIR R4, bearer tokens over TLS)
``drop PATH`` (the MES/LIMS file drop) and ``logger-drop PATH`` (couriers' and sites'
data logger files). Each protocol has its own ``Connector`` (its own ingress topic,
Kafka principal and log follower); the HL7 and FHIR listeners sign as the hospital site's
connector actor, the file drop as the manufacturer's, the logger drop as the cold chain's
upload actor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pcvhub.config import Settings
from pcvhub.connectors.core import Connector
from pcvhub.connectors.drop_folder import DropConnector
from pcvhub.connectors.fhir import FhirServer
from pcvhub.connectors.hl7 import MessageMapper, MllpListener
from pcvhub.connectors.loggers import LoggerDrop
from pcvhub.connectors.mes import FileDrop
from pcvhub.connectors.tls import LocalCA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """What to serve. Port 0 picks a free port (printed on the listener's line)."""

    site_id: str
    actor_id: str  # the hospital site's connector actor (HL7 and FHIR)
    host: str = "127.0.0.1"
    mllp_port: int = 2575
    http_port: int = 8443
    drop: Path | None = None  # the MES/LIMS folder; None: no file drop
    drop_actor_id: str | None = None
    drop_site_id: str | None = None
    settle_s: float = 2.0
    logger_drop: Path | None = None  # the logger-upload folder; None: no logger drop
    logger_drop_actor_id: str | None = None
    logger_drop_site_id: str | None = None


async def serve(settings: Settings, options: ServeOptions, stop: asyncio.Event,
                announce: Callable[[str], None] = print) -> None:
    """Start every listener, announce each, run until ``stop`` is set, then close all."""
    ca = LocalCA.open(settings)
    opened: list[Connector] = []

    def open_connector(source: str) -> Connector:
        connector = Connector.open(settings, options.actor_id, source,
                                   site_id=options.site_id, settle_s=options.settle_s)
        opened.append(connector)
        return connector.start()

    tasks: list[asyncio.Task[None]] = []
    mllp: MllpListener | None = None
    fhir: FhirServer | None = None
    try:
        hl7_connector = await asyncio.to_thread(open_connector, "hl7")
        mllp = await MllpListener(hl7_connector, MessageMapper(hl7_connector),
                                  ca.server_context(require_client_certificate=True),
                                  options.host, options.mllp_port).start()
        announce(f"mllp {mllp.host}:{mllp.port}")
        fhir_connector = await asyncio.to_thread(open_connector, "fhir")
        fhir = await FhirServer(fhir_connector, ca, options.host, options.http_port).start()
        announce(f"http {fhir.base_url}")
        drops: list[tuple[str, type[DropConnector], Path | None, str | None, str | None]] = [
            ("drop", FileDrop, options.drop, options.drop_actor_id, options.drop_site_id),
            ("logger-drop", LoggerDrop, options.logger_drop, options.logger_drop_actor_id,
             options.logger_drop_site_id)]
        for label, kind, folder, actor_id, site_id in drops:
            if folder is None:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            tasks.append(asyncio.create_task(kind.serve(
                settings, folder, stop, actor_id=actor_id, site_id=site_id)))
            announce(f"{label} {folder.resolve()}")
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter:
                task.result()  # a connector that stopped on its own: say why
    finally:
        stop.set()
        if mllp is not None:
            await mllp.close()
        if fhir is not None:
            await fhir.close()
        for task in tasks:
            try:
                await asyncio.wait_for(task, 30)
            except Exception as exc:  # report, keep closing the rest
                log.error("connector task ended with %s", exc)
        for connector in opened:
            connector.close()
