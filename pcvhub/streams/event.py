"""An event as the gatekeeper sees it: the decoded envelope, its payload and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pcvhub.schemas.envelope import Envelope


@dataclass(frozen=True)
class SourcePosition:
    """Where a record was read: an ingress topic, partition and offset, and when the broker
    appended it there (``LogAppendTime`` of the ingress topics, µs; None if not known)."""

    topic: str
    partition: int
    offset: int
    appended_at_us: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class InboundEvent:
    """A decoded, not yet judged event.

    ``event_type`` is the short schema name (``"SampleCollected"``); ``payload`` is the
    decoded Avro record in the codec's conventions; ``raw`` the bytes as received.
    """

    envelope: Envelope
    event_type: str
    payload: dict[str, Any]
    raw: bytes
    #: the ingress record it is (at the gatekeeper) or answers (an output the log reader
    #: admitted: from the gatekeeper's signed seal); None for a sweep's alert
    source: SourcePosition | None = None

    @property
    def event_id(self) -> str:
        return self.envelope.event_id

    @property
    def coi(self) -> str:
        return self.envelope.coi

    @property
    def producer(self) -> str:
        return self.envelope.producer

    @property
    def occurred_at_us(self) -> int:
        return self.envelope.occurred_at_us
