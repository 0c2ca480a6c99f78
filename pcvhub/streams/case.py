"""The state of one therapy (one chain-of-identity id): a fold of its accepted events.

``CaseState`` is what the custody rules read to judge the next event of a therapy:
who the patient is, which consents hold, which sequencing data, designs and batches
belong to this therapy, who holds each physical item, what each dose may still be used
for. It is rebuilt by folding the canonical log (``apply`` in log order), so it holds
only facts that accepted events state, never judgements; the one exception is the set of
alerts the gatekeeper raised for the therapy (``alerts``), which it writes itself and
reads back from the alerts topic, so that an acknowledgement can name only a real one.

``apply`` is called only after the rules accepted the event; it trusts the event and
never refuses. Handlers are a table keyed by the short event type; a type without a
handler only moves the chain head (it is still an accepted fact). A handler skips a
reference it cannot resolve instead of raising: the log may hold events accepted under
older rules, and rebuilding a case from the log must never stop half way.

The stage moves by the one lifecycle fold of the policy table (``pcvhub.schemas.policy``,
``advance``), which the projections call too, so the stage the gatekeeper judges by is the
stage the dashboards show. What R4 needs besides the stage (QC passed, a dose left, an
alert open) are the named preconditions here (``PRECONDITIONS``): they read facts only
this fold keeps.

The registry of actors and keys has its own chain (``REGISTRY_COI``; registry events in
any order); its facts are folded into the ``KeyRegistry``, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pcvhub.schemas import codec
from pcvhub.schemas.policy import LifecycleState, advance
from pcvhub.schemas.specifications import (
    Recipe,
    SpecificationPanel,
    panel_for,
    recipe_for,
    storage_excursion,
)
from pcvhub.schemas.stages import Stage
from pcvhub.streams.event import InboundEvent
from pcvhub.trust.consent import (
    ConsentRecord,
    ConsentSigner,
    ConsentWindow,
    PatientCredential,
)
from pcvhub.trust.registry import REGISTRY_COI


class DoseStatus(StrEnum):
    """Where a released dose is in its own life (a dose is one vial for one administration)."""

    AVAILABLE = "AVAILABLE"        # released, not yet placed at the treating site
    PLACED = "PLACED"              # in the site's storage for this patient
    RESERVED = "RESERVED"          # placed and held for one scheduled administration
    DISPENSED = "DISPENSED"
    ADMINISTERED = "ADMINISTERED"
    QUARANTINED = "QUARANTINED"    # until the qualified person releases or destroys it
    EXPIRED = "EXPIRED"
    DESTROYED = "DESTROYED"


class AlertStatus(StrEnum):
    """Where an alert raised for a therapy stands, as its owners recorded it."""

    OPEN = "OPEN"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"


#: statuses from which a dose may still go to the patient
USABLE_DOSE = frozenset({DoseStatus.AVAILABLE, DoseStatus.PLACED, DoseStatus.RESERVED})
#: statuses a dose never leaves
FINAL_DOSE = frozenset({DoseStatus.ADMINISTERED, DoseStatus.DESTROYED})


def to_us(value: Any) -> int | None:
    """Event-time microseconds from a decoded optional timestamp (None stays None)."""
    return None if value is None else codec.to_us(value)


@dataclass
class DesignRecord:
    design_hash: str
    sequencing_hash: str
    approvers: set[str] = field(default_factory=set)
    approved: bool = False


@dataclass(frozen=True)
class QcResult:
    """One recorded QC result; a retest adds another, it never replaces the first."""

    test: str
    result: str  # PASS, FAIL or UNKNOWN
    value: str
    event_id: str
    investigation_ref: str | None = None


@dataclass
class BatchRecord:
    design_hash: str
    planned_dose_count: int
    qc_history: list[QcResult] = field(default_factory=list)  # in log order
    #: the recipe steps recorded, in log order (R9 accepts only the recipe's next one)
    steps: list[str] = field(default_factory=list)
    disposition: str | None = None

    def latest_results(self) -> dict[str, str]:
        """The latest result of each test (test -> PASS/FAIL/UNKNOWN)."""
        return {r.test: r.result for r in self.qc_history}

    def failed_before(self, test: str) -> bool:
        return any(r.test == test and r.result != "PASS" for r in self.qc_history)

    def unreleasable(self, panel: SpecificationPanel | None, recipe: Recipe | None
                     ) -> list[str]:
        """Why the batch may not be released (one phrase per recipe step not recorded and
        per panel test not passed), or [] when every step of the recipe was recorded and
        every test of the panel's latest result is a PASS."""
        if recipe is None:
            return ["no manufacturing recipe exists for this therapy type"]
        if panel is None:
            return ["no QC specification panel exists for this therapy type"]
        steps = [f"recipe step {step} not recorded" for step in recipe.missing(self.steps)]
        latest = self.latest_results()
        return steps + [
            f"{test} {'not recorded' if test not in latest else 'last ' + latest[test]}"
            for test in panel.tests if latest.get(test) != "PASS"]


