"""Durable writes: an event is "in the hub" only once Kafka has acknowledged it.

A connector translates an outside message (HL7 v2, FHIR, a MES file row, an X12 835)
into pcvhub events, signs them with its own registered actor key and writes them to its
ingress topic with an :class:`IngressWriter` (partners that produce directly use one on
``ingress.direct``). ``write`` returns only once Kafka has acknowledged the record from
all in-sync replicas, so a connector's positive acknowledgement to its caller (HL7 ACK
AA, HTTP 201, a result file) always means "durably in the hub".

A writer acts as the connector principal of its source (``connector-<source>``), the only
one the broker lets write that topic; a connector's own refusals travel the same way and
the gatekeeper relays them to ``rejected``, which only it may write.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

from pcvhub.config import Settings
from pcvhub.topics import connector_principal, topic_name
from pcvhub.trust.issuer import IssuedEvent

__all__ = ["IngressWriteError", "IngressWriter"]


class IngressWriteError(RuntimeError):
    """Kafka did not acknowledge a record; the caller must answer with a negative ACK."""


class IngressWriter:
    """Writes signed events, keyed by CoI, to ``ingress.<source>`` (``hl7``, ``fhir``,
    ``files``, ``payer``, ``direct``), where everything outside the hub writes, and waits
    for the acks."""

    def __init__(self, settings: Settings, source: str) -> None:
        self.topic = topic_name(f"ingress.{source}", settings.topic_prefix)
        self._producer = Producer(settings.as_principal(connector_principal(source))
                                  .producer(**{"linger.ms": 2}))
        self._lock = threading.Lock()

    def write(self, events: Sequence[IssuedEvent], timeout: float = 30.0) -> None:
        """Send and wait: raises IngressWriteError naming the first event Kafka refused."""
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"{msg.key()!r}: {err.str()}")

        with self._lock:
            for event in events:
                self._producer.produce(self.topic, key=event.key, value=event.wire,
                                       on_delivery=on_delivery)
            pending = self._producer.flush(timeout)
        if pending:
            raise IngressWriteError(
                f"{pending} record(s) to {self.topic} not acknowledged within {timeout:.0f}s; "
                "is the Kafka cluster reachable?"
            )
        if failures:
            raise IngressWriteError(f"Kafka refused a record on {self.topic}: {failures[0]}")

    def close(self) -> None:
        """Flush and drop the client, so it does not outlive (and log about) the broker."""
        self._producer.flush(10)
        del self._producer

