"""A whole, valid therapy built step by step from real signed events.

This is the one place that knows what each step of a therapy says (its payload) and who
signs it. The unit tests use it to build therapies in memory (``tests/unit/therapy_builder``
re-exports it); the demo uses it for the events partners send straight to the hub
(lab, design service, approvers, qualified person, courier, pharmacy, bedside, billing)
and folds what the connectors wrote into the same ``CaseState``.

``Hub`` is the trust side: a registrar (the trust anchor), the live ``KeyRegistry`` the
rules read, the registry chain (``REGISTRY_COI``) and the default rule set. Actors are
registered the way production registers them: the registrar signs an ``ActorRegistered``
event, the rules judge it on the registry chain, and only then is it folded into the
registry.

``TherapyScenario`` registers one actor per role (with real hybrid keys) and issues each
step of one therapy as an ``InboundEvent`` decoded from its wire bytes, exactly as the
gatekeeper sees it. Issuing a step does *not* apply it: a test judges the event, then
calls ``commit`` (or uses ``accept``, which judges, commits and fails on a refusal).

    hub = Hub()
    scenario = TherapyScenario(hub)
    scenario.run_until("approve_second")     # enrol ... both design approvals, committed
    event = scenario.start_manufacturing()   # the next step, not yet applied
    verdict = hub.judge(event, scenario.case)

Steps are labels: a method name, or ``name#n`` for the ``n``-th of a repeated step: of
dose ``n`` (``"dispense#2"``), of the ``n``-th QC test (``"qc_test#1"``). Event time is a
scenario clock (``tick_us`` per event) so timers can be tested with compressed durations;
``clock_to`` sets it for the next step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pcvhub.ids import new_coi
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.schemas.envelope import SignatureMeaning
from pcvhub.schemas.specifications import RECIPES, panel_for, recipe_for
from pcvhub.streams.case import CaseState
from pcvhub.streams.event import InboundEvent
from pcvhub.streams.rules import default_rules
from pcvhub.streams.timebounds import SIMULATION
from pcvhub.streams.verdict import Verdict
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.patient_card import BedsideChallenge, PatientCard, witnessed_proof
from pcvhub.trust.registry import (
    REGISTRY_COI,
    Actor,
    KeyRecord,
    KeyRegistry,
    registration_payload,
    revocation_payload,
    rotation_payload,
)
from pcvhub.trust.signing import EventSigner, HybridKeyPair

if TYPE_CHECKING:
    from pcvhub.streams.sandbox import Sandbox

SITE = "KYOTO01"
#: the design model the cast's design service runs, and the hash of its container
MODEL_ID = "neoagent 3.1"
MODEL_HASH = "ab" * 32
_QC_METHODS = {"sterility": "Ph. Eur. 2.6.1", "endotoxin": "Ph. Eur. 2.6.14",
               "identity": "NGS identity SOP-41",
               "mRNA integrity": "capillary electrophoresis SOP-12"}
T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
DAY_US = 86_400_000_000
NIL_UUID = "00000000-0000-0000-0000-000000000000"  # "no such event", still a valid uuid
APPROVED = SignatureMeaning.APPROVED


def decode_inbound(wire: bytes) -> InboundEvent:
    """Decode wire bytes the way the gatekeeper does (envelope, payload, short type)."""
    envelope = decode_envelope(wire)
    full_name, payload = decode_payload(envelope.schema_fingerprint, envelope.payload,
                                        envelope.event_type)
    return InboundEvent(envelope, load_catalog().short_name(full_name), payload, wire)


@dataclass
class Party:
    """An actor as it acts: its id, roles, site, private keys and its event issuer."""

    actor_id: str
    roles: frozenset[str]
    site: str
    issuer: EventIssuer

    @property
    def key_id(self) -> str:
        return self.issuer.signer.key_id

    @classmethod
    def new(cls, actor_id: str, roles: frozenset[str], site: str) -> Party:
        signer = EventSigner(actor_id, f"{actor_id}-k1", HybridKeyPair.generate())
        return cls(actor_id, roles, site, EventIssuer(signer))


class Hub:
    """The registrar, the live key registry, the registry chain and the rules."""

    def __init__(self, start_us: int = T0_US, registrar: Party | None = None) -> None:
        """:param registrar: the trust anchor's actor (default: a fresh one, for tests)."""
        self.registrar = registrar or Party.new("hub-registrar", frozenset({"REGISTRAR"}),
                                                "HUB")
        self.anchor_valid_from_us = start_us - 365 * DAY_US
        self.registry = KeyRegistry.with_anchor(
            self.anchor_actor,
            KeyRecord(self.registrar.actor_id, self.registrar.key_id,
                      self.registrar.issuer.signer.keys.public, self.anchor_valid_from_us))
        self.registry_case = CaseState.new(REGISTRY_COI)
        self.registry_log: list[InboundEvent] = []  # admitted registry events, in order
        self.rules = default_rules(self.registry, bounds=SIMULATION)
        self.clock_us = start_us - DAY_US  # actors are registered the day before

    @property
    def anchor_actor(self) -> Actor:
        return Actor(self.registrar.actor_id, "pcvhub registrar", self.registrar.roles, "HUB")

    def judge(self, event: InboundEvent, case: CaseState) -> Verdict:
        return self.rules.check(event, case)

    def registry_event(self, event_type: str, payload: dict[str, Any], *,
                       by: Party | None = None, at_us: int | None = None,
                       late_entry: str | None = None) -> InboundEvent:
        """A registry event on the registry chain, signed by the registrar unless ``by``
        (``late_entry``: recorded after the fact, for this reason)."""
        if at_us is None:
            self.clock_us += 1
            at_us = self.clock_us
        issued = (by or self.registrar).issuer.issue(
            event_type, REGISTRY_COI, payload, occurred_at_us=at_us,
            prev_hash=self.registry_case.head, late_entry=late_entry)
        return decode_inbound(issued.wire)

    def admit(self, event: InboundEvent) -> InboundEvent:
        """Judge a registry event; fold it into the registry chain and the key registry."""
        verdict = self.judge(event, self.registry_case)
        if not verdict.accepted:
            raise AssertionError(f"{event.event_type} refused: {verdict}")
        self.registry_case.apply(event, chain_digest(event.envelope))
        self.registry.apply_event(event.event_id, event.event_type, event.payload)
        self.registry_log.append(event)
        return event

    def register(self, actor_id: str, roles: set[str] | frozenset[str], site: str) -> Party:
        """A new actor with fresh keys, registered through the registrar."""
        party = Party.new(actor_id, frozenset(roles), site)
        return self.register_party(party, f"{actor_id} (test)")

    def register_party(self, party: Party, display_name: str) -> Party:
        """Register an actor whose keys already exist (e.g. in a key store); its key is
        valid from the registrar's clock on."""
        actor = Actor(party.actor_id, display_name, party.roles, party.site)
        self.admit(self.registry_event("ActorRegistered", registration_payload(
            actor, party.key_id, party.issuer.signer.keys.public, self.clock_us)))
        return party

    def register_cast(self, suffix: str) -> dict[str, Party]:
        """One registered party per part of ``CAST``; the therapies of a cohort share it."""
        return {name: self.register(f"{name}-{suffix}", {role}, org)
                for name, (role, org) in CAST.items()}

    def register_model(self, designer: Party, approver: Party, model_id: str = MODEL_ID,
                       model_hash: str = MODEL_HASH) -> InboundEvent:
        """The registrar registers a validated design model for ``designer``."""
        return self.admit(self.registry_event("ModelRegistered", {
            "model_id": model_id, "version": "3.1", "model_hash": model_hash,
            "design_service": designer.actor_id,
            "validation_evidence_ref": "VAL-NEOAGENT-3.1", "approved_by": approver.actor_id,
            "valid_from": self.clock_us}))

    def model_of(self, designer: Party, approver: Party) -> str:
        """The id of the model registered for ``designer`` (registered now if none is)."""
        for model in self.registry.models.values():
            if model.design_service == designer.actor_id and model.retired_at_us is None:
                return model.model_id
        model_id = f"{MODEL_ID} ({designer.actor_id})"
        self.register_model(designer, approver, model_id)
        return model_id

    def register_gatekeeper(self, gatekeeper: EventSigner) -> InboundEvent:
        """Register the gatekeeper's own key (it signs rejections and alerts)."""
        return self.admit(self.registry_event("ActorRegistered", registration_payload(
            Actor(gatekeeper.producer, "gatekeeper", frozenset({"GATEKEEPER"}), "HUB"),
            gatekeeper.key_id, gatekeeper.keys.public, self.clock_us)))

    def deploy_gatekeeper(self, sandbox: Sandbox) -> EventSigner:
        """Make this hub's registrar the sandbox's trust anchor, give the sandbox a
        gatekeeper key and register it: what every sandboxed run starts with."""
        registrar = self.registrar.issuer.signer
        anchor = self.registry.keys[(registrar.producer, registrar.key_id)]
        gatekeeper = sandbox.install_identities(registrar, valid_from_us=anchor.valid_from_us)
        self.register_gatekeeper(gatekeeper)
        return gatekeeper

    def revoke(self, party: Party, at_us: int, reason: str = "COMPROMISED") -> InboundEvent:
        return self.admit(self.registry_event(
            "KeyRevoked", revocation_payload(party.actor_id, party.key_id, at_us, reason),
            at_us=at_us))

    # -- the patient's card ------------------------------------------------------------

    def register_patient(self, card: PatientCard) -> InboundEvent:
        """The registrar registers a new card's key as a PATIENT actor (no pseudonym of the
        patient goes onto the registry chain: the therapy chain binds it)."""
        return self.admit(self.registry_event("ActorRegistered", registration_payload(
            card.actor(), card.key_id, card.public, self.clock_us)))

    def card_lost(self, card: PatientCard, at_us: int) -> InboundEvent:
        """The patient reports the card lost: its key is revoked from ``at_us``."""
        return self.admit(self.registry_event("KeyRevoked", revocation_payload(
            card.patient_actor_id, card.key_id, at_us, "CARD_LOST"), at_us=at_us))

    def reissue_card(self, lost: PatientCard, at_us: int) -> PatientCard:
        """A replacement card: the same patient actor with a new key (KeyRotated); it signs
        for the therapy once a clinician witnesses it (PatientCredentialIssued)."""
        card = lost.reissued()
        self.admit(self.registry_event("KeyRotated", rotation_payload(
            card.patient_actor_id, lost.key_id, card.key_id, card.public, at_us), at_us=at_us))
        return card


