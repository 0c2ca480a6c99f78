"""The policy of every event type, one row each, and the one lifecycle fold (ground floor).

A row (:class:`EventPolicy`) says, for one event type: which roles may sign it, with which
signature meaning (21 CFR Part 11), whether the signer must belong to the therapy's site,
which consent scope must hold at its occurred-at, where in the therapy's lifecycle it may
occur and which stage it takes the therapy to, which step it is when a therapy waits for
it, and on which topic (and chain) it may stand.

Who reads which column:

- the gatekeeper's rules (``pcvhub.streams.rules``): R2 reads ``roles``, ``meaning``,
  ``patient_meaning``, ``patient_scopes``, ``site_bound``, ``topic`` and ``registry``; R4
  reads ``transition`` and ``study``; R5 reads ``patient_proof``; R7 reads ``consent`` (and
  ``PATIENT_SIGNED_SCOPES``: which grants count for a scope);
- the case fold (``pcvhub.streams.case``) and the projections' fold
  (``pcvhub.projections.projector``) both move a therapy's stage with :func:`advance`,
  which reads ``transition``;
- the case-status view (``pcvhub.projections.views``) reads ``next_step_at``;
- the log reader (``pcvhub.log.verify``) reads ``topic`` and ``roles`` for the side topics;
- producers (the connectors, the demo, the trust floor's registry, the patient's card) read
  ``meaning`` (``meaning_for``) and ``registry``.

The patient signs with their own key (a card or wallet the hub never holds; see
``pcvhub.trust.patient_card``): a clinician of the site binds that key to the therapy
(``PatientCredentialIssued``), and from then on the consents that let the patient's data
leave the treatment relationship (``PATIENT_SIGNED_SCOPES``) count only when that key signed
them, or when a clinician witnessed them for a patient who could not sign
(``ConsentWitnessed``, a distinct event type so that it is never mistaken for the patient's
own signature).

The two workers may not import each other, which is why the table and the fold live here,
below both. An event type without a row is refused everywhere (fail closed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pcvhub.schemas.envelope import SignatureMeaning
from pcvhub.schemas.stages import Stage
from pcvhub.topics import TopicRole


class ConsentScope(StrEnum):
    """What a consent covers (the ``ConsentGranted.scope`` symbols, less UNKNOWN)."""

    TREATMENT = "TREATMENT"
    GENOME_STORAGE = "GENOME_STORAGE"
    PAYER_SHARING = "PAYER_SHARING"
    RESEARCH = "RESEARCH"


#: Scopes whose grant must be the patient's own signature (or a witnessed consent): each
#: lets the patient's data leave the treatment relationship (stored for decades, shared with
#: a payer, used for research). Treatment consent may also be the hospital's record of the
#: signed paper form, entered by a clinician or the EMR's connector.
PATIENT_SIGNED_SCOPES = frozenset({ConsentScope.GENOME_STORAGE, ConsentScope.PAYER_SHARING,
                                   ConsentScope.RESEARCH})
#: The role of a patient's own key (a card or wallet the hub never holds).
PATIENT = "PATIENT"
#: The role that approves a cross-hospital study (a member of the ethics committee / IRB).
ETHICS_APPROVER = "ETHICS_APPROVER"


# -- the lifecycle fold -------------------------------------------------------------------

@dataclass
class LifecycleState:
    """What the lifecycle fold remembers about one therapy between events: its stage and
    the few facts later conditions need (approvers per design, released doses, shipments
    that carry doses)."""

    stage: Stage = Stage.NEW
    approvers: dict[str, list[str]] = field(default_factory=dict)  # design id -> approvers
    doses: list[str] = field(default_factory=list)  # released dose ids
    dose_shipments: list[str] = field(default_factory=list)  # shipments carrying doses

    def state_json(self) -> str:
        """The remembered sets, as canonical JSON (sorted keys and members)."""
        return json.dumps({
            "approvers": {k: sorted(v) for k, v in sorted(self.approvers.items())},
            "doses": sorted(self.doses),
            "dose_shipments": sorted(self.dose_shipments),
        }, sort_keys=True, separators=(",", ":"))

    @classmethod
    def restore(cls, stage: str, state: str) -> LifecycleState:
        memory = json.loads(state)
        return cls(Stage(stage), dict(memory["approvers"]), list(memory["doses"]),
                   list(memory["dose_shipments"]))

    def copy(self) -> LifecycleState:
        return LifecycleState(self.stage, {k: list(v) for k, v in self.approvers.items()},
                              list(self.doses), list(self.dose_shipments))


#: A condition on the fold *after* it remembered the event, but before the stage moves (so
#: ``state.stage`` is still the stage the event arrived in): payload, producer.
Condition = Callable[[LifecycleState, Mapping[str, Any], str], bool]


def _at(stage: Stage) -> Condition:
    def at_stage(state: LifecycleState, payload: Mapping[str, Any], producer: str) -> bool:
        return state.stage is stage
    at_stage.__name__ = f"at_{stage.value.lower()}"
    return at_stage


def second_approver(state: LifecycleState, payload: Mapping[str, Any], producer: str) -> bool:
    """A design is approved by its second *different* approver."""
    return len(set(state.approvers.get(payload["design_id"], ()))) >= 2


def batch_released(state: LifecycleState, payload: Mapping[str, Any], producer: str) -> bool:
    return bool(payload["disposition"] == "RELEASED")


def first_dose_shipment(state: LifecycleState, payload: Mapping[str, Any],
                        producer: str) -> bool:
    """Samples travel too; only the first shipment of doses moves the therapy."""
    return state.stage is Stage.RELEASED and payload["shipment_id"] in state.dose_shipments


def first_dose_receipt(state: LifecycleState, payload: Mapping[str, Any],
                       producer: str) -> bool:
    return state.stage is Stage.SHIPPED and payload["shipment_id"] in state.dose_shipments


def not_mid_dose(state: LifecycleState, payload: Mapping[str, Any], producer: str) -> bool:
    """An outcome recorded while the next dose is dispensed must not skip its
    administration."""
    return state.stage is not Stage.DISPENSED


@dataclass(frozen=True)
class Transition:
    """Where an event type is in order and where it takes the therapy.

    :param allowed_from: stages in which the event may occur (R4).
    :param to: the stage it enters; None leaves the stage unchanged.
    :param requires: a named precondition on the gatekeeper's case, checked by R4 before
        the event (``pcvhub.streams.case.PRECONDITIONS``: it reads facts only the
        gatekeeper folds, such as QC results and usable doses).
    :param advance_if: the fold enters ``to`` only when this holds; otherwise it enters
        ``otherwise`` (None: the stage stays put: one approver of two, a second sample).
    :param otherwise: the stage to enter when ``advance_if`` is false.
    """

    allowed_from: frozenset[Stage]
    to: Stage | None = None
    requires: str | None = None
    advance_if: Condition | None = None
    otherwise: Stage | None = None


def _remember(state: LifecycleState, event_type: str, payload: Mapping[str, Any],
              producer: str) -> None:
    """Record what later conditions need, before the stage moves."""
    if event_type == "DesignApproved":
        approvers = state.approvers.setdefault(payload["design_id"], [])
        if producer not in approvers:
            approvers.append(producer)
    elif event_type == "BatchDispositioned" and payload["disposition"] == "RELEASED":
        state.doses.extend(d for d in payload["dose_ids"] if d not in state.doses)
    elif event_type == "ShipmentDispatched":
        if any(item in state.doses for item in payload["item_ids"]):
            state.dose_shipments.append(payload["shipment_id"])


def advance(state: LifecycleState, event_type: str, payload: Mapping[str, Any],
            producer: str) -> Stage | None:
    """Fold one accepted therapy event into ``state``; return the stage it entered, or None
    if the stage did not change. The gatekeeper's case and the projections both call this,
    so the stage they report cannot differ."""
    _remember(state, event_type, payload, producer)
    row = POLICY.get(event_type)
    move = row.transition if row is not None else None
    if move is None or move.to is None:
        return None
    holds = move.advance_if is None or move.advance_if(state, payload, producer)
    target = move.to if holds else move.otherwise
    if target is None or target is state.stage:
        return None
    state.stage = target
    return target


# -- the table ----------------------------------------------------------------------------

#: Whether a step is done at the therapy's hospital, judged on the event's payload.
SiteBinding = Callable[[Mapping[str, Any]], bool]


def at_the_site(payload: Mapping[str, Any]) -> bool:
    return True


def unless_at_sample_receipt(payload: Mapping[str, Any]) -> bool:
    """An identity check at sample receipt happens in the lab, not at the hospital."""
    return bool(payload["step"] != "SAMPLE_RECEIPT")


#: Whether an event must carry the patient's own proof of identity, judged on its payload.
ProofDemand = Callable[[Mapping[str, Any]], bool]


def a_bedside_match(payload: Mapping[str, Any]) -> bool:
    """A bedside check that claims the patient is the right one must prove it with the
    patient's card: a MATCH flag alone is only the nurse's (or a connector's) word."""
    return bool(payload["step"] == "BEDSIDE" and payload["result"] == "MATCH")


@dataclass(frozen=True)
class EventPolicy:
    """The policy of one event type (see the module docstring for who reads what).

    :param event_type: short name of the event type (``ActorRegistered``).
    :param roles: roles (``ActorRegistered`` role symbols) that may sign it.
    :param meaning: the signature meaning it must be signed with.
    :param site_bound: when set and true on the payload, the signer must belong to the
        therapy's site.
    :param consent: the consent scope that must hold at its occurred-at.
    :param transition: its place in the therapy lifecycle; None: it is not a therapy event
        the gatekeeper accepts (a gatekeeper output).
    :param next_step_at: the stages at which a therapy waits for this event, each with
        the step as people read it on the dashboard.
    :param topic: the topic it stands on: the canonical log, or a side topic of the
        gatekeeper (never accepted from ingress).
    :param registry: it lives on the registry chain (actors and keys), and only there.
    :param study: it lives on a study's chain (``pcvhub.ids.study_coi``), and only there;
        a study chain holds nothing else.
    :param patient_meaning: the meaning the patient's own key signs it with, when a patient
        signs it (None: ``meaning``); a patient signer must be this therapy's patient.
    :param patient_scopes: payload scopes only the therapy's patient may sign (a clinician
        witnesses instead with ``ConsentWitnessed``).
    :param patient_proof: when set and true on the payload, the event must carry the
        patient's card signature over a fresh challenge, or the named witnessed fallback.
    """

    event_type: str
    roles: frozenset[str]
    meaning: SignatureMeaning = SignatureMeaning.AUTHORED
    site_bound: SiteBinding | None = None
    consent: ConsentScope | None = None
    transition: Transition | None = None
    next_step_at: tuple[tuple[Stage, str], ...] = ()
    topic: TopicRole = TopicRole.CANONICAL
    registry: bool = False
    study: bool = False
    patient_meaning: SignatureMeaning | None = None
    patient_scopes: frozenset[ConsentScope] = frozenset()
    patient_proof: ProofDemand | None = None

    def meaning_of(self, patient: bool) -> SignatureMeaning:
        """The meaning this event is signed with, by the patient's key or by anyone else."""
        if patient and self.patient_meaning is not None:
            return self.patient_meaning
        return self.meaning

    @property
    def gatekeeper_output(self) -> bool:
        return self.topic is not TopicRole.CANONICAL


CLINICAL = frozenset({"NURSE", "PHYSICIAN", "HOSPITAL_CLINICIAN"})
PHARMACY = frozenset({"HOSPITAL_PHARMACIST"})
CONNECTOR = "CONNECTOR"
#: whoever holds samples or doses
HOLDERS = frozenset({"COURIER", "MANUFACTURER", "SEQUENCING_LAB"}) | PHARMACY


def roles(*names: str | frozenset[str], connector: bool = False) -> frozenset[str]:
    """A role set; ``connector=True`` lets a connector emit the events it translates (the
    hospital, EMR, MES and payer events, never lab results, designs, approvals, QC results
    or release decisions)."""
    found: set[str] = set()
    for name in names:
        found |= {name} if isinstance(name, str) else name
    return frozenset(found | ({CONNECTOR} if connector else set()))


_ORDER = list(Stage)
S = Stage
M = SignatureMeaning
C = ConsentScope


def from_stage(first: Stage) -> frozenset[Stage]:
    """Every stage from ``first`` on."""
    return frozenset(_ORDER[_ORDER.index(first):])


def _only(*stages: Stage) -> frozenset[Stage]:
    return frozenset(stages)


ANY_STAGE = frozenset(Stage)

_ROWS: tuple[EventPolicy, ...] = (
    # the registry: only the registrar, only on the registry chain, in any order
    EventPolicy("ActorRegistered", roles("REGISTRAR"), transition=Transition(ANY_STAGE),
                registry=True),
    EventPolicy("KeyRotated", roles("REGISTRAR"), transition=Transition(ANY_STAGE),
                registry=True),
    EventPolicy("KeyRevoked", roles("REGISTRAR"), transition=Transition(ANY_STAGE),
                registry=True),
    # the design models designs may name: validated, approved, registered, retired
    EventPolicy("ModelRegistered", roles("REGISTRAR"), transition=Transition(ANY_STAGE),
                registry=True),
    EventPolicy("ModelRetired", roles("REGISTRAR"), transition=Transition(ANY_STAGE),
                registry=True),
    # hospital
    EventPolicy("PatientEnrolled", roles("PHYSICIAN", "HOSPITAL_CLINICIAN", connector=True),
                site_bound=at_the_site, transition=Transition(_only(S.NEW), S.ENROLLED),
                next_step_at=((S.NEW, "enrol the patient"),)),
    EventPolicy("EligibilityConfirmed",
                roles("PHYSICIAN", "HOSPITAL_CLINICIAN", connector=True),
                site_bound=at_the_site, transition=Transition(from_stage(S.ENROLLED))),
    # a clinician hands the patient a card and witnesses that its key is the patient's
    EventPolicy("PatientCredentialIssued", roles(CLINICAL), meaning=M.VERIFIED,
                site_bound=at_the_site, transition=Transition(from_stage(S.ENROLLED))),
    # the patient approves with their own key; treatment consent may also be the hospital's
    # record of the paper form (AUTHORED by a clinician or the EMR's connector)
    EventPolicy("ConsentGranted", roles(CLINICAL, PATIENT, connector=True),
                patient_meaning=M.APPROVED, patient_scopes=PATIENT_SIGNED_SCOPES,
                transition=Transition(from_stage(S.ENROLLED), S.CONSENTED,
                                      advance_if=_at(S.ENROLLED)),
                next_step_at=((S.ENROLLED, "record treatment consent"),)),
    # the named fallback for a patient who cannot sign: a person of the site, never a
    # connector, answers for it, and it stays visible as witnessed
    EventPolicy("ConsentWitnessed", roles(CLINICAL), meaning=M.VERIFIED,
                site_bound=at_the_site,
                transition=Transition(from_stage(S.ENROLLED), S.CONSENTED,
                                      advance_if=_at(S.ENROLLED))),
    # withdrawing is always the safe direction: the patient alone suffices, at any stage
    EventPolicy("ConsentWithdrawn", roles(CLINICAL, PATIENT, connector=True),
                transition=Transition(from_stage(S.ENROLLED))),
    EventPolicy("DiagnosisRecorded", roles("PHYSICIAN", connector=True),
                transition=Transition(from_stage(S.ENROLLED))),
    EventPolicy("TherapyOrdered", roles("PHYSICIAN", connector=True),
                site_bound=at_the_site, consent=C.TREATMENT,
                transition=Transition(_only(S.CONSENTED, S.ORDERED), S.ORDERED,
                                      requires="eligible_if_assessed"),
                next_step_at=((S.CONSENTED, "order the therapy"),)),
    EventPolicy("AdministrationScheduled", roles(CLINICAL, PHARMACY, connector=True),
                site_bound=at_the_site, consent=C.TREATMENT,
                transition=Transition(from_stage(S.ORDERED))),
    EventPolicy("SampleCollected", roles(CLINICAL, connector=True),
                site_bound=at_the_site, consent=C.TREATMENT,
                transition=Transition(from_stage(S.ORDERED), S.COLLECTED,
                                      advance_if=_at(S.ORDERED)),
                next_step_at=((S.ORDERED, "collect the tumour sample"),)),
    # sequencing lab and design service
    EventPolicy("SampleReceived", roles("SEQUENCING_LAB"),
                transition=Transition(from_stage(S.COLLECTED), S.RECEIVED_AT_LAB,
                                      advance_if=_at(S.COLLECTED)),
                next_step_at=((S.COLLECTED, "receive the sample at the sequencing lab"),)),
    EventPolicy("SequencingCompleted", roles("SEQUENCING_LAB"), consent=C.GENOME_STORAGE,
                transition=Transition(_only(S.RECEIVED_AT_LAB, S.SEQUENCED), S.SEQUENCED),
                next_step_at=((S.RECEIVED_AT_LAB, "sequence the samples"),)),
    EventPolicy("VariantCallsProduced", roles("SEQUENCING_LAB"), consent=C.GENOME_STORAGE,
                transition=Transition(_only(S.SEQUENCED))),
    # the genome goes into the vault for decades: only while the patient consents to that
    EventPolicy("GenomeStored", roles("SEQUENCING_LAB"), consent=C.GENOME_STORAGE,
                transition=Transition(from_stage(S.SEQUENCED))),
    # a restore from the vault: only under the patient's one-use token (checked by the vault
    # against this log before any share is fetched; the token rides in the event)
    EventPolicy("GenomeRestored", roles(CLINICAL, "SEQUENCING_LAB", "DESIGN_SERVICE",
                                        "RESEARCHER"),
                consent=C.GENOME_STORAGE, transition=Transition(from_stage(S.SEQUENCED))),
    EventPolicy("NeoantigenDesignProduced", roles("DESIGN_SERVICE"), consent=C.GENOME_STORAGE,
                transition=Transition(_only(S.SEQUENCED, S.DESIGNED), S.DESIGNED),
                next_step_at=((S.SEQUENCED, "produce the neoantigen design"),)),
    EventPolicy("DesignApproved", roles("DESIGN_APPROVER"), meaning=M.APPROVED,
                transition=Transition(_only(S.DESIGNED), S.APPROVED,
                                      advance_if=second_approver),
                next_step_at=((S.DESIGNED, "two different approvers approve the design"),)),
    # manufacturer, QC, qualified person
    EventPolicy("ManufacturingStarted", roles("MANUFACTURER", connector=True),
                consent=C.TREATMENT,
                transition=Transition(_only(S.APPROVED), S.MANUFACTURING),
                next_step_at=((S.APPROVED, "start manufacturing a batch"),)),
    EventPolicy("ManufacturingStepCompleted", roles("MANUFACTURER", connector=True),
                transition=Transition(_only(S.MANUFACTURING, S.QC))),
    EventPolicy("QcResultRecorded", roles("QC_ANALYST"), meaning=M.REVIEWED,
                transition=Transition(_only(S.MANUFACTURING, S.QC), S.QC),
                next_step_at=((S.MANUFACTURING, "record the QC results"),)),
    # a rejected batch sends the therapy back to APPROVED, for a new batch
    EventPolicy("BatchDispositioned", roles("QUALIFIED_PERSON"), meaning=M.RESPONSIBLE,
                transition=Transition(_only(S.QC), S.RELEASED, requires="qc_passed",
                                      advance_if=batch_released, otherwise=S.APPROVED),
                next_step_at=((S.QC, "the qualified person releases or rejects the batch"),)),
    # custody and cold chain: samples travel from collection on, doses from release on
    EventPolicy("ShipmentDispatched", roles(HOLDERS, CLINICAL),
                transition=Transition(from_stage(S.COLLECTED), S.SHIPPED,
                                      advance_if=first_dose_shipment),
                next_step_at=((S.RELEASED, "ship the doses to the site"),)),
    EventPolicy("ShipmentReceived", roles(HOLDERS),
                transition=Transition(from_stage(S.COLLECTED), S.RECEIVED_AT_SITE,
                                      advance_if=first_dose_receipt),
                next_step_at=((S.SHIPPED, "receive the shipment at the site"),)),
    # a hand-over takes two signatures: the holder releases to a named receiver, and only
    # that receiver's acceptance moves custody (neither alone does)
    EventPolicy("CustodyReleased", roles(HOLDERS, CLINICAL),
                transition=Transition(from_stage(S.COLLECTED))),
    EventPolicy("CustodyTransferred", roles(HOLDERS, CLINICAL),
                transition=Transition(from_stage(S.COLLECTED))),
    EventPolicy("TemperatureExcursion", roles(HOLDERS, connector=True),
                transition=Transition(from_stage(S.COLLECTED))),
    # the logger's readings themselves: the hub derives the excursion from them
    EventPolicy("TemperatureLogRecorded", roles(HOLDERS, connector=True),
                transition=Transition(from_stage(S.COLLECTED))),
    # only the qualified person lifts a quarantine (or destroys what it holds), with a reason
    EventPolicy("QuarantineDispositioned", roles("QUALIFIED_PERSON"), meaning=M.RESPONSIBLE,
                transition=Transition(from_stage(S.COLLECTED))),
    # pharmacy and bedside; repeated doses loop dispense -> administer -> (outcome)
    EventPolicy("InventoryPlaced", roles(PHARMACY, connector=True), site_bound=at_the_site,
                transition=Transition(from_stage(S.RECEIVED_AT_SITE), S.PLACED,
                                      advance_if=_at(S.RECEIVED_AT_SITE)),
                next_step_at=((S.RECEIVED_AT_SITE, "place the doses in the site's inventory"),)),
    EventPolicy("DoseReserved", roles(PHARMACY, connector=True), site_bound=at_the_site,
                consent=C.TREATMENT, transition=Transition(from_stage(S.PLACED))),
    EventPolicy("DoseDispensed", roles(PHARMACY, connector=True), site_bound=at_the_site,
                consent=C.TREATMENT,
                transition=Transition(_only(S.PLACED, S.ADMINISTERED, S.FOLLOW_UP),
                                      S.DISPENSED, requires="doses_remain"),
                next_step_at=((S.PLACED, "dispense the first dose"),
                              (S.FOLLOW_UP, "dispense the next dose"))),
    EventPolicy("IdentityVerified", roles(CLINICAL, PHARMACY, "SEQUENCING_LAB", connector=True),
                meaning=M.VERIFIED, site_bound=unless_at_sample_receipt,
                patient_proof=a_bedside_match, transition=Transition(from_stage(S.ENROLLED))),
    EventPolicy("DoseAdministered", roles(CLINICAL, connector=True), site_bound=at_the_site,
                consent=C.TREATMENT,
                transition=Transition(_only(S.DISPENSED), S.ADMINISTERED),
                next_step_at=((S.DISPENSED,
                               "verify the patient at the bedside and give the dose"),)),
    EventPolicy("DoseDestroyed", roles(PHARMACY, "MANUFACTURER", connector=True),
                transition=Transition(from_stage(S.RELEASED))),
    EventPolicy("DoseExpired", roles(PHARMACY, "MANUFACTURER", connector=True),
                transition=Transition(from_stage(S.RELEASED))),
    # results, safety, secondary use
    EventPolicy("OutcomeRecorded", roles("PHYSICIAN", "HOSPITAL_CLINICIAN", connector=True),
                transition=Transition(from_stage(S.DISPENSED), S.FOLLOW_UP,
                                      requires="administered_before",
                                      advance_if=not_mid_dose),
                next_step_at=((S.ADMINISTERED, "record the outcome"),)),
    EventPolicy("AdverseEventReported", roles(CLINICAL, PATIENT, connector=True),
                transition=Transition(from_stage(S.ENROLLED))),
    EventPolicy("ResearchDataRequested", roles("RESEARCHER"), consent=C.RESEARCH,
                transition=Transition(from_stage(S.ENROLLED))),
    # cross-hospital studies (pcvhub.mpc), each on its own chain: a researcher asks, an
    # ethics approver approves the exact specification, the researcher who ran the parties
    # records each run and publishes its result; consent is checked per therapy by the
    # parties, inside each site, when the study runs
    EventPolicy("StudyRequested", roles("RESEARCHER"), transition=Transition(ANY_STAGE),
                study=True),
    EventPolicy("StudyApproved", roles(ETHICS_APPROVER), meaning=M.APPROVED,
                transition=Transition(ANY_STAGE), study=True),
    EventPolicy("StudyRunCompleted", roles("RESEARCHER"), transition=Transition(ANY_STAGE),
                study=True),
    EventPolicy("StudyResultPublished", roles("RESEARCHER"), transition=Transition(ANY_STAGE),
                study=True),
    # receivables
    EventPolicy("ClaimSubmitted", roles("BILLING", connector=True), site_bound=at_the_site,
                consent=C.PAYER_SHARING,
                transition=Transition(from_stage(S.DISPENSED), requires="administered_before")),
    EventPolicy("ClaimAdjudicated", roles("PAYER", connector=True),
                transition=Transition(from_stage(S.DISPENSED), requires="administered_before")),
    EventPolicy("PaymentPosted", roles("BILLING", "PAYER", connector=True),
                transition=Transition(from_stage(S.DISPENSED), requires="administered_before")),
    EventPolicy("OutcomeMilestoneReached", roles("PAYER", "MANUFACTURER", connector=True),
                consent=C.PAYER_SHARING,
                transition=Transition(from_stage(S.DISPENSED), requires="administered_before")),
    # alerts get owners: whoever acts on the therapy may take one on; closing one is
    # signed RESPONSIBLE by the people answerable for the step it is about
    EventPolicy("AlertAcknowledged",
                roles(CLINICAL, PHARMACY, "SEQUENCING_LAB", "DESIGN_SERVICE", "MANUFACTURER",
                      "QC_ANALYST", "QUALIFIED_PERSON", "COURIER"),
                transition=Transition(ANY_STAGE, requires="alert_open")),
    EventPolicy("AlertResolved", roles("PHYSICIAN", PHARMACY, "MANUFACTURER",
                                       "QUALIFIED_PERSON"),
                meaning=M.RESPONSIBLE, transition=Transition(ANY_STAGE, requires="alert_open")),
    # the gatekeeper's own outputs; connectors also refuse input they could not even turn
    # into an event
    EventPolicy("EventRejected", roles("GATEKEEPER", "CONNECTOR"), topic=TopicRole.REJECTED),
    EventPolicy("AlertRaised", roles("GATEKEEPER"), topic=TopicRole.ALERTS),
    EventPolicy("CustodyViolationDetected", roles("GATEKEEPER"), topic=TopicRole.ALERTS),
)
del S, M, C


class DuplicatePolicyRow(ValueError):
    """Two rows of the policy table name the same event type."""


def policy_table(rows: Iterable[EventPolicy]) -> dict[str, EventPolicy]:
    table: dict[str, EventPolicy] = {}
    for row in rows:
        if row.event_type in table:
            raise DuplicatePolicyRow(f"the policy table has two rows for {row.event_type}; "
                                     "keep one")
        table[row.event_type] = row
    return table


#: Event type (short name) -> its policy.
POLICY: Mapping[str, EventPolicy] = policy_table(_ROWS)


def policy_of(event_type: str) -> EventPolicy | None:
    """The row of ``event_type`` (short name), or None: an unknown type, refused."""
    return POLICY.get(event_type)


def meaning_for(event_type: str, *, patient: bool = False) -> SignatureMeaning:
    """The meaning a producer (``patient``: the patient's own key) signs ``event_type``
    (short name) with."""
    row = POLICY.get(event_type)
    return row.meaning_of(patient) if row is not None else SignatureMeaning.AUTHORED


def registry_event_types() -> frozenset[str]:
    """The event types of the registry chain (actors and keys)."""
    return frozenset(t for t, row in POLICY.items() if row.registry)


def study_event_types() -> frozenset[str]:
    """The event types of study chains."""
    return frozenset(t for t, row in POLICY.items() if row.study)


def types_on(topic: TopicRole) -> frozenset[str]:
    """The event types that may stand on ``topic``."""
    return frozenset(t for t, row in POLICY.items() if row.topic is topic)


def next_step(stage: Stage) -> str:
    """The step a therapy at ``stage`` waits for, with the event type that records it."""
    for event_type, row in POLICY.items():
        for at, step in row.next_step_at:
            if at is stage:
                return f"{step} ({event_type})"
    raise KeyError(f"no event type of the policy table is the next step at stage "
                   f"{stage.value}; give one row a next_step_at for it")
