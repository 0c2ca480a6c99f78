"""Logs to project: a scripted scenario answered by the real gatekeeper code, and big cohorts.

``scripted_log`` builds three therapies and the faults the projection views must show:

- therapy A (site KYOTO01, payer NHI, 3 doses): a QC test failed then passed, RESEARCH
  consent, dose 1 given, billed, approved and paid; dose 3 quarantined by a temperature
  excursion and then refused at dispensing (DOSE_QUARANTINED, with a CRITICAL alert);
  dose 2 (the repeated dose) given three days after it was scheduled (an
  ADMINISTRATION_OVERDUE alert, resolved by that administration), billed and DENIED;
  an outcome-based milestone; then a duplicate of one of its events, an unreadable
  record and an event from an unregistered signer, all refused;
- therapy B (site OSAKA02, payer KENPO, 1 dose): billed, approved, not paid;
- therapy C (site KYOTO01): stopped after the sample left the nurse.

``ScriptedLog.gatekeep`` answers the ingress records with ``pcvhub.streams.gatekeeper``
in process, exactly as a worker would, and returns the canonical, rejected and alerts
records with their partitions and offsets (partition by CoI with murmur2, as Kafka).
``signed_cohort`` makes many valid therapies fast by signing them in Merkle batches.

The tests in this module check the builders themselves.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pcvhub.ids import new_coi
from pcvhub.log.verify import CheckpointCover, QuarantineReport, RawRecord
from pcvhub.projections.projection import Projection
from pcvhub.schemas.codec import decode_envelope, decode_payload, encode_envelope
from pcvhub.schemas.envelope import Envelope, SignatureMeaning
from pcvhub.streams.case import CaseState
from pcvhub.streams.event import InboundEvent, SourcePosition
from pcvhub.streams.gatekeeper import Gatekeeper, PartitionLedger
from pcvhub.streams.rules import default_rules
from pcvhub.streams.timebounds import SIMULATION
from pcvhub.topics import partition_for
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.issuer import EventIssuer, IssuedEvent
from pcvhub.trust.registry import (
    REGISTRY_COI,
    Actor,
    KeyRecord,
    KeyRegistry,
)
from pcvhub.trust.signing import EventSigner, HybridKeyPair, verify_envelope

from .sealing import SEAL_BOOK, sealed
from .therapy_builder import CAST, DAY_US, T0_US, Hub, Party, TherapyScenario, decode_inbound

PARTITIONS = 6
INGRESS = "test.ingress.direct"
HOSPITAL_ROLES = ("physician", "nurse", "pharmacist", "billing")


def anchor_of(hub: Hub) -> KeyRegistry:
    """The trust anchor a deployment of ``hub`` ships: its registrar, nothing else."""
    registrar = hub.registrar
    return KeyRegistry.with_anchor(
        Actor(registrar.actor_id, "pcvhub registrar", registrar.roles, "HUB"),
        KeyRecord(registrar.actor_id, registrar.key_id, registrar.issuer.signer.keys.public,
                  T0_US - 365 * DAY_US))


class PayerScenario(TherapyScenario):
    """A therapy billed to ``payer_id`` instead of the builder's NHI."""

    def __init__(self, hub: Hub, *, payer_id: str, **options: Any) -> None:
        super().__init__(hub, **options)
        self.payer_id = payer_id

    def claim(self, n: int, administration_event_id: str | None = None,
              claim_id: str | None = None) -> InboundEvent:
        return self.issue("billing", "ClaimSubmitted", {
            "claim_id": claim_id or f"{self.payer_id}-CLM-{n}",
            "administration_event_id": administration_event_id or self.administration_event_of(n),
            "payer_id": self.payer_id, "amount": Decimal("980000.00"), "currency": "JPY",
            "procedure_code": "J3590", "diagnosis_codes": ["C43.5"]})

    def adjudicate(self, n: int, status: str = "APPROVED",
                   allowed: Decimal = Decimal("900000.00")) -> InboundEvent:
        return self.issue("payer", "ClaimAdjudicated", {
            "claim_id": f"{self.payer_id}-CLM-{n}", "payer_id": self.payer_id,
            "status": status, "allowed_amount": allowed, "currency": "JPY",
            "denial_reason_code": "CO-50" if status == "DENIED" else None})