# name in the scenario -> (role, site or organisation); hospital staff work at SITE
CAST: dict[str, tuple[str, str]] = {
    "physician": ("PHYSICIAN", SITE),
    "nurse": ("NURSE", SITE),
    "pharmacist": ("HOSPITAL_PHARMACIST", SITE),
    "billing": ("BILLING", SITE),
    "lab": ("SEQUENCING_LAB", "GENOLAB"),
    "designer": ("DESIGN_SERVICE", "NEOAI"),
    "approver1": ("DESIGN_APPROVER", "TUMOUR-BOARD"),
    "approver2": ("DESIGN_APPROVER", "TUMOUR-BOARD"),
    "manufacturer": ("MANUFACTURER", "MFG-KOBE"),
    "qc": ("QC_ANALYST", "MFG-KOBE"),
    "qp": ("QUALIFIED_PERSON", "MFG-KOBE"),
    "courier": ("COURIER", "COLDCHAIN"),
    "payer": ("PAYER", "NHI"),
    "researcher": ("RESEARCHER", "UNIV-RES"),
}

#: the therapy type a scenario treats unless told otherwise
THERAPY_TYPE = "individualized-neoantigen-mRNA"
#: the manufacturing recipe of the default therapy type, one step per recipe step, in order
RECIPE_STEPS = tuple(f"complete_step#{n}"
                     for n, _ in enumerate(RECIPES[THERAPY_TYPE].steps, start=1))