@dataclass
class CustodyItem:
    """A physical thing with a chain of custody (sample, batch or dose)."""

    kind: str
    holder: str
    location: str = ""
    open_dispatch: str | None = None  # the shipment it travels in, until received
    #: the one actor the holder released it to, until that actor accepts it
    released_to: str | None = None
    quarantined: bool = False
    quarantine_reason: str = ""  # why it was quarantined, for the refusals that cite it
    consumed: bool = False  # administered or destroyed: it can move no more


@dataclass
class DoseRecord:
    batch_id: str
    status: DoseStatus = DoseStatus.AVAILABLE
    expiry_us: int | None = None
    site: str = ""
    location: str = ""
    placement_method: str = ""
    #: who owns the dose: the manufacturer until a SITE_STOCK placement makes it the
    #: site's, or (consignment, just in time) until it is administered
    owner: str = ""
    reserved_for: str | None = None  # administration id
    #: the status a quarantine interrupted, restored when the qualified person releases it
    before_quarantine: DoseStatus | None = None


@dataclass
class IdentityCheck:
    result: str
    step: str
    patient_hash: str
    occurred_at_us: int
    dose_id: str | None = None
    sample_id: str | None = None
    proof_kind: str | None = None  # the patient's proof (PatientProofKind), if it carried one
    administration_id: str | None = None  # the administration the proof's challenge was for


@dataclass
class ScheduledAdministration:
    dose_number: int
    scheduled_for_us: int
    site: str


@dataclass
class Administration:
    dose_id: str
    administration_id: str
    occurred_at_us: int
    dose_number: int
    identity_check_event_id: str


@dataclass
class Shipment:
    items: tuple[str, ...]
    sender: str
    recipient: str
    received: bool = False
    seal_id: str | None = None  # the seal the sender closed it with, if any


@dataclass
class Claim:
    administration_event_id: str
    amount: Decimal
    status: str = "SUBMITTED"
    paid: Decimal = Decimal(0)