@dataclass
class ScriptedLog:
    """What is sent to ingress, in order (the registrations first: a worker must have
    them on the canonical log before it judges the events they allow), and what the
    tests need to know about it."""

    hub: Hub
    gatekeeper: EventSigner
    ingress: list[tuple[bytes, bytes]] = field(default_factory=list)  # after registrations
    coi_a: str = ""
    coi_b: str = ""
    coi_c: str = ""
    quarantined_dose: str = ""
    refused_dispense_id: str = ""
    duplicate_id: str = ""
    stranger_id: str = ""
    garbage: bytes = b""
    accepted: list[str] = field(default_factory=list)  # event ids, in send order
    therapies: dict[str, TherapyScenario] = field(default_factory=dict)  # "A", "B", "C"

    @property
    def registrations(self) -> list[tuple[bytes, bytes]]:
        """(key, wire) of every registry event the hub admitted, the patients' cards of
        therapies added later included: all are sent before any therapy event."""
        return [(e.coi.encode(), e.raw) for e in self.hub.registry_log]

    def send(self, event: InboundEvent) -> None:
        self.ingress.append((event.coi.encode(), event.raw))

    def accept(self, scenario: TherapyScenario, event: InboundEvent) -> InboundEvent:
        scenario.accept(event)
        self.accepted.append(event.event_id)
        self.send(event)
        return event

    def run(self, scenario: TherapyScenario, until: str) -> None:
        end = scenario.path.index(until) + 1
        steps, scenario._position = scenario.path[scenario._position:end], end
        for label in steps:
            self.accept(scenario, scenario.step(label))

    @property
    def anchor(self) -> KeyRegistry:
        return anchor_of(self.hub)

    def gatekeep(self) -> list[RawRecord]:
        """The records a gatekeeper worker writes for the registrations then ``ingress``,
        in the order it writes them."""
        registry = self.anchor  # the gatekeeper folds registrations into it as it accepts
        gate = Gatekeeper(default_rules(registry, bounds=SIMULATION), EventIssuer(self.gatekeeper),
                          registry)
        ledgers = {p: PartitionLedger(p) for p in range(PARTITIONS)}
        next_ingress = dict.fromkeys(range(PARTITIONS), 0)
        next_out: dict[tuple[str, int], int] = {}
        records: list[RawRecord] = []
        for key, wire in [*self.registrations, *self.ingress]:
            partition = partition_for(key, PARTITIONS)
            source = SourcePosition(INGRESS, partition, next_ingress[partition])
            next_ingress[partition] += 1
            # one send step per ingress record, as an idle gatekeeper seals
            batch = gate.seal(gate.judge(wire, key, source, ledgers[partition]))
            for output in batch.at(SEAL_BOOK.append(batch.head)):
                offset = next_out.get((output.topic, partition), 0)
                next_out[(output.topic, partition)] = offset + 1
                records.append(RawRecord.at(output.topic, partition, offset, output.key,
                                            output.value, output.seal))
        return records


