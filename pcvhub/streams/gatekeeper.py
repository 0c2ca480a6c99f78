"""The gatekeeper's judgement, free of Kafka: bytes in, records out.

``Gatekeeper.judge`` takes one ingress record and the ledger of its partition and returns
the records to write: alerts first, then exactly one *primary* record, which is either
the original bytes on the canonical topic or an ``EventRejected`` on the rejected topic.
``Gatekeeper.seal`` then seals the outputs of one send step in one batch
(``pcvhub.trust.seal``): one hybrid signature over their Merkle root, written once to the
seals topic, and every output carrying, in its ``pcvhub-seal`` header, the verdict, the
ingress position it answers (and the broker's append time of it), where that head stands
and its inclusion path. The seal is how a restarted worker knows what it already did (see
``pcvhub.streams.app``) and how any reader tells an output of the gatekeeper from bytes
someone else put on its topics.

The ledger of a partition is a pure fold of that partition's outputs, so it can always
be rebuilt from the log: ``replay_*`` apply past outputs exactly as ``judge`` applied
them when they were first written.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pcvhub.clock import Clock, WallClock
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import (
    DecodeError,
    decode_envelope,
    decode_payload,
    written_in_legacy_form,
)
from pcvhub.schemas.policy import CONNECTOR
from pcvhub.streams.case import AlertStatus, CaseState
from pcvhub.streams.event import InboundEvent, SourcePosition
from pcvhub.streams.timers import TurnaroundTimers
from pcvhub.streams.verdict import AllOf, Verdict
from pcvhub.topics import SEAL_HEADER
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.registry import REGISTRY_EVENTS, KeyRegistry
from pcvhub.trust.seal import SealedBatch, SealedFacts, SealVerdict, seal_batch

ALERT_NAMESPACE = uuid.UUID("6f1d0c2e-8b1f-4c55-9a57-0c1f0b8a9d10")
#: Header on an alert a timer sweep raised (no ingress record caused it): the sweep's
#: "now". The ledger rebuild folds the alert id from the signed payload either way.
SWEEP_HEADER = "pcvhub-sweep"


@dataclass(frozen=True)
class Output:
    """One record to write: ``topic`` is a suffix of the topic table; ``seal`` is empty
    until ``Gatekeeper.seal`` sealed it with the other outputs of its send step."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int
    source: SourcePosition | None  # the ingress record answered; None for a sweep's alert
    verdict: SealVerdict
    event_id: str = ""
    swept_at_us: int | None = None  # the sweep's "now", for an alert no record caused
    seal: bytes = b""

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        if not self.seal:
            raise ValueError(f"output {self.event_id} to {self.topic} is not sealed; the "
                             "gatekeeper writes nothing it has not sealed (Gatekeeper.seal)")
        headers = [(SEAL_HEADER, self.seal)]
        if self.source is None:
            headers.append((SWEEP_HEADER, str(self.swept_at_us).encode()))
        return headers

    def facts(self) -> SealedFacts:
        """What the seal attests about this output."""
        source = self.source
        if source is None:
            return SealedFacts(self.topic, self.partition, self.key, self.value, self.verdict)
        appended = -1 if source.appended_at_us is None else source.appended_at_us
        return SealedFacts(self.topic, self.partition, self.key, self.value, self.verdict,
                           source.topic, source.partition, source.offset, appended)


@dataclass(frozen=True)
class SealedOutputs:
    """One send step's outputs and their signed batch head (``Gatekeeper.seal``)."""

    batch: SealedBatch
    outputs: tuple[Output, ...]

    @property
    def head(self) -> bytes:
        """The seals-topic record to write, and have acknowledged, before any output."""
        return self.batch.head.encode()

    def at(self, head_offset: int) -> list[Output]:
        """The outputs, sealed, once Kafka has put the head at ``head_offset``."""
        return [replace(o, seal=s.encode())
                for o, s in zip(self.outputs, self.batch.seals(head_offset), strict=True)]