@dataclass
class CaseState:
    """The fold of one therapy's accepted events (see the module docstring)."""

    coi: str
    head: bytes = b""
    event_ids: set[str] = field(default_factory=set)
    lifecycle: LifecycleState = field(default_factory=LifecycleState)
    stage_entered_us: dict[Stage, int] = field(default_factory=dict)  # first entry, for timers
    last_event_type: str = ""
    last_occurred_at_us: int = 0
    patient_hash: str | None = None
    site: str | None = None
    therapy_type: str | None = None
    eligible: bool | None = None  # the latest eligibility decision, if any
    #: the patient's bound card keys and every consent grant (``pcvhub.trust.consent``)
    consent: ConsentRecord = field(default_factory=ConsentRecord)
    diagnosis: dict[str, Any] | None = None
    orders: set[str] = field(default_factory=set)
    sequencing_hashes: set[str] = field(default_factory=set)
    variant_call_hashes: set[str] = field(default_factory=set)
    designs: dict[str, DesignRecord] = field(default_factory=dict)
    approved_design_hashes: set[str] = field(default_factory=set)
    batches: dict[str, BatchRecord] = field(default_factory=dict)
    items: dict[str, CustodyItem] = field(default_factory=dict)
    shipments: dict[str, Shipment] = field(default_factory=dict)
    doses: dict[str, DoseRecord] = field(default_factory=dict)
    scheduled: dict[str, ScheduledAdministration] = field(default_factory=dict)
    administrations: dict[str, Administration] = field(default_factory=dict)  # by event id
    doses_administered: list[int] = field(default_factory=list)
    identity_checks: dict[str, IdentityCheck] = field(default_factory=dict)  # by event id
    #: the bedside challenges the patient's card already answered (each is used once)
    bedside_challenges: set[bytes] = field(default_factory=set)
    claims: dict[str, Claim] = field(default_factory=dict)
    milestones: set[tuple[str, str]] = field(default_factory=set)  # (agreement, milestone)
    research_requests: set[str] = field(default_factory=set)
    #: roots of the genome files stored in the vault, and the nonces of the patient's
    #: consent tokens already spent on restores (each token restores once)
    genome_roots: set[str] = field(default_factory=set)
    restore_tokens: set[bytes] = field(default_factory=set)
    adverse_events: int = 0
    last_outcome_at_us: int | None = None
    #: alerts the gatekeeper raised for this therapy (it wrote them itself; the ledger
    #: rebuild reads them back from the alerts topic), and what their owners did
    alerts: dict[str, AlertStatus] = field(default_factory=dict)

    @classmethod
    def new(cls, coi: str) -> CaseState:
        return cls(coi=coi)

    # -- reading -------------------------------------------------------------------

    @property
    def stage(self) -> Stage:
        return self.lifecycle.stage

    @property
    def is_registry(self) -> bool:
        return self.coi == REGISTRY_COI

    @property
    def consents(self) -> dict[str, list[ConsentWindow]]:
        """Every grant, by scope (``ConsentRecord.consents``)."""
        return self.consent.consents

    @property
    def patient_credentials(self) -> dict[str, PatientCredential]:
        """The patient's card keys a clinician bound to this therapy, by key id."""
        return self.consent.patient_credentials

    def consent_covers(self, scope: str, at_us: int) -> bool:
        return self.consent.covers(scope, at_us)

    def consent_signers(self, scope: str, at_us: int) -> frozenset[ConsentSigner]:
        return self.consent.signers(scope, at_us)

    def consent_ended(self, scope: str, at_us: int) -> ConsentWindow | None:
        return self.consent.ended(scope, at_us)

    def patient_credential(self, actor_id: str, key_id: str) -> PatientCredential | None:
        return self.consent.patient_credential(actor_id, key_id)

    def doses_remaining(self) -> int:
        """Doses that may still go to the patient (released, not used, not quarantined)."""
        return sum(1 for d in self.doses.values() if d.status in USABLE_DOSE)

    def used_identity_checks(self) -> set[str]:
        return {a.identity_check_event_id for a in self.administrations.values()}

    # -- folding -------------------------------------------------------------------

    def apply(self, event: InboundEvent, digest: bytes) -> None:
        """Fold one accepted event: advance the chain head, record its facts, move the
        stage."""
        self.head = digest
        self.event_ids.add(event.event_id)
        self.last_event_type = event.event_type
        at = event.occurred_at_us
        if at > self.last_occurred_at_us:
            self.last_occurred_at_us = at
        if not self.is_registry:
            handler = _HANDLERS.get(event.event_type)
            if handler is not None:
                handler(self, event.payload, event)
            entered = advance(self.lifecycle, event.event_type, event.payload, event.producer)
            if entered is not None:
                self.stage_entered_us.setdefault(entered, at)


# -- what R4 checks besides the stage ----------------------------------------------------