def scripted_log(hub: Hub | None = None, gatekeeper: EventSigner | None = None) -> ScriptedLog:
    """The scripted scenario (see the module docstring)."""
    hub = hub or Hub()
    if gatekeeper is None:
        gatekeeper = EventSigner("hub-gatekeeper", "hub-gatekeeper-k1", HybridKeyPair.generate())
    hub.register_gatekeeper(gatekeeper)
    kyoto = {name: hub.register(f"{name}-kyoto", {role}, org) for name, (role, org)
             in CAST.items()}
    osaka = {**kyoto, **{name: hub.register(f"{name}-osaka", {CAST[name][0]}, "OSAKA02")
                         for name in HOSPITAL_ROLES},
             "payer": hub.register("payer-kenpo", {"PAYER"}, "KENPO")}
    log = ScriptedLog(hub, gatekeeper)

    # B and C first: A's late dose moves event time on, which would make B's and C's
    # timers fire if they shared A's partition and came after it.
    b = PayerScenario(hub, cast=osaka, doses=1, payer_id="KENPO", patient_hash="bb" * 32)
    b.site, b.coi = "OSAKA02", new_coi("OSAKA02", 2026)
    b.case = CaseState.new(b.coi)
    log.coi_b = b.coi
    log.run(b, "adjudicate#1")

    c = TherapyScenario(hub, cast=kyoto, patient_hash="cc" * 32)
    log.coi_c = c.coi
    log.run(c, "hand_over_sample")

    a = TherapyScenario(hub, cast=kyoto, doses=3, patient_hash="aa" * 32)
    log.coi_a = a.coi
    log.run(a, "consent_payer")
    log.accept(a, a.consent("RESEARCH"))
    log.run(a, "record_qc")
    for result in ("FAIL", "PASS"):  # endotoxin failed, retested under investigation, passed
        log.accept(a, a.qc_result("endotoxin", "14.2" if result == "FAIL" else "2.1", result,
                                  investigation_ref="OOS-2026-007" if result == "PASS"
                                  else None))
    log.run(a, "pay#1")
    log.quarantined_dose = a.dose(3)
    log.accept(a, a.excursion([a.dose(3)]))
    refused = a.dispense(3)
    assert not a.judge(refused).accepted
    log.refused_dispense_id = refused.event_id
    log.send(refused)
    log.run(a, "schedule#2")
    a.now_us += 3 * DAY_US  # the repeated dose is given three days late
    log.run(a, "claim#2")
    log.accept(a, a.issue("payer", "ClaimAdjudicated", {
        "claim_id": "CLM-2", "payer_id": "NHI", "status": "DENIED",
        "allowed_amount": Decimal("0.00"), "currency": "JPY", "denial_reason_code": "CO-50"}))
    log.accept(a, a.milestone())
    log.therapies = {"A": a, "B": b, "C": c}

    duplicate = next(e for e in a.log if e.event_type == "DiagnosisRecorded")
    log.duplicate_id = duplicate.event_id
    log.send(duplicate)
    log.garbage = b"\xc3\x01 not an envelope at all"
    log.ingress.append((a.coi.encode(), log.garbage))
    stranger = EventIssuer(EventSigner("stranger", "stranger-k1", HybridKeyPair.generate()))
    forged = stranger.issue("ConsentWithdrawn", a.coi, {
        "scope": "RESEARCH", "consent_document_ref": "DocumentReference/forged",
        "reason": None, "granted_event_id": None},
        occurred_at_us=a.now_us + 1, prev_hash=a.case.head)
    log.stranger_id = forged.envelope.event_id
    log.ingress.append((forged.key, forged.wire))
    return log


# -- a big valid cohort, signed in batches -----------------------------------------------

class DraftingScenario(TherapyScenario):
    """A scenario whose events are chained drafts, to be signed later in batches.

    The chain digest covers the signed content, not the signatures, so a draft can be
    chained and folded before its batch is signed (see ``EventIssuer.issue_batch``).
    """

    def __init__(self, hub: Hub, **options: Any) -> None:
        super().__init__(hub, **options)
        self.drafts: list[Envelope] = []

    def issue(self, actor: str | Party, event_type: str, payload: dict[str, Any], *,
              occurred_at_us: int | None = None, prev_hash: bytes | None = None,
              meaning: SignatureMeaning = SignatureMeaning.AUTHORED,
              coi: str | None = None, late_entry: str | None = None) -> InboundEvent:
        who = self.actors[actor] if isinstance(actor, str) else actor
        if occurred_at_us is None:
            self.now_us += self.tick_us
            occurred_at_us = self.now_us
        draft = who.issuer.draft(event_type, coi or self.coi, payload,
                                 occurred_at_us=occurred_at_us, meaning=meaning,
                                 prev_hash=self.case.head if prev_hash is None else prev_hash,
                                 late_entry=late_entry)
        return decode_inbound(encode_envelope(draft))

    def commit(self, event: InboundEvent) -> InboundEvent:
        self.drafts.append(event.envelope)
        return super().commit(event)

    def accept(self, event: InboundEvent) -> InboundEvent:
        return self.commit(event)  # drafts are unsigned: the rules would refuse them all


def signed_cohort(hub: Hub, cast: dict[str, Party], events: int, *, batch: int = 64,
                  seed: int = 5) -> list[IssuedEvent]:
    """At least ``events`` events of whole valid therapies sharing ``cast``, each actor's
    events signed in Merkle batches of up to ``batch`` (small batches: building every
    inclusion path costs O(batch) per event), interleaved across therapies as if they
    arrived from many sites (each therapy's own order kept)."""
    therapies: list[list[Envelope]] = []
    issuers = {party.actor_id: party.issuer for party in cast.values()}
    total = 0
    while total < events:
        scenario = DraftingScenario(hub, cast=cast, patient_hash=f"{len(therapies):064x}")
        scenario.full_therapy()
        therapies.append(scenario.drafts)
        issuers[scenario.patient.actor_id] = scenario.patient.issuer
        total += len(scenario.drafts)
    by_signer: dict[str, list[Envelope]] = {}
    for drafts in therapies:
        for draft in drafts:
            by_signer.setdefault(draft.producer, []).append(draft)
    signed: dict[str, IssuedEvent] = {}
    for producer, drafts in by_signer.items():
        for start in range(0, len(drafts), batch):
            for issued in issuers[producer].issue_batch(drafts[start:start + batch]):
                signed[issued.envelope.event_id] = issued
    rng = random.Random(seed)
    cursors = [0] * len(therapies)
    live = list(range(len(therapies)))
    stream: list[IssuedEvent] = []
    while live:
        i = rng.choice(live)
        stream.append(signed[therapies[i][cursors[i]].event_id])
        cursors[i] += 1
        if cursors[i] == len(therapies[i]):
            live.remove(i)
    return stream