@dataclass
class PartitionLedger:
    """What the gatekeeper knows about one partition: cases, answered positions, alerts."""

    partition: int
    cases: dict[str, CaseState] = field(default_factory=dict)
    answered: set[tuple[str, int]] = field(default_factory=set)  # (ingress topic, offset)
    alert_ids: set[str] = field(default_factory=set)
    watermark_us: int = 0  # highest event time seen: timers run on event time

    def case(self, coi: str) -> CaseState:
        found = self.cases.get(coi)
        if found is None:
            found = self.cases[coi] = CaseState.new(coi)
        return found

    def has_answered(self, source: SourcePosition) -> bool:
        return (source.topic, source.offset) in self.answered


def alert_id(event_id: str, kind: str) -> str:
    """Deterministic alert id, so a replayed judgement never raises the same alert twice."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{event_id}/{kind}"))


class Gatekeeper:
    """Decodes, verifies and rule-checks ingress records for the partitions it owns."""

    def __init__(self, rules: AllOf, issuer: EventIssuer, registry: KeyRegistry,
                 timers: TurnaroundTimers | None = None, clock: Clock | None = None) -> None:
        """:param clock: the deployment's processing time (``pcvhub.clock``; the wall clock
            if None): what the sweep reads as now, and when an alert is raised."""
        self.rules = rules
        self.issuer = issuer  # the gatekeeper's own actor: signs rejections and alerts
        self.registry = registry  # the one R1/R2 read: accepted registry events fold into it
        self.timers = timers or TurnaroundTimers()
        self.clock = clock or WallClock()
        self._sealing_clock = WallClock()
        self.catalog = load_catalog()

    # -- decoding ----------------------------------------------------------------

    def decode(self, raw: bytes, source: SourcePosition | None) -> InboundEvent:
        """Envelope and payload, or DecodeError naming what is wrong and where."""
        envelope = decode_envelope(raw)
        full_name, payload = decode_payload(envelope.schema_fingerprint, envelope.payload,
                                            envelope.event_type)
        return InboundEvent(envelope, self.catalog.short_name(full_name), payload, raw, source)

    # -- judging -----------------------------------------------------------------

    def decoded(self, raw: bytes, source: SourcePosition | None = None
                ) -> InboundEvent | DecodeError:
        """``decode``, with its error as a value: a send step decodes its batch once, for
        the signature checks ahead and for the judgement."""
        try:
            return self.decode(raw, source)
        except DecodeError as exc:
            return exc

    def judge(self, raw: bytes, key: bytes | None, source: SourcePosition,
              ledger: PartitionLedger, decoded: InboundEvent | DecodeError | None = None
              ) -> list[Output]:
        """The records that answer one ingress record (alerts first, primary last).

        :param decoded: ``decoded(raw)`` if the caller already has it.
        """
        event = self.decoded(raw) if decoded is None else decoded
        if isinstance(event, DecodeError):
            coi = key.decode("utf-8", "replace") if key else ""
            return [self._rejection(raw, source, coi, "", "R0", "MALFORMED", str(event))]
        event = replace(event, source=source)  # the one place a judged event gets its source
        if written_in_legacy_form(raw, event.envelope):
            return [self._rejection(
                raw, source, event.coi, event.event_id, "R0", "LEGACY_FINGERPRINT",
                "the record names its Avro schemas by CRC-64-AVRO fingerprints in the "
                "byte-reversed order pcvhub wrote before the fix (the Avro spec and every "
                "other implementation read them little-endian); re-issue it with a current "
                "pcvhub codec, which writes the spec's form",
                event.event_type)]
        if key is not None and key != event.coi.encode():
            return [self._rejection(
                raw, source, event.coi, event.event_id, "R0", "KEY_NOT_COI",
                f"record key {key!r} is not the event's chain-of-identity id {event.coi}; "
                "producers must key ingress records by CoI so one therapy stays in one "
                "partition",
            )]
        if event.event_type == "EventRejected" and self._connector_refusal(event):
            # A connector refused input that never reached Kafka and may write only its
            # ingress topic: its signed refusal goes on to ``rejected`` byte for byte.
            ledger.answered.add((source.topic, source.offset))
            return [Output("rejected", event.coi.encode(), raw, source.partition, source,
                           SealVerdict.RELAYED, event.event_id)]
        case = ledger.case(event.coi)
        verdict = self.rules.check(event, case)
        outputs: list[Output] = []
        if verdict.accepted:
            self._fold(event, case)
            ledger.watermark_us = max(ledger.watermark_us, event.occurred_at_us)
            outputs += self._timer_alerts(ledger, event)
            outputs.append(Output("events", event.coi.encode(), raw, source.partition, source,
                                  SealVerdict.ACCEPTED, event.event_id))
        else:
            if verdict.alert:
                outputs += self._alert(ledger, event, verdict)
            outputs.append(self._rejection(raw, source, event.coi, event.event_id,
                                           verdict.rule, verdict.code, verdict.reason,
                                           event.event_type))
        ledger.answered.add((source.topic, source.offset))
        return outputs

    def _connector_refusal(self, event: InboundEvent) -> bool:
        """A refusal a registered connector signed (both signatures, valid key) of input
        that came from outside Kafka (no ingress position: partition -1). Anything else
        of type EventRejected on ingress goes to the rules, which refuse it (R2)."""
        return (CONNECTOR in self.registry.roles_of(event.producer)
                and event.payload.get("source_partition") == -1
                and self.registry.verify(event.envelope).ok)

    def _fold(self, event: InboundEvent, case: CaseState) -> None:
        """Apply an accepted event to its case and, for registry events, to the registry."""
        case.apply(event, chain_digest(event.envelope))
        if event.event_type in REGISTRY_EVENTS:
            self.registry.apply_event(event.event_id, event.event_type, event.payload)

    def _rejection(self, raw: bytes, source: SourcePosition, coi: str, event_id: str,
                   rule: str, code: str, reason: str, event_type: str = "") -> Output:
        payload = {
            "rejected_event_id": event_id or None,
            "rejected_event_type": event_type or None,
            "rule": rule,
            "reason_code": code,
            "reason": reason,
            "source_topic": source.topic,
            "source_partition": source.partition,
            "source_offset": source.offset,
            "original": raw,
        }
        issued = self.issuer.issue("EventRejected", coi or "UNKNOWN", payload, prev_hash=b"")
        return Output("rejected", (coi or "UNKNOWN").encode(), issued.wire, source.partition,
                      source, SealVerdict.REJECTED, issued.envelope.event_id)

    def _alert(self, ledger: PartitionLedger, event: InboundEvent, verdict: Verdict
               ) -> list[Output]:
        return self._raise(ledger, event.source, event.coi, event.event_id, rule=verdict.rule,
                           kind=verdict.code, severity="CRITICAL", detail=verdict.reason)

    def _timer_alerts(self, ledger: PartitionLedger, event: InboundEvent) -> list[Output]:
        outputs: list[Output] = []
        for due in self.timers.due(ledger.case(event.coi), ledger.watermark_us):
            outputs += self._raise(ledger, event.source, event.coi, due.key, rule="TIMER",
                                   kind=due.kind, severity=due.severity, detail=due.detail,
                                   due_at_us=getattr(due, "due_at_us", None))
        return outputs

    def sweep(self, ledger: PartitionLedger, now_us: int) -> list[Output]:
        """Timer alerts of every open therapy of the partition, due at ``now_us``
        (processing time; never earlier than the partition's event time). No event of
        the therapy is needed: a stalled therapy is exactly what the sweep is for. Alert
        ids are those the per-event check would raise, so nothing is raised twice."""
        now = max(now_us, ledger.watermark_us)
        outputs: list[Output] = []
        for case in list(ledger.cases.values()):
            if case.is_registry:
                continue
            for due in self.timers.due(case, now):
                outputs += self._raise(ledger, None, case.coi, due.key, rule="TIMER",
                                       kind=due.kind, severity=due.severity,
                                       detail=due.detail, due_at_us=due.due_at_us,
                                       swept_at_us=now)
        return outputs

    def _raise(self, ledger: PartitionLedger, source: SourcePosition | None, coi: str,
               basis: str, *, rule: str, kind: str, severity: str, detail: str,
               due_at_us: int | None = None, swept_at_us: int | None = None
               ) -> list[Output]:
        identifier = alert_id(basis, kind)
        if identifier in ledger.alert_ids or (source is None and swept_at_us is None):
            return []
        ledger.alert_ids.add(identifier)
        ledger.case(coi).alerts.setdefault(identifier, AlertStatus.OPEN)
        payload: dict[str, Any] = {
            "alert_id": identifier,
            "severity": severity,
            "rule": rule,
            "code": kind,
            "message": detail,
            "subject_event_id": basis,
            "due_at": due_at_us,
        }
        # raised "now" on the deployment's clock, so that an alert's age on the dashboard
        # reads the same clock as its deadline; never before the partition's event time
        raised_at = swept_at_us if swept_at_us is not None else max(self.clock.now_us(),
                                                                     ledger.watermark_us)
        issued = self.issuer.issue("AlertRaised", coi, payload, prev_hash=b"",
                                   occurred_at_us=raised_at)
        return [Output("alerts", coi.encode(), issued.wire, ledger.partition, source,
                       SealVerdict.ALERT, issued.envelope.event_id, swept_at_us)]

    # -- sealing ------------------------------------------------------------------

    def seal(self, outputs: Sequence[Output]) -> SealedOutputs:
        """The outputs of one send step, sealed in one batch: one hybrid signature over
        the Merkle root of all of them (the post-quantum signature is the costly part, so
        it is paid once per step, not per record). The head goes to the seals topic first;
        ``SealedOutputs.at`` then gives the outputs, each naming where the head stands."""
        # sealed at the wall clock's time, whatever the timers' clock says: the seal is
        # signed now, and a simulation clock may stand anywhere (0 before it is first set)
        batch = seal_batch(self.issuer.signer, [o.facts() for o in outputs],
                           self._sealing_clock.now_us())
        return SealedOutputs(batch, tuple(outputs))

    # -- rebuilding the ledger from the log --------------------------------------
    # Each replay takes a record the one log reader admitted (pcvhub.log): what was
    # written to an output topic by anything but a gatekeeper never reaches these.

    def replay_accepted(self, event: InboundEvent, ledger: PartitionLedger) -> None:
        self._fold(event, ledger.case(event.coi))
        ledger.watermark_us = max(ledger.watermark_us, event.occurred_at_us)
        if event.source is not None:
            ledger.answered.add((event.source.topic, event.source.offset))

    def replay_rejected(self, refusal: InboundEvent, ledger: PartitionLedger) -> None:
        """A refusal answers the ingress position its seal names: the gatekeeper's own
        refusal names it in its payload too, a relayed connector refusal (of input that
        never reached Kafka, partition -1 in its payload) only in the seal, which the
        gatekeeper signed when it relayed it (the connector could not know it)."""
        if refusal.source is not None:
            ledger.answered.add((refusal.source.topic, refusal.source.offset))

    def replay_alert(self, alert: InboundEvent, ledger: PartitionLedger) -> None:
        """Replayed before the canonical events (``rebuild_ledger``), so that the
        acknowledgements and resolutions on the therapy's chain find their alert."""
        identifier = str(alert.payload["alert_id"])
        ledger.alert_ids.add(identifier)
        ledger.case(alert.coi).alerts.setdefault(identifier, AlertStatus.OPEN)