@dataclass(frozen=True)
class Precondition:
    """A condition R4 checks before an event; ``code`` and ``needs`` go into the refusal,
    and ``explain`` (when set) says what exactly is missing."""

    holds: Callable[[CaseState, Mapping[str, Any]], bool]
    code: str
    needs: str
    remedy: str
    explain: Callable[[CaseState, Mapping[str, Any]], str | None] | None = None


def _qc_unpassed(case: CaseState, payload: Mapping[str, Any]) -> str | None:
    if payload["disposition"] != "RELEASED":
        return None  # rejecting a batch needs no passing QC
    batch = case.batches.get(payload["batch_id"])
    if batch is None:
        return f"batch {payload['batch_id']} was never started"
    missing = batch.unreleasable(panel_for(case.therapy_type), recipe_for(case.therapy_type))
    if not missing:
        return None
    return (f"batch {payload['batch_id']} of therapy type {case.therapy_type}: "
            + ", ".join(missing))


# R4 asks only whether the step may happen now; whether *this* dose, batch or design is
# usable (quarantined, expired, someone else's) is for R5 and R6 to say, with their codes.
PRECONDITIONS: dict[str, Precondition] = {
    "doses_remain": Precondition(
        lambda case, p: case.doses_remaining() > 0, "NO_DOSE_LEFT",
        "a released dose that is still usable", "ask the manufacturer for a new batch"),
    "eligible_if_assessed": Precondition(
        lambda case, p: case.eligible is not False, "NOT_ELIGIBLE",
        "a patient whose latest eligibility assessment is positive",
        "reassess eligibility (EligibilityConfirmed) before ordering"),
    "qc_passed": Precondition(
        lambda case, p: _qc_unpassed(case, p) is None, "QC_NOT_PASSED",
        "every step of the therapy type's recipe recorded and the latest result of every "
        "test of its QC panel to be a PASS",
        "record the missing steps and tests; a failed test is retested only under an out-of-"
        "specification investigation (investigation_ref); or reject the batch",
        explain=_qc_unpassed),
    "administered_before": Precondition(
        lambda case, p: bool(case.administrations), "OUT_OF_ORDER",
        "at least one administration of the therapy", "record the administration first"),
    "alert_open": Precondition(
        lambda case, p: case.alerts.get(p["alert_id"]) in (AlertStatus.OPEN,
                                                            AlertStatus.ACKNOWLEDGED),
        "NO_OPEN_ALERT", "an alert raised for this therapy and not yet resolved",
        "name an open alert of this therapy (see the alerts view)"),
}


# -- what each accepted event states -----------------------------------------------------

Handler = Callable[[CaseState, dict[str, Any], InboundEvent], None]