def project(path: Path, records: Sequence[RawRecord], anchor: KeyRegistry | None, *,
            batch: int = 50, topic_prefix: str = "test",
            log: Sequence[RawRecord] | None = None,
            checkpoint: CheckpointCover | None = None) -> QuarantineReport:
    """Project ``records`` into ``path`` in batches, as the runner does (no Kafka): the
    registry partition is read ahead from ``log`` (the whole log the records are part
    of; by default the records themselves). Returns the log reader's report."""
    registry_partition = partition_for(REGISTRY_COI.encode(), PARTITIONS)
    key = REGISTRY_COI.encode()

    def read_registry(from_offset: int) -> list[RawRecord]:
        return [r for r in (records if log is None else log)
                if r.topic == "events" and r.partition == registry_partition and r.key == key
                and r.offset >= from_offset]

    with Projection(path, topic_prefix, anchor or KeyRegistry(), anchor is not None,
                    registry_partition, read_registry, SEAL_BOOK,
                    checkpoint=checkpoint) as projection:
        for start in range(0, len(records), batch):
            projection.apply(records[start:start + batch])
        return projection.verifier.report


def canonical_records(events: list[tuple[bytes, bytes]], gatekeeper: EventSigner
                      ) -> list[RawRecord]:
    """Records as they would sit on the canonical topic, sealed in one batch by
    ``gatekeeper`` (whatever they hold: the tests alter them before they are sealed)."""
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    records = []
    for key, wire in events:
        partition = partition_for(key, PARTITIONS)
        records.append(RawRecord.at("events", partition, offsets[partition], key, wire))
        offsets[partition] += 1
    return sealed(gatekeeper, records)


# -- the builders themselves ---------------------------------------------------------------

def test_the_scripted_log_is_answered_as_the_scenario_says() -> None:
    log = scripted_log()
    records = log.gatekeep()
    canonical = [decode_envelope(r.value).event_id for r in records if r.topic == "events"]
    assert sorted(canonical) == sorted([e.event_id for e in log.hub.registry_log]
                                       + log.accepted)
    refusals = {}
    for r in records:
        if r.topic == "rejected":
            env = decode_envelope(r.value)
            _, payload = decode_payload(env.schema_fingerprint, env.payload, env.event_type)
            refusals[payload["rejected_event_id"] or "garbage"] = payload["reason_code"]
    assert refusals == {log.refused_dispense_id: "DOSE_QUARANTINED",
                        log.duplicate_id: "DUPLICATE_EVENT", "garbage": "MALFORMED",
                        log.stranger_id: "UNREGISTERED_KEY"}
    codes = []
    for r in records:
        if r.topic == "alerts":
            env = decode_envelope(r.value)
            codes.append(decode_payload(env.schema_fingerprint, env.payload)[1]["code"])
    assert sorted(codes) == ["ADMINISTRATION_OVERDUE", "DOSE_QUARANTINED"]


def test_a_batch_signed_cohort_verifies_and_chains() -> None:
    hub = Hub()
    cast = hub.register_cast("c")
    stream = signed_cohort(hub, cast, 100, batch=30)
    assert len(stream) >= 100
    heads: dict[str, bytes] = {}
    for issued in stream:
        env = issued.envelope
        assert env.batch_proof is not None
        assert verify_envelope(env, hub.registry.keys[(env.producer, env.key_id)].public).ok
        assert env.prev_hash == heads.get(env.coi, b"")
        heads[env.coi] = chain_digest(env)
    last = {issued.envelope.coi: issued.envelope.event_type for issued in stream}
    assert set(last.values()) == {"pcvhub.events.OutcomeMilestoneReached"}
