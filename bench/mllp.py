"""MLLP listener throughput: HL7 v2 ADT^A01 messages acknowledged per second on loopback.

Measured: the real listener (mutual TLS, HL7 parsing and checks, pseudonymisation,
mapping to PatientEnrolled, hybrid Ed25519 + ML-DSA-65 signature, durable write to the
HL7 ingress topic before each AA). Baseline, in the same run: a bare MLLP echo server
on the same TLS context and the same frame reader that answers AA without parsing or
writing. Both are driven by the same load client: ``CONNECTIONS`` threads (then
``MANY_CONNECTIONS``), each sending messages one at a time and waiting for each ACK (HL7
original mode), every message a new patient with its own control id. In original mode a
connection's rate is one over the latency of one message (its signature and its Kafka
acknowledgement included); concurrent connections are what the connector's group commit
shares one signature and one flush among, hence the second figure. The gatekeeper worker
registers the actors and is then stopped, so it does not compete for the two cores during
the measurement.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import uuid
from functools import partial
from pathlib import Path

from bench.report import Figure, median_rate
from pcvhub.config import load_settings
from pcvhub.connectors.hl7.listener import FrameReader, MllpListener, frame
from pcvhub.connectors.hl7.mapping import MessageMapper
from pcvhub.infra.kafka import LocalKafka
from tests.integration.test_serve_deployment import (
    CONNECTOR_ACTOR,
    BackgroundLoop,
    Deployment,
    MllpClient,
)
from tests.unit.test_hl7_messages import SITE, adt_a01

CONNECTIONS = 4
#: an interface engine with one connection per feed, or several per feed
MANY_CONNECTIONS = 16


class EchoServer:
    """The baseline: MLLP framing over the same TLS, an AA for each frame, nothing else."""

    def __init__(self, context) -> None:
        self.context = context
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> EchoServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader(reader, 30.0, 4 * 1024 * 1024)
        ack = frame("MSH|^~\\&|PCVHUB|HUB|EPIC|KYOTO01|20260101||ACK^A01^ACK|1|P|2.5.1\r"
                    "MSA|AA|1")
        while await frames.next() is not None:
            writer.write(ack)
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _load(port: int, deployment: Deployment, per_connection: int,
          connections: int = CONNECTIONS) -> int:
    """Send ``per_connection`` A01s on each of ``connections`` connections; count the AAs."""
    acknowledged = [0] * connections
    errors: list[str] = []
    context = deployment.tls_client(deployment.emr)  # one context, shared by the threads

    def one(index: int) -> None:
        client = MllpClient(port, context)
        try:
            for _ in range(per_connection):
                control = uuid.uuid4().hex[:20]
                ack = client.send(adt_a01(control, f"MRN-{control[:12]}"))
                if "MSA|AA|" in ack:
                    acknowledged[index] += 1
                else:
                    errors.append(ack)
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} negative ACKs, first: {errors[0]!r}")
    return sum(acknowledged)


def run(quick: bool = False) -> list[Figure]:
    per_connection = 25 if quick else 150
    repeats = 1 if quick else 3
    settings = load_settings()
    kafka = LocalKafka(settings)
    kafka.up()
    with tempfile.TemporaryDirectory(prefix="bench-mllp-") as tmp:
        deployment = Deployment.create(settings, kafka.bootstrap_servers, Path(tmp))
        loop = BackgroundLoop()
        try:
            deployment.hub.start_worker()
            deployment.register(CONNECTOR_ACTOR, {"CONNECTOR", "HOSPITAL_IT"}, SITE)
            deployment.emr = deployment.register(  # type: ignore[attr-defined]
                "emr-kyoto01", {"HOSPITAL_IT"}, SITE)
            deployment.wait_registered()
            connector = deployment.connector("hl7", settle_s=0)
            deployment.hub.stop_all()
            server_context = deployment.ca.server_context(require_client_certificate=True)
            listener = loop.run(MllpListener(connector, MessageMapper(connector),
                                             server_context).start())
            echo = loop.run(EchoServer(server_context).start())
            _load(listener.port, deployment, 5)  # warm-up: connections, producer, caches
            _load(echo.port, deployment, 5)
            rates = {}
            for connections in (CONNECTIONS, MANY_CONNECTIONS):
                baseline = median_rate(partial(_load, echo.port, deployment, per_connection,
                                               connections), repeats)
                measured = median_rate(partial(_load, listener.port, deployment,
                                               per_connection, connections), repeats)
                rates[connections] = (measured, baseline)
            loop.run(listener.close())
            loop.run(echo.close())
        finally:
            loop.close()
            deployment.close()
    return [Figure("mllp", f"ADT^A01 -> AA, {connections} connections (TLS, parse, sign, "
                           "Kafka ack)", measured, "msg/s", "bare MLLP echo (TLS, AA only)",
                   baseline)
            for connections, (measured, baseline) in rates.items()]