def _enrolled(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.patient_hash = p["patient_hash"]
    case.site = p["site_id"]
    case.therapy_type = p["therapy_type"]


def _eligibility(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.eligible = bool(p["eligible"])


def _consent(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    """Cards, grants and withdrawals: the trust floor's consent fold, shared with the
    workers that judge the patient's consent tokens."""
    case.consent.fold(e.event_type, p, e.event_id, e.occurred_at_us, e.producer,
                      e.envelope.key_id)


def _diagnosis(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.diagnosis = p


def _ordered(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.orders.add(p["order_id"])


def _scheduled(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.scheduled[p["administration_id"]] = ScheduledAdministration(
        p["dose_number"], codec.to_us(p["scheduled_for"]), p["site_id"])


def _sample_collected(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.items[p["sample_id"]] = CustodyItem(
        "SAMPLE", p.get("collected_by") or e.producer, p["location"])


def _sample_received(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    item = case.items.get(p["sample_id"])
    if item is not None:
        item.location = p.get("location") or item.location
    if p["condition"] == "REJECTED":
        _quarantine(case, p["sample_id"], "the lab received it in REJECTED condition"
                    + (f" ({p['condition_notes']})" if p.get("condition_notes") else ""))


def _sequenced(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.sequencing_hashes.add(p["content_hash"])


def _variant_calls(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.variant_call_hashes.add(p["content_hash"])


def _design_produced(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.designs[p["design_id"]] = DesignRecord(p["design_hash"], p["sequencing_hash"])


def _design_approved(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    design = case.designs.get(p["design_id"])
    if design is None:
        return
    design.approvers.add(e.producer)
    if len(design.approvers) >= 2:
        design.approved = True
        case.approved_design_hashes.add(design.design_hash)


def _manufacturing_started(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.batches[p["batch_id"]] = BatchRecord(p["design_hash"], p["planned_dose_count"])
    case.items[p["batch_id"]] = CustodyItem("BATCH", e.producer, p["facility_id"])


def _step_completed(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    batch = case.batches.get(p["batch_id"])
    if batch is not None:
        batch.steps.append(p["step"])


def _qc(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    batch = case.batches.get(p["batch_id"])
    if batch is not None:
        batch.qc_history.append(QcResult(p["test"], p["result"], p["value"], e.event_id,
                                         p.get("investigation_ref")))


def _dispositioned(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    batch = case.batches.get(p["batch_id"])
    if batch is None:
        return
    batch.disposition = p["disposition"]
    if batch.disposition != "RELEASED":
        return
    item = case.items.get(p["batch_id"]) or CustodyItem("BATCH", e.producer)
    expiry = to_us(p.get("expiry"))
    for dose_id in p["dose_ids"]:
        status = DoseStatus.QUARANTINED if item.quarantined else DoseStatus.AVAILABLE
        case.doses[dose_id] = DoseRecord(
            p["batch_id"], status, expiry, owner=item.holder,
            before_quarantine=DoseStatus.AVAILABLE if item.quarantined else None)
        case.items[dose_id] = CustodyItem("DOSE", item.holder, item.location,
                                          quarantined=item.quarantined,
                                          quarantine_reason=item.quarantine_reason)


def _dispatched(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    items = tuple(p["item_ids"])
    case.shipments[p["shipment_id"]] = Shipment(items, e.producer, p["recipient"],
                                                seal_id=p.get("seal_id"))
    for item_id in items:
        item = case.items.get(item_id)
        if item is not None:
            item.open_dispatch = p["shipment_id"]
            item.released_to = None  # a release to someone else lapses once it travels


def receipt_problem(shipment: Shipment, payload: Mapping[str, Any]) -> str | None:
    """Why a receipt shows the shipment was tampered with or is incomplete (its items are
    then quarantined), or None: the seal was intact and every dispatched item arrived."""
    if payload.get("seal_intact") is False:
        return f"shipment {payload['shipment_id']} arrived with its seal broken"
    found = payload.get("seal_id")
    if shipment.seal_id is not None and found is not None and found != shipment.seal_id:
        return (f"shipment {payload['shipment_id']} arrived under seal {found}, not the "
                f"dispatched seal {shipment.seal_id}")
    arrived = payload.get("item_ids")
    if arrived is not None and set(arrived) != set(shipment.items):
        missing = sorted(set(shipment.items) - set(arrived))
        return (f"shipment {payload['shipment_id']} arrived without "
                f"{', '.join(missing) or 'some of its items'}")
    return None


def _received(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    shipment = case.shipments.get(p["shipment_id"])
    if shipment is None:
        return
    shipment.received = True
    problem = receipt_problem(shipment, p)
    arrived = set(shipment.items if p.get("item_ids") is None else p["item_ids"])
    for item_id in shipment.items:
        item = case.items.get(item_id)
        if item is None:
            continue
        if item_id in arrived:
            item.holder = e.producer
            item.open_dispatch = None
            item.location = p.get("location") or item.location
        if problem is not None:  # a missing item stays in transit, quarantined
            _quarantine(case, item_id, problem)


def _released(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    item = case.items.get(p["item_id"])
    if item is not None:
        item.released_to = p["to_actor"]


def _transferred(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    item = case.items.get(p["item_id"])
    if item is not None:
        item.holder = p["to_actor"]
        item.released_to = None
        item.location = p.get("location") or item.location


def _quarantine(case: CaseState, item_id: str, reason: str) -> None:
    item = case.items.get(item_id)
    if item is not None:
        item.quarantined = True
        item.quarantine_reason = reason
    dose = case.doses.get(item_id)
    if dose is not None and dose.status not in FINAL_DOSE \
            and dose.status is not DoseStatus.QUARANTINED:
        dose.before_quarantine = dose.status
        dose.status = DoseStatus.QUARANTINED


def _excursion(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    _exposed(case, p["item_ids"],
             f"a temperature excursion ({p['min_celsius']}..{p['max_celsius']} C for "
             f"{p['duration_seconds']} s, logger {p['logger_id']})")


def _exposed(case: CaseState, item_ids: list[str], reason: str) -> None:
    """Quarantine items out of their storage range, and the doses of a batch among them."""
    for item_id in item_ids:
        _quarantine(case, item_id, reason)
        if item_id in case.batches:  # a batch's doses were in the same box
            for dose_id, dose in case.doses.items():
                if dose.batch_id == item_id:
                    _quarantine(case, dose_id, reason)


def _temperature_log(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    panel = panel_for(case.therapy_type)
    if panel is None:
        return
    found = storage_excursion(panel, [(codec.to_us(r["at"]), r["celsius"])
                                      for r in p["readings"]])
    if found is None:
        return
    _exposed(case, p["item_ids"], f"logger {p['logger_id']}: {found}")


def _quarantine_dispositioned(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    item = case.items.get(p["item_id"])
    if item is None:
        return
    dose = case.doses.get(p["item_id"])
    if p["decision"] == "RELEASED":
        item.quarantined, item.quarantine_reason = False, ""
        if dose is not None and dose.status is DoseStatus.QUARANTINED:
            dose.status = dose.before_quarantine or DoseStatus.AVAILABLE
            dose.before_quarantine = None
    elif p["decision"] == "DESTROYED":
        item.consumed = True
        if dose is not None:
            _dose_to(case, p["item_id"], DoseStatus.DESTROYED)


def _dose_to(case: CaseState, dose_id: str, status: DoseStatus) -> DoseRecord | None:
    """Move a dose to ``status`` unless it is already administered or destroyed."""
    dose = case.doses.get(dose_id)
    if dose is None or dose.status in FINAL_DOSE:
        return None
    dose.status = status
    if status in FINAL_DOSE and dose_id in case.items:
        case.items[dose_id].consumed = True
    return dose


def _placed(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    dose = _dose_to(case, p["dose_id"], DoseStatus.PLACED)
    if dose is not None:
        dose.site = p["site_id"]
        dose.location = p["location"]
        dose.placement_method = p["placement_method"]
        if dose.placement_method == "SITE_STOCK":  # the site buys it on receipt
            dose.owner = p["site_id"]
        case.items[p["dose_id"]].location = p["location"]


def _reserved(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    dose = _dose_to(case, p["dose_id"], DoseStatus.RESERVED)
    if dose is not None:
        dose.reserved_for = p["administration_id"]


def _dispensed(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    dose = _dose_to(case, p["dose_id"], DoseStatus.DISPENSED)
    if dose is not None and p.get("dispensed_to"):
        case.items[p["dose_id"]].holder = p["dispensed_to"]


def _identity(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    proof = p.get("patient_proof")
    case.identity_checks[e.event_id] = IdentityCheck(
        p["result"], p["step"], p["patient_hash"], e.occurred_at_us, p.get("dose_id"),
        p.get("sample_id"), None if proof is None else proof["kind"],
        None if proof is None else proof["administration_id"])
    if proof is not None:
        case.bedside_challenges.add(bytes(proof["challenge"]))


def _administered(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    dose = _dose_to(case, p["dose_id"], DoseStatus.ADMINISTERED)
    if dose is not None and dose.placement_method != "SITE_STOCK" and case.site:
        dose.owner = case.site  # consigned stock is the site's (and billed) once used
    case.administrations[e.event_id] = Administration(
        p["dose_id"], p["administration_id"], e.occurred_at_us, p["dose_number"],
        p["identity_check_event_id"])
    case.doses_administered.append(p["dose_number"])


def _destroyed(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    _dose_to(case, p["dose_id"], DoseStatus.DESTROYED)


def _expired(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    dose = _dose_to(case, p["dose_id"], DoseStatus.EXPIRED)
    if dose is not None:
        dose.expiry_us = codec.to_us(p["expired_at"])


def _outcome(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    at = e.occurred_at_us
    if case.last_outcome_at_us is None or at > case.last_outcome_at_us:
        case.last_outcome_at_us = at


def _adverse_event(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.adverse_events += 1


def _research(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.research_requests.add(p["request_id"])


def _genome_stored(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.genome_roots.add(p["root_hash"])


def _genome_restored(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.restore_tokens.add(bytes.fromhex(p["token_nonce"]))


def _claim(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.claims[p["claim_id"]] = Claim(p["administration_event_id"], p["amount"])


def _adjudicated(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    claim = case.claims.get(p["claim_id"])
    if claim is not None:
        claim.status = p["status"]


def _paid(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    claim = case.claims.get(p["claim_id"])
    if claim is not None:
        claim.paid += p["amount"]
        claim.status = "PAID"


def _milestone(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    case.milestones.add((p["agreement_id"], p["milestone"]))


def _alert_acknowledged(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    if case.alerts.get(p["alert_id"]) is AlertStatus.OPEN:
        case.alerts[p["alert_id"]] = AlertStatus.ACKNOWLEDGED


def _alert_resolved(case: CaseState, p: dict[str, Any], e: InboundEvent) -> None:
    if p["alert_id"] in case.alerts:
        case.alerts[p["alert_id"]] = AlertStatus.RESOLVED


_HANDLERS: dict[str, Handler] = {
    "PatientEnrolled": _enrolled,
    "EligibilityConfirmed": _eligibility,
    "PatientCredentialIssued": _consent,
    "ConsentGranted": _consent,
    "ConsentWitnessed": _consent,
    "ConsentWithdrawn": _consent,
    "DiagnosisRecorded": _diagnosis,
    "TherapyOrdered": _ordered,
    "AdministrationScheduled": _scheduled,
    "SampleCollected": _sample_collected,
    "SampleReceived": _sample_received,
    "SequencingCompleted": _sequenced,
    "VariantCallsProduced": _variant_calls,
    "GenomeStored": _genome_stored,
    "GenomeRestored": _genome_restored,
    "NeoantigenDesignProduced": _design_produced,
    "DesignApproved": _design_approved,
    "ManufacturingStarted": _manufacturing_started,
    "ManufacturingStepCompleted": _step_completed,
    "QcResultRecorded": _qc,
    "BatchDispositioned": _dispositioned,
    "ShipmentDispatched": _dispatched,
    "ShipmentReceived": _received,
    "CustodyReleased": _released,
    "CustodyTransferred": _transferred,
    "QuarantineDispositioned": _quarantine_dispositioned,
    "TemperatureExcursion": _excursion,
    "TemperatureLogRecorded": _temperature_log,
    "InventoryPlaced": _placed,
    "DoseReserved": _reserved,
    "DoseDispensed": _dispensed,
    "IdentityVerified": _identity,
    "DoseAdministered": _administered,
    "DoseDestroyed": _destroyed,
    "DoseExpired": _expired,
    "OutcomeRecorded": _outcome,
    "AdverseEventReported": _adverse_event,
    "ResearchDataRequested": _research,
    "ClaimSubmitted": _claim,
    "ClaimAdjudicated": _adjudicated,
    "PaymentPosted": _paid,
    "OutcomeMilestoneReached": _milestone,
    "AlertAcknowledged": _alert_acknowledged,
    "AlertResolved": _alert_resolved,
}