#: the QC panel of the default therapy type, one step per test; sterility comes last
QC_STEPS = ("qc_test#1", "qc_test#2", "qc_test#3", "record_qc")
_BEFORE_DOSES = (
    "enrol", "issue_card", "confirm_eligibility", "consent_treatment", "consent_genome",
    "consent_payer", "diagnose", "order", "collect", "hand_over_sample", "accept_sample",
    "receive_sample",
    "sequence", "call_variants", "design", "approve_first", "approve_second", "start_manufacturing",
    *RECIPE_STEPS, *QC_STEPS, "release", "ship", "receive_at_site",
)
_PER_DOSE = ("schedule", "reserve", "dispense", "verify_identity", "administer", "outcome",
             "claim", "adjudicate", "pay")


def happy_path(doses: int = 2) -> tuple[str, ...]:
    """Every step of a complete therapy: each dose placed, then each dose given and billed,
    then the outcome-based milestone."""
    placed = tuple(f"place#{n}" for n in range(1, doses + 1))
    given = tuple(f"{step}#{n}" for n in range(1, doses + 1) for step in _PER_DOSE)
    return (*_BEFORE_DOSES, *placed, *given, "milestone")


HAPPY_PATH = happy_path(2)


class TherapyScenario:
    """One therapy of one patient, its cast of actors and its folded ``CaseState``."""

    def __init__(self, hub: Hub, *, doses: int = 2, cast: dict[str, Party] | None = None,
                 patient_hash: str = "a1" * 32, tick_us: int = 1_000_000,
                 therapy_type: str = THERAPY_TYPE,
                 shelf_life_us: int | None = 90 * DAY_US, site: str = SITE,
                 coi: str | None = None, start_us: int = T0_US,
                 card: PatientCard | None = None) -> None:
        """:param card: the patient's card, already registered (default: a new card,
            registered now through the hub's registrar)."""
        self.hub = hub
        self.site = site
        self.coi = coi or new_coi(site, 2026)
        self.case = CaseState.new(self.coi)
        self.patient_hash = patient_hash
        self.therapy_type = therapy_type
        self.tick_us = tick_us
        self.shelf_life_us = shelf_life_us
        self.now_us = start_us
        self.log: list[InboundEvent] = []  # committed events, in order
        # what a dose is billed, to whom, in which currency
        self.payer_id = "NHI"
        self.currency = "JPY"
        self.dose_price = Decimal("1250000.00")
        self.procedure_modifiers: list[str] | None = None
        self.diagnosis_codes = ["C43.5"]
        suffix = self.coi[-6:].lower()
        # A cohort shares one cast (``cast``); a lone scenario registers its own.
        self.actors: dict[str, Party] = cast or hub.register_cast(suffix)
        self.sample_id = "SMP-1"
        self.sequencing_hash = "5e" * 32
        self.variant_calls_hash = "7c" * 32
        self.design_id = "DSN-1"
        self.model_id = hub.model_of(self.actors["designer"], self.actors["approver1"])
        self.design_hash = "de" * 32
        self.batch_id = "BATCH-1"
        self.shipment_id = "SHP-1"
        self.dose_ids = [f"DOSE-{n}" for n in range(1, doses + 1)]
        # the patient's own card: its key is registered now, bound at the issue_card step
        self.biometric_template = f"minutiae of the patient of {self.coi}".encode()
        if card is None:
            card = PatientCard.issue(site, self.biometric_template)
            hub.register_patient(card)
        self.card = card
        self._patient: Party | None = None
        self.path = happy_path(doses)
        self._position = 0  # how far run_until has walked the path

    def id_of(self, name: str) -> str:
        return self.actors[name].actor_id

    @property
    def patient(self) -> Party:
        """The patient as a signer: the key of the card they hold now."""
        if self._patient is None or self._patient.key_id != self.card.key_id:
            self._patient = Party(self.card.patient_actor_id, frozenset({"PATIENT"}),
                                  self.site, self.card.issuer())
        return self._patient

    def clock_to(self, at_us: int) -> None:
        """Make the next issued step occur at ``at_us`` (the clock then ticks on from it)."""
        self.now_us = at_us - self.tick_us

    # -- issuing, judging, committing ------------------------------------------------

    def issue(self, actor: str | Party, event_type: str, payload: dict[str, Any], *,
              occurred_at_us: int | None = None, prev_hash: bytes | None = None,
              meaning: SignatureMeaning = SignatureMeaning.AUTHORED,
              coi: str | None = None, late_entry: str | None = None) -> InboundEvent:
        """Sign ``payload`` as ``actor``, chained to the case head, and decode it back
        (``late_entry``: flag it as recorded late, with this reason)."""
        who = self.actors[actor] if isinstance(actor, str) else actor
        if occurred_at_us is None:
            self.now_us += self.tick_us
            occurred_at_us = self.now_us
        issued = who.issuer.issue(
            event_type, coi or self.coi, payload, occurred_at_us=occurred_at_us,
            prev_hash=self.case.head if prev_hash is None else prev_hash, meaning=meaning,
            late_entry=late_entry)
        return decode_inbound(issued.wire)

    def judge(self, event: InboundEvent) -> Verdict:
        return self.hub.judge(event, self.case)

    def commit(self, event: InboundEvent) -> InboundEvent:
        """Fold an (accepted) event into the scenario's case, as the gatekeeper does."""
        self.case.apply(event, chain_digest(event.envelope))
        self.log.append(event)
        return event

    def accept(self, event: InboundEvent) -> InboundEvent:
        """Judge with the hub's rules; raise AssertionError on a refusal; commit."""
        verdict = self.judge(event)
        if not verdict.accepted:
            raise AssertionError(f"{event.event_type} refused: {verdict}")
        return self.commit(event)

    def step(self, label: str) -> InboundEvent:
        """Issue (not judge) the step named ``label`` (``"name"`` or ``"name#n"``)."""
        name, _, number = label.partition("#")
        method: Callable[..., InboundEvent] = getattr(self, name)
        return method(int(number)) if number else method()

    def run(self, labels: tuple[str, ...]) -> list[InboundEvent]:
        """Issue, judge and commit each step."""
        return [self.accept(self.step(label)) for label in labels]

    def run_until(self, last: str, *, skipping: tuple[str, ...] = ()) -> list[InboundEvent]:
        """Run the happy path up to and including ``last``, leaving out ``skipping``;
        a second call continues where the previous one stopped."""
        end = self.path.index(last) + 1
        steps, self._position = self.path[self._position:end], end
        return self.run(tuple(s for s in steps if s not in skipping))

    def full_therapy(self) -> list[InboundEvent]:
        return self.run(self.path)

    # -- the hospital ------------------------------------------------------------------

    def enrol(self) -> InboundEvent:
        return self.issue("physician", "PatientEnrolled", {
            "patient_hash": self.patient_hash, "site_id": self.site,
            "mrn_assigning_authority": "KUH", "sex": "FEMALE",
            "therapy_type": self.therapy_type, "trial_id": "NCT01234567"})

    def confirm_eligibility(self, eligible: bool = True) -> InboundEvent:
        return self.issue("physician", "EligibilityConfirmed", {
            "criteria_version": "protocol v2.1", "eligible": eligible,
            "confirmed_by": self.id_of("physician"),
            "failed_criteria": None if eligible else ["ECOG<=1"]})

    def issue_card(self, card: PatientCard | None = None, reason: str = "ENROLMENT",
                   replaces_key_id: str | None = None, by: str = "nurse") -> InboundEvent:
        """A clinician hands the patient their card and witnesses its key as the patient's."""
        card = card or self.card
        return self.issue(by, "PatientCredentialIssued", card.credential_payload(
            self.patient_hash, reason, replaces_key_id), meaning=SignatureMeaning.VERIFIED)

    def consent(self, scope: str, *, expires_at_us: int | None = None,
                by: str | Party | None = None, late_entry: str | None = None
                ) -> InboundEvent:
        """The patient signs the consent with their card (``by``: someone else signs it;
        ``late_entry``: it is recorded after the fact, for this reason)."""
        signer = self.patient if by is None else by
        meaning = APPROVED if signer is self.patient or (
            isinstance(signer, Party) and "PATIENT" in signer.roles) \
            else SignatureMeaning.AUTHORED
        return self.issue(signer, "ConsentGranted", {
            "scope": scope, "consent_document_ref": f"DocumentReference/consent-{scope}",
            "expires_at": expires_at_us, "consent_form_version": "v3.2"}, meaning=meaning,
            late_entry=late_entry)

    def witnessed_consent(self, scope: str, why: str = "PHYSICALLY_UNABLE",
                          by: str = "physician") -> InboundEvent:
        """A clinician witnesses the consent of a patient who cannot sign it."""
        return self.issue(by, "ConsentWitnessed", {
            "scope": scope, "consent_document_ref": f"DocumentReference/consent-{scope}",
            "why_patient_did_not_sign": why, "representative": None, "expires_at": None,
            "consent_form_version": "v3.2"}, meaning=SignatureMeaning.VERIFIED)

    def consent_treatment(self) -> InboundEvent:
        return self.consent("TREATMENT")

    def consent_genome(self) -> InboundEvent:
        return self.consent("GENOME_STORAGE")

    def consent_payer(self) -> InboundEvent:
        return self.consent("PAYER_SHARING")

    def withdraw(self, scope: str, by: str | Party | None = None) -> InboundEvent:
        """The patient withdraws with their card alone (``by``: someone records it)."""
        return self.issue(self.patient if by is None else by, "ConsentWithdrawn", {
            "scope": scope, "consent_document_ref": f"DocumentReference/withdrawal-{scope}"})

    def diagnose(self) -> InboundEvent:
        return self.issue("physician", "DiagnosisRecorded", {
            "icd10_code": "C43.5", "icdo3_morphology": "8720/3", "icdo3_topography": "C44.5",
            "stage": "IIIB", "hla_type": ["HLA-A*02:01", "HLA-B*07:02", "HLA-C*07:02"],
            "staging_system": "AJCC 8th edition"})

    def order(self) -> InboundEvent:
        return self.issue("physician", "TherapyOrdered", {
            "order_id": "ORD-1", "ordering_clinician": self.id_of("physician"),
            "site_id": self.site, "therapy_type": self.therapy_type,
            "placer_order_number": "PLC-0001"})

    def collect(self) -> InboundEvent:
        return self.issue("nurse", "SampleCollected", {
            "sample_id": self.sample_id, "donation_id": "W1234 26 000001",
            "sample_type": "TUMOUR_TISSUE", "location": "theatre 3",
            "preservation": "FRESH_FROZEN"})

    def hand_over_sample(self) -> InboundEvent:
        """The nurse releases the sample to the lab (the lab's acceptance moves it)."""
        return self.release_item("nurse", self.sample_id, "lab")

    def accept_sample(self) -> InboundEvent:
        return self.transfer("lab", self.sample_id, "nurse", "lab", item_kind="SAMPLE")

    def release_item(self, holder: str, item_id: str, taker: str,
                     location: str = "pathology hand-over desk") -> InboundEvent:
        """The first signature of a hand-over: ``holder`` releases the item to ``taker``."""
        return self.issue(holder, "CustodyReleased", {
            "item_id": item_id, "from_actor": self.id_of(holder),
            "to_actor": self.id_of(taker), "location": location, "seal_id": "SEAL-77"})

    def transfer(self, signer: str, item_id: str, giver: str, taker: str,
                 item_kind: str | None = None,
                 location: str = "pathology hand-over desk") -> InboundEvent:
        """The second signature of a hand-over: the receiver (normally ``signer`` is
        ``taker``) accepts the item ``giver`` released to it."""
        return self.issue(signer, "CustodyTransferred", {
            "item_id": item_id, "from_actor": self.id_of(giver),
            "to_actor": self.id_of(taker), "location": location,
            "item_kind": item_kind, "seal_id": "SEAL-77"})

    # -- the sequencing lab and the design service -------------------------------------

    def receive_sample(self) -> InboundEvent:
        return self.issue("lab", "SampleReceived", {
            "sample_id": self.sample_id, "condition": "ACCEPTABLE",
            "location": "accessioning freezer 1", "temperature_celsius": -78.5})

    def sequence(self, sample_ids: list[str] | None = None,
                 by: str | Party = "lab") -> InboundEvent:
        return self.issue(by, "SequencingCompleted", {
            "sample_ids": sample_ids or [self.sample_id], "content_hash": self.sequencing_hash,
            "storage_ref": "genome-store://genolab/run-42", "platform": "Illumina NovaSeq X",
            "mean_coverage": 150.0, "assay": "WES tumour/normal + RNA-seq"})

    def call_variants(self, sequencing_hash: str | None = None) -> InboundEvent:
        return self.issue("lab", "VariantCallsProduced", {
            "content_hash": self.variant_calls_hash,
            "sequencing_hash": sequencing_hash or self.sequencing_hash,
            "storage_ref": "genome-store://genolab/run-42/somatic.vcf.gz",
            "pipeline_version": "somatic-wes 4.2.1", "variant_count": 312,
            "reference_genome": "GRCh38"})

    def store_genome(self) -> InboundEvent:
        """The lab puts the genome into the vault, 2-of-3 shares over three sites (off the
        happy path: a lab that keeps its own genome store never sends it)."""
        return self.issue("lab", "GenomeStored", {
            "root_hash": "9a" * 32, "content_size": 3 * 1_048_576, "chunk_size": 1_048_576,
            "chunk_count": 3, "scheme": "shamir-gf256", "randomness": "os-getrandom",
            "security": "INFORMATION_THEORETIC", "k": 2, "n": 3,
            "shares": [{"share_index": i, "site_id": site,
                        "storage_ref": f"vault://{site.lower()}/{self.coi}/{i}",
                        "sealing": "hpke-mlkem768x25519-hkdfsha256-aes256gcm",
                        "recipient_key_id": f"{i:02x}" * 32}
                       for i, site in enumerate(("KYOTO01", "TOHOKU", "NICT"), start=1)]})

    def design(self, sequencing_hash: str | None = None) -> InboundEvent:
        return self.issue("designer", "NeoantigenDesignProduced", {
            "design_id": self.design_id, "design_hash": self.design_hash,
            "sequencing_hash": sequencing_hash or self.sequencing_hash,
            "model_id": self.model_id, "model_hash": MODEL_HASH, "epitope_count": 20,
            "variant_calls_hash": self.variant_calls_hash})

    def approval(self, approver: str, design_hash: str | None = None,
                 meaning: SignatureMeaning = APPROVED) -> InboundEvent:
        return self.issue(approver, "DesignApproved", {
            "design_id": self.design_id, "design_hash": design_hash or self.design_hash,
            "approver_role": "medical reviewer"}, meaning=meaning)

    def approve_first(self) -> InboundEvent:
        return self.approval("approver1")

    def approve_second(self) -> InboundEvent:
        return self.approval("approver2")

    # -- the manufacturer --------------------------------------------------------------

    def start_manufacturing(self, design_hash: str | None = None) -> InboundEvent:
        return self.issue("manufacturer", "ManufacturingStarted", {
            "batch_id": self.batch_id, "design_hash": design_hash or self.design_hash,
            "facility_id": "MFG-KOBE-1", "planned_dose_count": len(self.dose_ids),
            "batch_record_version": "MBR-7"})

    def complete_step(self, n: int, step: str | None = None) -> InboundEvent:
        """The ``n``-th step of the therapy type's recipe (``step``: another name)."""
        recipe = recipe_for(self.therapy_type)
        name = step or (recipe.steps[n - 1] if recipe is not None else f"step {n}")
        return self.issue("manufacturer", "ManufacturingStepCompleted", {
            "batch_id": self.batch_id, "step": name,
            "operator": self.id_of("manufacturer"), "equipment_id": f"EQ-{n:02d}",
            "parameter_hash": "9a" * 32})

    def qc_result(self, test: str, value: str, result: str = "PASS",
                  investigation_ref: str | None = None) -> InboundEvent:
        """A QC result of ``test`` against the panel's specification and unit."""
        panel = panel_for(self.therapy_type)
        limit = panel.limit(test) if panel is not None else None
        return self.issue("qc", "QcResultRecorded", {
            "batch_id": self.batch_id, "test": test,
            "specification": limit.specification if limit else "no growth",
            "value": value, "unit": limit.unit if limit else None, "result": result,
            "method_ref": _QC_METHODS.get(test), "investigation_ref": investigation_ref},
            meaning=SignatureMeaning.REVIEWED)

    def qc_test(self, n: int) -> InboundEvent:
        """The passing result of the ``n``-th test of the panel before sterility."""
        test, value = (("endotoxin", "0.8"), ("identity", self.design_hash),
                       ("mRNA integrity", "93"))[n - 1]
        return self.qc_result(test, value)

    def record_qc(self, result: str = "PASS",
                  investigation_ref: str | None = None) -> InboundEvent:
        """The sterility result (the last test of the panel to be read)."""
        return self.qc_result("sterility", "no growth" if result == "PASS" else "growth",
                              result, investigation_ref)

    def release(self, disposition: str = "RELEASED", signer: str = "qp") -> InboundEvent:
        released = disposition == "RELEASED"
        expiry = (self.now_us + self.tick_us + self.shelf_life_us
                  if released and self.shelf_life_us is not None else None)
        return self.issue(signer, "BatchDispositioned", {
            "batch_id": self.batch_id, "disposition": disposition,
            "qualified_person": self.id_of(signer),
            "dose_ids": self.dose_ids if released else [], "expiry": expiry,
            "reason": None if released else "sterility failure",
            "certificate_ref": "CoA-BATCH-1"}, meaning=SignatureMeaning.RESPONSIBLE)

    def ship(self, shipment_id: str | None = None, by: str = "manufacturer") -> InboundEvent:
        return self.issue(by, "ShipmentDispatched", {
            "shipment_id": shipment_id or self.shipment_id, "item_ids": self.dose_ids,
            "recipient": self.id_of("pharmacist"), "courier": "ColdChain Express",
            "destination_site_id": self.site, "temperature_range": "-80..-60 C",
            "tracking_number": "CC-123456", "logger_id": "LOG-9", "seal_id": "SEAL-SHP-1"})

    def receive_at_site(self, shipment_id: str | None = None, by: str = "pharmacist", *,
                        seal_intact: bool = True, seal_id: str = "SEAL-SHP-1",
                        item_ids: list[str] | None = None) -> InboundEvent:
        return self.issue(by, "ShipmentReceived", {
            "shipment_id": shipment_id or self.shipment_id,
            "location": "pharmacy freezer 2", "seal_intact": seal_intact,
            "seal_id": seal_id, "item_ids": item_ids})

    # -- pharmacy, bedside, follow-up (per dose n) -------------------------------------

    def dose(self, n: int) -> str:
        return self.dose_ids[n - 1]

    def place(self, n: int, site: str | None = None,
              method: str = "CONSIGNMENT") -> InboundEvent:
        return self.issue("pharmacist", "InventoryPlaced", {
            "dose_id": self.dose(n), "site_id": site or self.site,
            "location": "pharmacy freezer 2, shelf 3", "placement_method": method})

    def schedule(self, n: int) -> InboundEvent:
        return self.issue("physician", "AdministrationScheduled", {
            "administration_id": f"ADM-{n}", "dose_number": n,
            "scheduled_for": self.now_us + 10 * self.tick_us, "site_id": self.site})

    def reserve(self, n: int) -> InboundEvent:
        return self.issue("pharmacist", "DoseReserved", {
            "dose_id": self.dose(n), "administration_id": f"ADM-{n}",
            "reserved_until": self.now_us + 20 * self.tick_us})

    def dispense(self, n: int, dose_id: str | None = None,
                 identity_check_event_id: str | None = None) -> InboundEvent:
        return self.issue("pharmacist", "DoseDispensed", {
            "dose_id": dose_id or self.dose(n), "administration_id": f"ADM-{n}",
            "identity_check_event_id": identity_check_event_id,
            "dispensed_to": self.id_of("nurse")})

    def challenge(self, n: int, *, age_us: int | None = None) -> BedsideChallenge:
        """A fresh bedside challenge for dose ``n``, issued ``age_us`` before the next step
        occurs (default: a few seconds, never more than one tick)."""
        at = self.now_us + self.tick_us
        return BedsideChallenge.fresh(self.coi, self.dose(n), f"ADM-{n}",
                                      at - (min(self.tick_us, 5_000_000) if age_us is None
                                            else age_us))

    def verify_identity(self, n: int, patient_hash: str | None = None,
                        result: str = "MATCH", step: str = "BEDSIDE",
                        proof: dict[str, Any] | str | None = "card",
                        card: PatientCard | None = None) -> InboundEvent:
        """The bedside check of dose ``n``: the patient's card answers a fresh challenge
        (``proof``: "card", "biometric" for a match-on-card, "witnessed", None for no proof,
        or a ready ``patient_proof``)."""
        if isinstance(proof, str):
            challenge = self.challenge(n)
            holder = card or self.card
            proof = {"card": lambda: holder.answer(challenge),
                     "biometric": lambda: holder.answer(challenge, self.biometric_template),
                     "witnessed": lambda: witnessed_proof(
                         challenge, "patient sedated; two identifiers checked on the "
                         "wristband with a second nurse")}[proof]()
        return self.issue("nurse", "IdentityVerified", {
            "patient_hash": patient_hash or self.patient_hash, "step": step,
            "method": "BIOMETRIC" if proof and proof["kind"] == "CARD_BIOMETRIC_MATCH"
            else "WRISTBAND_BARCODE", "result": result, "dose_id": self.dose(n),
            "patient_proof": proof if step == "BEDSIDE" else None},
            meaning=SignatureMeaning.VERIFIED)

    def last_check_of(self, n: int) -> str:
        """The latest accepted identity check of dose ``n`` (any result), or a nil id."""
        checks = [e for e, c in self.case.identity_checks.items() if c.dose_id == self.dose(n)]
        return checks[-1] if checks else NIL_UUID

    def administer(self, n: int, dose_id: str | None = None,
                   identity_check_event_id: str | None = None,
                   by: str = "nurse") -> InboundEvent:
        return self.issue(by, "DoseAdministered", {
            "dose_id": dose_id or self.dose(n), "administration_id": f"ADM-{n}",
            "dose_number": n,
            "identity_check_event_id": identity_check_event_id or self.last_check_of(n),
            "route": "INTRAMUSCULAR", "administered_by": self.id_of("nurse"),
            "body_site": "left deltoid"})

    def administration_event_of(self, n: int) -> str:
        found = [e for e, a in self.case.administrations.items()
                 if a.administration_id == f"ADM-{n}"]
        return found[-1] if found else NIL_UUID

    def outcome(self, n: int) -> InboundEvent:
        return self.issue("physician", "OutcomeRecorded", {
            "time_point": f"week-{6 * n}", "recist_response": "SD",
            "ctdna_status": "NOT_DETECTED", "survival_status": "ALIVE",
            "response_criteria": "RECIST 1.1"})

    # -- receivables -------------------------------------------------------------------

    def claim(self, n: int, administration_event_id: str | None = None,
              claim_id: str | None = None) -> InboundEvent:
        return self.issue("billing", "ClaimSubmitted", {
            "claim_id": claim_id or f"CLM-{n}",
            "administration_event_id": administration_event_id or self.administration_event_of(n),
            "payer_id": self.payer_id, "amount": self.dose_price, "currency": self.currency,
            "procedure_code": "J3590", "diagnosis_codes": self.diagnosis_codes,
            "procedure_modifiers": self.procedure_modifiers})

    def adjudicate(self, n: int) -> InboundEvent:
        return self.issue("payer", "ClaimAdjudicated", {
            "claim_id": f"CLM-{n}", "payer_id": self.payer_id, "status": "APPROVED",
            "allowed_amount": self.dose_price, "currency": self.currency})

    def pay(self, n: int) -> InboundEvent:
        return self.issue("billing", "PaymentPosted", {
            "claim_id": f"CLM-{n}", "payer_id": self.payer_id, "amount": self.dose_price,
            "currency": self.currency, "remittance_ref": f"TRN-{n}", "paid_on": self.now_us})

    def milestone(self) -> InboundEvent:
        evidence = [e.event_id for e in self.log if e.event_type == "OutcomeRecorded"]
        return self.issue("payer", "OutcomeMilestoneReached", {
            "agreement_id": "OBA-2026-1", "milestone": "stable disease at week 12",
            "payer_id": self.payer_id, "amount": Decimal("500000.00"), "currency": self.currency,
            "evidence_event_ids": evidence, "payment_direction": "PAYER_TO_MANUFACTURER"})

    # -- off the happy path ------------------------------------------------------------

    def excursion(self, item_ids: list[str] | None = None) -> InboundEvent:
        return self.issue("pharmacist", "TemperatureExcursion", {
            "item_ids": item_ids or self.dose_ids, "min_celsius": -21.0,
            "max_celsius": -5.0, "duration_seconds": 1800, "logger_id": "FRZ-2",
            "allowed_range": "-80..-60 C"})

    def logger_readings(self, celsius: list[float], item_ids: list[str] | None = None,
                        every_us: int = 300_000_000) -> InboundEvent:
        """The courier uploads its logger's readings (one every ``every_us``, ending now)."""
        end = self.now_us
        start = end - every_us * (len(celsius) - 1)
        return self.issue("courier", "TemperatureLogRecorded", {
            "logger_id": "LOG-9", "item_ids": item_ids or self.dose_ids,
            "shipment_id": self.shipment_id,
            "readings": [{"at": start + i * every_us, "celsius": c}
                         for i, c in enumerate(celsius)],
            "source_ref": "LOG-9.csv"})

    def research_use(self, request_id: str = "RQ-1") -> InboundEvent:
        return self.issue("researcher", "ResearchDataRequested", {
            "request_id": request_id, "purpose": "RESEARCH",
            "requester": self.id_of("researcher"), "dataset": "outcomes-v1",
            "ethics_approval_ref": "IRB-2026-014"})

    def adverse_event(self) -> InboundEvent:
        return self.issue("physician", "AdverseEventReported", {
            "term": "Injection site reaction", "ctcae_grade": 1, "serious": False,
            "related_to_therapy": "PROBABLE", "onset": self.now_us, "ctcae_version": "5.0"})

    def expire(self, n: int) -> InboundEvent:
        expiry = self.case.doses[self.dose(n)].expiry_us if self.dose(n) in self.case.doses \
            else None
        return self.issue("pharmacist", "DoseExpired", {
            "dose_id": self.dose(n), "expired_at": expiry or self.now_us})

    def disposition_quarantine(self, item_id: str, decision: str = "RELEASED",
                               reason: str = "stability data cover the excursion",
                               signer: str = "qp") -> InboundEvent:
        """The qualified person's decision on a quarantined item."""
        return self.issue(signer, "QuarantineDispositioned", {
            "item_id": item_id, "decision": decision, "qualified_person": self.id_of(signer),
            "reason": reason, "investigation_ref": "DEV-2026-031"},
            meaning=SignatureMeaning.RESPONSIBLE)

    def destroy(self, n: int) -> InboundEvent:
        return self.issue("pharmacist", "DoseDestroyed", {
            "dose_id": self.dose(n), "reason": "temperature excursion",
            "witness": self.id_of("nurse")})
