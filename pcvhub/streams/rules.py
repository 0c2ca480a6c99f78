"""The custody rules R1..R9: one small policy object per rule, composed with ``AllOf``.

Each rule answers ``check(event, case) -> Verdict`` and refuses with a code and a
sentence that names the event, the item or field at fault and what to do about it.
Rules only read the ``CaseState`` (and the live ``KeyRegistry``, which the gatekeeper
keeps folding as registry events are accepted: rules hold the object, never a copy);
the gatekeeper folds the event into the case after every rule accepted it. What each
event type allows (roles, signature meaning, site binding, lifecycle, consent scope) is
one row of the policy table (``pcvhub.schemas.policy``), so that a reviewer can read the
policy without reading control flow; an event type without a row is refused (fail
closed). Each rule stands alone: none relies on another having run first.

Refusals that put a patient at risk carry ``alert=True``: a design or batch that is not
the approved one, a dose about to reach the wrong patient, a quarantined dose dispensed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any

from pcvhub.ids import is_study_chain
from pcvhub.schemas import codec
from pcvhub.schemas.policy import PATIENT, POLICY, ConsentScope, EventPolicy
from pcvhub.schemas.specifications import (
    LimitKind,
    Recipe,
    UnreadableValue,
    panel_for,
    recipe_for,
)
from pcvhub.streams.case import (
    FINAL_DOSE,
    PRECONDITIONS,
    BatchRecord,
    CaseState,
    CustodyItem,
    DoseRecord,
    DoseStatus,
    Stage,
)
from pcvhub.streams.event import InboundEvent
from pcvhub.streams.timebounds import SigningTime, TimeBounds
from pcvhub.streams.verdict import AllOf, Verdict
from pcvhub.times import utc_iso
from pcvhub.trust.patient_card import (
    CHALLENGE_MAX_BYTES,
    CHALLENGE_MIN_BYTES,
    CHALLENGE_TTL_US,
    verify_bedside_answer,
)
from pcvhub.trust.registry import REGISTRY_COI, REGISTRY_EVENTS, KeyRegistry
from pcvhub.vault.restore_gate import token_from_restore

ACCEPT = Verdict.accept()
#: the placement methods of ``InventoryPlaced`` whose ownership and billing the hub knows
PLACEMENT_METHODS = frozenset({"CONSIGNMENT", "SITE_STOCK", "JUST_IN_TIME"})
#: a just-in-time placement needs an administration scheduled within this (72 h)
JUST_IN_TIME_WINDOW_US = 72 * 3_600_000_000


def _hex(digest: bytes) -> str:
    return digest.hex()[:16] if digest else "(empty: first event)"


def _short(value: str) -> str:
    return value[:16] + "..." if len(value) > 16 else value


# -- R8 idempotence ----------------------------------------------------------------------

class Idempotence:
    """R8: an event id is applied once; a repeat is acknowledged (refused, not re-applied)."""

    name = "R8"

    def check(self, event: InboundEvent, case: CaseState) -> Verdict:
        if event.event_id in case.event_ids:
            return Verdict.refuse(
                self.name, "DUPLICATE_EVENT",
                f"event {event.event_id} ({event.event_type}) was already accepted for "
                f"{event.coi}; it is acknowledged once and applied once, so this copy is not "
                "applied again; the producer need not resend it",
            )
        return ACCEPT


# -- R1 signatures -----------------------------------------------------------------------

_R1_REMEDY: dict[str, str] = {
    "UNREGISTERED_KEY": "have the registrar register the signer and this key "
                        "(ActorRegistered) before its events are sent",
    "KEY_REVOKED": "the key must not be trusted after its revocation: re-sign with the "
                   "actor's current key and review what was signed after any compromise",
    "KEY_NOT_YET_VALID": "sign with a key that is valid at the event's occurred-at",
    "KEY_EXPIRED": "sign with the actor's current key (see KeyRotated)",
    "SIGNATURE_INVALID": "the bytes were altered after signing or signed with another key: "
                         "re-issue the event from its source",
    "BATCH_PATH_INVALID": "the event or its batch proof was altered: re-issue the batch",
    "UNSIGNED": "sign the event with both halves (Ed25519 and ML-DSA-65)",
}


class Signatures:
    """R1: both signatures verify with a key the registry knows, valid at occurred-at and
    not revoked (all checked by ``KeyRegistry.verify``)."""

    name = "R1"

    def __init__(self, registry: KeyRegistry) -> None:
        self.registry = registry

    def check(self, event: InboundEvent, case: CaseState) -> Verdict:
        result = self.registry.verify(event.envelope)
        if result.ok:
            return ACCEPT
        remedy = _R1_REMEDY.get(result.code, "re-sign it with a registered, valid key")
        return Verdict.refuse(
            self.name, result.code,
            f"event {event.event_id} ({event.event_type}) signed by {event.producer} with "
            f"key {event.envelope.key_id} fails verification: {'; '.join(result.failures)}; "
            f"{remedy}",
        )


# -- R3 chain ----------------------------------------------------------------------------

class HashChain:
    """R3: prev-hash is the chain digest of the last accepted event of the same CoI."""

    name = "R3"

    def check(self, event: InboundEvent, case: CaseState) -> Verdict:
        prev = event.envelope.prev_hash
        if prev == case.head:
            return ACCEPT
        return Verdict.refuse(
            self.name, "HASH_CHAIN_BROKEN",
            f"event {event.event_id} ({event.event_type}) names previous hash {_hex(prev)} "
            f"but the last accepted event of {event.coi} has hash {_hex(case.head)}; read "
            "the current chain head from the canonical log and re-issue the event",
        )


# -- R2 role -----------------------------------------------------------------------------

class RoleAllowed:
    """R2: the producer holds a role that may emit this event type, on the right chain,
    with the right signature meaning, at the therapy's site for hospital steps."""

    name = "R2"

    def __init__(self, registry: KeyRegistry,
                 policy: Mapping[str, EventPolicy] = POLICY) -> None:
        self.registry = registry
        self.policy = policy

    def check(self, event: InboundEvent, case: CaseState) -> Verdict:
        kind = event.event_type
        row = self.policy.get(kind)
        if row is not None and row.gatekeeper_output:
            return Verdict.refuse(
                self.name, "GATEKEEPER_OUTPUT",
                f"event {event.event_id} is a {kind}, which only the gatekeeper writes (to "
                f"its own topics); it was sent by {event.producer} through ingress and is "
                "not accepted from anyone; report the problem instead of sending a verdict",
            )
        if row is None:
            return Verdict.refuse(
                self.name, "UNKNOWN_EVENT_TYPE",
                f"event {event.event_id} has type {kind}, which no role may emit through "
                "the gatekeeper; add its row to the policy table (pcvhub.schemas.policy) "
                "after review, or send the right event type",
            )
        allowed = row.roles
        on_registry = event.coi == REGISTRY_COI
        if row.registry and not on_registry:
            return Verdict.refuse(
                self.name, "REGISTRY_EVENT_OFF_REGISTRY",
                f"event {event.event_id} ({kind}) is chained to {event.coi}, but actors and "
                f"keys change only on the registry chain {REGISTRY_COI}; re-issue it there",
            )
        if on_registry and not row.registry:
            return Verdict.refuse(
                self.name, "NOT_A_REGISTRY_EVENT",
                f"event {event.event_id} ({kind}) is chained to the registry {REGISTRY_COI}, "
                f"which holds only {', '.join(sorted(REGISTRY_EVENTS))}; send it on the "
                "chain-of-identity id of its therapy",
            )
        held = self.registry.roles_of(event.producer)
        if not allowed & held:
            return Verdict.refuse(
                self.name, "ROLE_NOT_ALLOWED",
                f"event {event.event_id} ({kind}) was signed by {event.producer} with roles "
                f"{', '.join(sorted(held)) or 'none'}; only {', '.join(sorted(allowed))} may "
                "emit it; have an actor with one of those roles sign it",
            )
        # a signer counts as the patient when PATIENT is the only role letting it sign this
        as_patient = PATIENT in held and not (allowed & held) - {PATIENT}
        if as_patient and not on_registry:
            refused = self._not_this_patient(event, case)
            if refused is not None:
                return refused
        scope = event.payload.get("scope")
        if scope in row.patient_scopes and not as_patient:
            return Verdict.refuse(
                self.name, "PATIENT_SIGNATURE_REQUIRED",
                f"event {event.event_id} ({kind}) grants {scope} consent for therapy "
                f"{event.coi}, but it is signed by {event.producer} (roles "
                f"{', '.join(sorted(held))}), not by the patient's own card key; only the "
                f"patient may let their data go to {scope}: have the patient sign it with "
                "their card, or, if the patient cannot sign, a clinician of the site records "
                "it as witnessed (ConsentWitnessed, with the reason)",
            )
        meaning = row.meaning_of(as_patient)
        if event.envelope.meaning != meaning:
            return Verdict.refuse(
                self.name, "WRONG_SIGNATURE_MEANING",
                f"event {event.event_id} ({kind}) by {event.producer} is signed with meaning "
                f"{event.envelope.meaning.value}, but this step is an electronic signature "
                f"with meaning {meaning.value}; sign it again with that meaning",
            )
        bound = row.site_bound
        if bound is not None and bound(event.payload):
            site = case.site if case.site is not None else event.payload.get("site_id")
            actor_site = self.registry.site_of(event.producer)
            if site is None or actor_site != site:
                return Verdict.refuse(
                    self.name, "WRONG_SITE",
                    f"event {event.event_id} ({kind}) was signed by {event.producer} of site "
                    f"{actor_site or 'none'}, but therapy {event.coi} is treated at site "
                    f"{site or 'unknown'}; only staff of that site may do this step",
                )
        return ACCEPT

    def _not_this_patient(self, event: InboundEvent, case: CaseState) -> Verdict | None:
        """A patient's key signs only for the therapy a clinician bound it to."""
        if case.patient_credential(event.producer, event.envelope.key_id) is not None:
            return None
        bound = sorted(c.key_id for c in case.patient_credentials.values())
        return Verdict.refuse(
            self.name, "PATIENT_NOT_OF_THIS_THERAPY",
            f"event {event.event_id} ({event.event_type}) is signed by patient "
            f"{event.producer} with card key {event.envelope.key_id}, which no clinician bound "
            f"to the patient of therapy {event.coi} (its bound card keys: "
            f"{', '.join(bound) or 'none yet'}); a patient signs only their own therapy's "
            "events: sign with the card issued for this therapy (PatientCredentialIssued)",
        )


# -- R4 lifecycle ------------------------------------------------------------------------

class Lifecycle:
    """R4: the event is in order for the chain's current stage (the ``transition`` column
    of the policy table; on the registry chain only registry events, in any order; on a
    study chain only study events)."""

    name = "R4"

    def __init__(self, policy: Mapping[str, EventPolicy] = POLICY) -> None:
        self.policy = policy

    def check(self, event: InboundEvent, case: CaseState) -> Verdict:
        row = self.policy.get(event.event_type)
        on_registry = event.coi == REGISTRY_COI
        on_study = is_study_chain(event.coi)
        transition = row.transition if row is not None and row.registry == on_registry \
            and row.study == on_study else None
        if transition is None:
            what = ("the registry chain" if on_registry
                    else f"study chain {event.coi}" if on_study
                    else f"the lifecycle of therapy {event.coi}")
            return Verdict.refuse(
                self.name, "NOT_IN_LIFECYCLE",
                f"event {event.event_id} has type {event.event_type}, which has no place in "
                f"{what} (pcvhub.schemas.policy); it cannot be applied",
            )
        if case.stage not in transition.allowed_from:
            if case.stage is Stage.NEW:
                hint = "the first event of a therapy must be PatientEnrolled"
            else:
                hint = ("it is allowed only at "
                        + ", ".join(s.value for s in Stage if s in transition.allowed_from))
            return Verdict.refuse(
                self.name, "OUT_OF_ORDER",
                f"event {event.event_id} ({event.event_type}) arrived while therapy "
                f"{event.coi} is at stage {case.stage.value}; {hint}; send the missing "
                "earlier steps first",
            )
        if transition.requires is not None:
            pre = PRECONDITIONS[transition.requires]
            if not pre.holds(case, event.payload):
                detail = pre.explain(case, event.payload) if pre.explain else None
                return Verdict.refuse(
                    self.name, pre.code,
                    f"event {event.event_id} ({event.event_type}) of therapy {event.coi} "
                    f"needs {pre.needs}, and that does not hold "
                    f"({detail or _name_of(event.payload)}); {pre.remedy}",
                )
        return ACCEPT


def _name_of(payload: Mapping[str, Any]) -> str:
    for field_name in ("dose_id", "batch_id", "design_id", "item_id", "shipment_id",
                       "claim_id", "order_id"):
        if field_name in payload:
            return f"{field_name} {payload[field_name]}"
    return "see its payload"


# -- R5 identity -------------------------------------------------------------------------

def _own_dose(event: InboundEvent, case: CaseState, *, alert: bool) -> Verdict:
    dose_id = event.payload["dose_id"]
    dose = case.doses.get(dose_id)
    if dose is not None and dose.batch_id in case.batches:
        return ACCEPT
    return Verdict.refuse(
        "R5", "DOSE_NOT_FROM_THIS_PATIENT",
        f"dose {dose_id} in event {event.event_id} ({event.event_type}) is not from a "
        f"released batch of therapy {event.coi}; quarantine the dose and check its label "
        "against the patient's chain-of-identity id",
        alert=alert,
    )


def _same_site(event: InboundEvent, case: CaseState, *, alert: bool) -> Verdict:
    named = event.payload["site_id"]
    if named == case.site:
        return ACCEPT
    return Verdict.refuse(
        "R5", "SITE_MISMATCH",
        f"event {event.event_id} ({event.event_type}) names site {named}, but therapy "
        f"{event.coi} is treated at site {case.site}; correct the site or the therapy id",
        alert=alert,
    )


class ChainOfIdentity:
    """R5: sample -> sequencing -> design -> batch -> dose -> patient -> claim all belong to
    this therapy, and the patient at the bedside is the enrolled one: proven by the
    patient's own card key (read from the live ``KeyRegistry``), not by a MATCH flag."""

    name = "R5"

    def __init__(self, registry: KeyRegistry,
                 policy: Mapping[str, EventPolicy] = POLICY) -> None:
        self.registry = registry
        self.policy = policy

    def check(self, event: InboundEvent, case: CaseState) -> Verdict:
        check = self._checks.get(event.event_type)
        return ACCEPT if check is None else check(self, event, case)

    def _order(self, event: InboundEvent, case: CaseState) -> Verdict:
        refused = _same_site(event, case, alert=False)
        if not refused.accepted:
            return refused
        named = event.payload["therapy_type"]
        if named == case.therapy_type:
            return ACCEPT
        return Verdict.refuse(
            self.name, "THERAPY_TYPE_MISMATCH",
            f"order {event.payload['order_id']} in event {event.event_id} is for therapy type "
            f"{named}, but the patient of {event.coi} is enrolled for {case.therapy_type}; "
            "order the enrolled therapy or enrol the patient for this one",
        )

    def _schedule(self, event: InboundEvent, case: CaseState) -> Verdict:
        return _same_site(event, case, alert=False)

    def _sample(self, sample_id: str, event: InboundEvent, case: CaseState) -> Verdict:
        item = case.items.get(sample_id)
        if item is not None and item.kind == "SAMPLE":
            return ACCEPT
        return Verdict.refuse(
            self.name, "SAMPLE_NOT_FROM_THIS_PATIENT",
            f"sample {sample_id} in event {event.event_id} ({event.event_type}) was never "
            f"collected for therapy {event.coi}; stop: it may be another patient's sample; "
            "check the label against the chain-of-identity id",
            alert=True,
        )

    def _sample_received(self, event: InboundEvent, case: CaseState) -> Verdict:
        return self._sample(event.payload["sample_id"], event, case)

    def _sequenced(self, event: InboundEvent, case: CaseState) -> Verdict:
        for sample_id in event.payload["sample_ids"]:
            refused = self._sample(sample_id, event, case)
            if not refused.accepted:
                return refused
        return ACCEPT

    def _not_this_patients_data(self, event: InboundEvent, what: str, digest: str) -> Verdict:
        return Verdict.refuse(
            self.name, "DESIGN_NOT_FROM_THIS_PATIENT",
            f"{what} in event {event.event_id} ({event.event_type}) was built on {digest}, "
            f"which is not data of therapy {event.coi}; stop: it may belong to another "
            "patient; recompute it from this patient's sequencing data",
            alert=True,
        )

    def _variant_calls(self, event: InboundEvent, case: CaseState) -> Verdict:
        seq = event.payload["sequencing_hash"]
        if seq in case.sequencing_hashes:
            return ACCEPT
        return self._not_this_patients_data(
            event, f"variant calls {_short(event.payload['content_hash'])}",
            f"sequencing data {_short(seq)}")

    def _design(self, event: InboundEvent, case: CaseState) -> Verdict:
        p = event.payload
        what = f"design {p['design_id']}"
        if p["sequencing_hash"] not in case.sequencing_hashes:
            return self._not_this_patients_data(
                event, what, f"sequencing data {_short(p['sequencing_hash'])}")
        calls = p.get("variant_calls_hash")
        if calls is not None and calls not in case.variant_call_hashes:
            return self._not_this_patients_data(event, what, f"variant calls {_short(calls)}")
        refused = self._model(event)
        if not refused.accepted:
            return refused
        if p["design_id"] in case.designs:
            return Verdict.refuse(
                self.name, "DESIGN_ID_IN_USE",
                f"event {event.event_id} produces design {p['design_id']}, an id therapy "
                f"{event.coi} already used; a changed design needs a new id and new approvals",
            )
        return ACCEPT

    def _model(self, event: InboundEvent) -> Verdict:
        """The design was made by a registered, current model, with its validated hash, by
        the design service it is registered for."""
        p = event.payload
        model = self.registry.models.get(p["model_id"])
        problem: str | None
        if model is None:
            known = sorted(self.registry.models)
            problem = (f"names model {p['model_id']!r}, which is not registered (registered: "
                       f"{', '.join(known) or 'none'})")
        elif model.design_service != event.producer:
            problem = (f"was produced by {event.producer}, but model {model.model_id} is "
                       f"registered for design service {model.design_service}")
        else:
            problem = model.problem_at(p["model_hash"], event.occurred_at_us)
        if problem is None:
            return ACCEPT
        return Verdict.refuse(
            self.name, "MODEL_NOT_REGISTERED",
            f"design {p['design_id']} in event {event.event_id} {problem}; a design is made "
            "only by a validated model the registrar registered (ModelRegistered): rerun "
            "the design with the registered model, or register the new one after its "
            "validation",
            alert=True,
        )

    def _model_registered(self, event: InboundEvent, case: CaseState) -> Verdict:
        p = event.payload
        problems = []
        if "DESIGN_APPROVER" not in self.registry.roles_of(p["approved_by"]):
            problems.append(f"its approver {p['approved_by']} is no registered design "
                            "approver")
        if "DESIGN_SERVICE" not in self.registry.roles_of(p["design_service"]):
            problems.append(f"{p['design_service']} is no registered design service")
        digest = p["model_hash"]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            problems.append(f"its hash {_short(digest)} is not a lowercase hex SHA-256")
        if p["model_id"] in self.registry.models:
            problems.append(f"model id {p['model_id']!r} is already registered (a new "
                            "version needs its own id)")
        if not problems:
            return ACCEPT
        return Verdict.refuse(
            self.name, "MODEL_REGISTRATION_INVALID",
            f"event {event.event_id} registers model {p['model_id']!r}, but "
            f"{'; '.join(problems)}; correct the registration",
        )

    def _model_retired(self, event: InboundEvent, case: CaseState) -> Verdict:
        model = self.registry.models.get(event.payload["model_id"])
        if model is not None and model.retired_at_us is None:
            return ACCEPT
        return Verdict.refuse(
            self.name, "MODEL_NOT_REGISTERED",
            f"event {event.event_id} retires model {event.payload['model_id']!r}, which is "
            f"{'already retired' if model is not None else 'not registered'}; check the id",
        )

    def _approval(self, event: InboundEvent, case: CaseState) -> Verdict:
        design = case.designs.get(event.payload["design_id"])
        named = event.payload["design_hash"]
        if design is None:
            return Verdict.refuse(
                self.name, "UNKNOWN_DESIGN",
                f"event {event.event_id} approves design {event.payload['design_id']}, which "
                f"therapy {event.coi} never produced; approve a design of this therapy",
            )
        if named != design.design_hash:
            return Verdict.refuse(
                self.name, "DESIGN_HASH_MISMATCH",
                f"event {event.event_id} approves design {event.payload['design_id']} with "
                f"hash {_short(named)}, but the design produced has hash "
                f"{_short(design.design_hash)}; the reviewed document is not the produced "
                "design: review the produced design again",
                alert=True,
            )
        return ACCEPT

    def _manufacture(self, event: InboundEvent, case: CaseState) -> Verdict:
        p = event.payload
        if p["design_hash"] not in case.approved_design_hashes:
            return Verdict.refuse(
                self.name, "DESIGN_ALTERED_AFTER_APPROVAL",
                f"batch {p['batch_id']} in event {event.event_id} is made from design hash "
                f"{_short(p['design_hash'])}, which is not a design of therapy {event.coi} "
                "approved by two different approvers; stop manufacturing and use the "
                "approved design",
                alert=True,
            )
        if p["batch_id"] in case.batches:
            return Verdict.refuse(
                self.name, "BATCH_ID_IN_USE",
                f"event {event.event_id} starts batch {p['batch_id']}, an id therapy "
                f"{event.coi} already used; give the new batch its own lot number",
            )
        return ACCEPT

    def _batch(self, event: InboundEvent, case: CaseState) -> Verdict:
        batch_id = event.payload["batch_id"]
        if batch_id in case.batches:
            return ACCEPT
        return Verdict.refuse(
            self.name, "UNKNOWN_BATCH",
            f"event {event.event_id} ({event.event_type}) names batch {batch_id}, which was "
            f"never started for therapy {event.coi}; check the lot number",
        )

    def _disposition(self, event: InboundEvent, case: CaseState) -> Verdict:
        refused = self._batch(event, case)
        if not refused.accepted:
            return refused
        dose_ids = event.payload["dose_ids"]
        reused = sorted(d for d in set(dose_ids) if d in case.items or dose_ids.count(d) > 1)
        if reused:
            return Verdict.refuse(
                self.name, "DOSE_ID_IN_USE",
                f"event {event.event_id} releases doses {', '.join(reused)} of batch "
                f"{event.payload['batch_id']}, but those ids are repeated or already in use "
                f"in therapy {event.coi}; every dose needs its own id",
            )
        return ACCEPT

    def _placement(self, event: InboundEvent, case: CaseState) -> Verdict:
        refused = _own_dose(event, case, alert=True)
        return refused if not refused.accepted else _same_site(event, case, alert=True)

    def _reservation(self, event: InboundEvent, case: CaseState) -> Verdict:
        refused = _own_dose(event, case, alert=True)
        if not refused.accepted:
            return refused
        administration = event.payload["administration_id"]
        if administration in case.scheduled:
            return ACCEPT
        return Verdict.refuse(
            self.name, "UNKNOWN_ADMINISTRATION",
            f"event {event.event_id} reserves dose {event.payload['dose_id']} for "
            f"administration {administration}, which was never scheduled for therapy "
            f"{event.coi}; schedule it first (AdministrationScheduled)",
        )

    def _matching_check(self, event: InboundEvent, case: CaseState, steps: frozenset[str]
                        ) -> str | None:
        """Why the identity check the event names does not clear it; None if it does."""
        ref = event.payload.get("identity_check_event_id")
        check = case.identity_checks.get(ref) if ref is not None else None
        if check is None:
            return f"names identity check {ref}, which is no identity check of {event.coi}"
        if check.result != "MATCH":
            return f"names identity check {ref}, whose result was {check.result}"
        if check.step not in steps:
            return (f"names identity check {ref} done at step {check.step}, not at "
                    f"{' or '.join(sorted(steps))}")
        if check.dose_id is not None and check.dose_id != event.payload["dose_id"]:
            return f"names identity check {ref}, which checked dose {check.dose_id}"
        if check.occurred_at_us > event.occurred_at_us:
            return f"names identity check {ref}, which happened after this event"
        return None

    def _not_verified(self, event: InboundEvent, problem: str) -> Verdict:
        return Verdict.refuse(
            self.name, "IDENTITY_NOT_VERIFIED",
            f"event {event.event_id} ({event.event_type}) of dose {event.payload['dose_id']} "
            f"{problem}; stop: the dose may be about to reach the wrong patient; verify the "
            "patient against the dose and reference that matching check",
            alert=True,
        )

    def _dispense(self, event: InboundEvent, case: CaseState) -> Verdict:
        refused = _own_dose(event, case, alert=True)
        if not refused.accepted or event.payload.get("identity_check_event_id") is None:
            return refused
        problem = self._matching_check(event, case, frozenset({"DISPENSE"}))
        return ACCEPT if problem is None else self._not_verified(event, problem)

    def _administration(self, event: InboundEvent, case: CaseState) -> Verdict:
        refused = _own_dose(event, case, alert=True)
        if not refused.accepted:
            return refused
        problem = self._matching_check(event, case, frozenset({"BEDSIDE"}))
        ref = event.payload["identity_check_event_id"]
        check = case.identity_checks.get(ref)
        if problem is None and check is not None and check.administration_id not in (
                None, event.payload["administration_id"]):
            problem = (f"names identity check {ref}, whose patient's card answered the "
                       f"challenge of administration {check.administration_id}, not of "
                       f"{event.payload['administration_id']}")
        if problem is None and ref in case.used_identity_checks():
            problem = (f"names identity check {ref}, which already cleared an earlier "
                       "administration; every administration needs its own bedside check")
        return ACCEPT if problem is None else self._not_verified(event, problem)

    def _identity(self, event: InboundEvent, case: CaseState) -> Verdict:
        p = event.payload
        if p["result"] == "MISMATCH" or (
                p["result"] == "MATCH" and p["patient_hash"] != case.patient_hash):
            return Verdict.refuse(
                self.name, "IDENTITY_MISMATCH",
                f"identity check {event.event_id} at step {p['step']} reported {p['result']} "
                f"for patient {_short(p['patient_hash'])}, but the patient enrolled in "
                f"{event.coi} is {_short(case.patient_hash or 'unknown')} and only a check of "
                "that patient can match: do not dispense or administer; verify the "
                "patient's identity again",
                alert=True,
            )
        row = self.policy.get(event.event_type)
        demanded = row is not None and row.patient_proof is not None and row.patient_proof(p)
        # a proof that is carried is verified even where none is demanded: the case records
        # its kind, and nothing unverified may read as the patient's answer
        if demanded or p.get("patient_proof") is not None:
            problem = self._proof_problem(event, case)
            if problem is not None:
                code, why, remedy = problem
                return Verdict.refuse(
                    self.name, code,
                    f"identity check {event.event_id} at step {p['step']} of therapy "
                    f"{event.coi} reports {p['result']}, but {why}; do not dispense or "
                    f"administer: {remedy}",
                    alert=True,
                )
        if p.get("dose_id") is not None:
            return _own_dose(event, case, alert=True)
        if p.get("sample_id") is not None:
            return self._sample(p["sample_id"], event, case)
        return ACCEPT

    def _proof_problem(self, event: InboundEvent, case: CaseState
                       ) -> tuple[str, str, str] | None:
        """(code, what is wrong, what to do) with the patient's proof of a bedside MATCH."""
        p = event.payload
        proof = p.get("patient_proof")
        again = "issue a fresh challenge and have the patient's own card answer it"
        if proof is None:
            return ("IDENTITY_UNPROVEN", "it carries no proof from the patient (a MATCH flag "
                    "is only the signer's word)", again + ", or record the witnessed "
                    "fallback (WITNESSED_NO_CARD) with its reason")
        dose_id = p.get("dose_id")
        if dose_id is None:
            return ("IDENTITY_UNPROVEN", "it names no dose, so the challenge is bound to none",
                    "check the patient against the dose about to be given")
        # the administration that names this check must be the one the challenge was for
        administration = proof["administration_id"]
        reserved = case.doses.get(dose_id)
        if reserved is not None and reserved.reserved_for not in (None, administration):
            return ("BEDSIDE_CHALLENGE_WRONG_ADMINISTRATION", f"its challenge was issued for "
                    f"administration {administration}, but dose {dose_id} is reserved for "
                    f"administration {reserved.reserved_for}", again + " for this dose")
        challenge = bytes(proof["challenge"])
        if not CHALLENGE_MIN_BYTES <= len(challenge) <= CHALLENGE_MAX_BYTES:
            return ("BEDSIDE_CHALLENGE_INVALID", f"its challenge is {len(challenge)} bytes, "
                    f"not {CHALLENGE_MIN_BYTES} to {CHALLENGE_MAX_BYTES} random bytes", again)
        if challenge in case.bedside_challenges:
            return ("BEDSIDE_CHALLENGE_REPLAYED", f"its challenge {challenge.hex()[:16]}... "
                    "was already answered at an earlier check of this therapy: a recorded "
                    "answer is being replayed", again)
        issued = codec.to_us(proof["challenge_issued_at"])
        age = event.occurred_at_us - issued
        if not 0 <= age <= CHALLENGE_TTL_US:
            return ("BEDSIDE_CHALLENGE_STALE", f"its challenge was issued at {issued} µs, "
                    f"{age} µs from the check; a challenge is answered within "
                    f"{CHALLENGE_TTL_US // 1_000_000} s after it is issued", again)
        if proof["kind"] == "WITNESSED_NO_CARD":
            if not (proof.get("witness_reason") or "").strip():
                return ("IDENTITY_UNPROVEN", "it is witnessed without a card but says neither "
                        "why the card could not be used nor how identity was established",
                        "state the reason and the means in witness_reason")
            return None
        if proof["kind"] not in ("CARD_SIGNATURE", "CARD_BIOMETRIC_MATCH"):
            return ("IDENTITY_UNPROVEN", f"its proof is of kind {proof['kind']}, which the "
                    "hub cannot verify", again)
        actor, key_id = proof.get("patient_actor_id") or "", proof.get("key_id") or ""
        credential = case.patient_credential(actor, key_id)
        if credential is None:
            return ("PATIENT_CARD_NOT_OF_THIS_THERAPY", f"the card that answered ({actor} key "
                    f"{key_id}) is not the card a clinician bound to this therapy's patient: "
                    "it may be another patient's card", "find the patient this dose belongs "
                    "to, and check them with their own card")
        key_problem = self.registry.key_problem(actor, key_id, event.occurred_at_us)
        if key_problem is not None:
            return ("PATIENT_KEY_INVALID", f"the card's key cannot sign now: {key_problem[1]}",
                    "a lost card is replaced through the registrar and a witnessing "
                    "clinician (KeyRotated, PatientCredentialIssued); until then use the "
                    "witnessed fallback")
        if proof["kind"] == "CARD_BIOMETRIC_MATCH" and (
                proof.get("biometric_template_hash") != credential.biometric_template_hash):
            return ("BIOMETRIC_TEMPLATE_MISMATCH", f"the card matched the live biometric against "
                    f"template {_short(proof.get('biometric_template_hash') or 'none')}, not "
                    f"the template enrolled with card {credential.card_id} "
                    f"({_short(credential.biometric_template_hash or 'none')})", again)
        record = self.registry.keys[(actor, key_id)]
        verification = verify_bedside_answer(event.coi, dose_id, proof, record.public)
        if not verification.ok:
            return ("PATIENT_PROOF_INVALID", f"{verification}: the answer is not this card's "
                    f"signature over this therapy's challenge for dose {dose_id}", again)
        return None

    def _credential(self, event: InboundEvent, case: CaseState) -> Verdict:
        """A card is bound only to the enrolled patient, and only a PATIENT key that the
        registrar registered (and that is valid now) can be bound."""
        p = event.payload
        actor, key_id = p["patient_actor_id"], p["key_id"]
        if p["patient_hash"] != case.patient_hash:
            return Verdict.refuse(
                self.name, "IDENTITY_MISMATCH",
                f"event {event.event_id} hands card {p['card_id']} to patient "
                f"{_short(p['patient_hash'])}, but the patient enrolled in {event.coi} is "
                f"{_short(case.patient_hash or 'unknown')}; give the card to the enrolled "
                "patient, checked against the wristband",
                alert=True,
            )
        if self.registry.roles_of(actor) != {PATIENT}:
            return Verdict.refuse(
                self.name, "NOT_A_PATIENT_KEY",
                f"event {event.event_id} binds key {key_id} of {actor} to the patient of "
                f"{event.coi}, but that actor holds roles "
                f"{', '.join(sorted(self.registry.roles_of(actor))) or 'none'}, not PATIENT "
                "alone; the registrar registers the card's key as a PATIENT actor first",
            )
        problem = self.registry.key_problem(actor, key_id, event.occurred_at_us)
        if problem is not None:
            return Verdict.refuse(
                self.name, "NOT_A_PATIENT_KEY",
                f"event {event.event_id} binds card key {key_id} to the patient of "
                f"{event.coi}, but {problem[1]}; register (or re-issue) the card first",
            )
        return ACCEPT

    def _dose_record(self, event: InboundEvent, case: CaseState) -> Verdict:
        return _own_dose(event, case, alert=False)

    def _claim(self, event: InboundEvent, case: CaseState) -> Verdict:
        p = event.payload
        administration = p["administration_event_id"]
        if administration not in case.administrations:
            return Verdict.refuse(
                self.name, "CLAIM_WITHOUT_ADMINISTRATION",
                f"claim {p['claim_id']} in event {event.event_id} bills administration "
                f"{administration}, which is no administration of therapy {event.coi}; "
                "bill only recorded administrations",
            )
        if p["claim_id"] in case.claims:
            return Verdict.refuse(
                self.name, "CLAIM_ID_IN_USE",
                f"event {event.event_id} submits claim {p['claim_id']}, an id already used "
                f"in therapy {event.coi}; use a new claim id",
            )
        billed = [c for c, claim in case.claims.items()
                  if claim.administration_event_id == administration]
        if billed:
            return Verdict.refuse(
                self.name, "ADMINISTRATION_ALREADY_BILLED",
                f"claim {p['claim_id']} in event {event.event_id} bills administration "
                f"{administration}, already billed by claim {billed[0]}; adjust that claim "
                "instead of billing twice",
            )
        return ACCEPT

    def _known_claim(self, event: InboundEvent, case: CaseState) -> Verdict:
        claim_id = event.payload["claim_id"]
        if claim_id in case.claims:
            return ACCEPT
        return Verdict.refuse(
            self.name, "UNKNOWN_CLAIM",
            f"event {event.event_id} ({event.event_type}) names claim {claim_id}, which was "
            f"never submitted for therapy {event.coi}; check the claim id",
        )

    def _milestone(self, event: InboundEvent, case: CaseState) -> Verdict:
        p = event.payload
        foreign = [e for e in p["evidence_event_ids"] if e not in case.event_ids]
        if foreign or not p["evidence_event_ids"]:
            return Verdict.refuse(
                self.name, "EVIDENCE_NOT_FROM_THIS_THERAPY",
                f"milestone {p['milestone']} in event {event.event_id} cites evidence "
                f"{', '.join(foreign) or '(none)'} that is not an accepted event of therapy "
                f"{event.coi}; cite this patient's recorded outcomes",
            )
        if (p["agreement_id"], p["milestone"]) in case.milestones:
            return Verdict.refuse(
                self.name, "MILESTONE_ALREADY_REACHED",
                f"event {event.event_id} reports milestone {p['milestone']} of agreement "
                f"{p['agreement_id']}, already reached in therapy {event.coi}; it is paid once",
            )
        return ACCEPT

    def _restore(self, event: InboundEvent, case: CaseState) -> Verdict:
        """A restore names a genome stored for this therapy and carries the patient's own
        token for its requester, judged here again: valid, unexpired, unspent."""
        p = event.payload
        if p["root_hash"] not in case.genome_roots:
            return Verdict.refuse(
                self.name, "GENOME_NOT_STORED",
                f"event {event.event_id} restores genome root {p['root_hash'][:16]}…, which no "
                f"GenomeStored of therapy {event.coi} recorded")
        if p["requester"] != event.producer:
            return Verdict.refuse(
                self.name, "TOKEN_OTHER_REQUESTER",
                f"event {event.event_id} is signed by {event.producer}, but the patient's "
                f"token lets {p['requester']} restore")
        token = token_from_restore(event.coi, p)
        verdict = case.consent.check_token(token, self.registry, ConsentScope.GENOME_STORAGE,
                                           event.occurred_at_us, case.restore_tokens)
        if verdict.ok:
            return ACCEPT
        return Verdict.refuse(self.name, verdict.code,
                              f"event {event.event_id} restores under a token the hub does "
                              f"not honour: {verdict}")

    _checks: dict[str, Callable[[ChainOfIdentity, InboundEvent, CaseState], Verdict]] = {
        "GenomeRestored": _restore,
        "TherapyOrdered": _order,
        "AdministrationScheduled": _schedule,
        "SampleReceived": _sample_received,
        "SequencingCompleted": _sequenced,
        "VariantCallsProduced": _variant_calls,
        "NeoantigenDesignProduced": _design,
        "ModelRegistered": _model_registered,
        "ModelRetired": _model_retired,
        "DesignApproved": _approval,
        "ManufacturingStarted": _manufacture,
        "ManufacturingStepCompleted": _batch,
        "QcResultRecorded": _batch,
        "BatchDispositioned": _disposition,
        "InventoryPlaced": _placement,
        "DoseReserved": _reservation,
        "DoseDispensed": _dispense,
        "IdentityVerified": _identity,
        "PatientCredentialIssued": _credential,
        "DoseAdministered": _administration,
        "DoseDestroyed": _dose_record,
        "DoseExpired": _dose_record,
        "ClaimSubmitted": _claim,
        "ClaimAdjudicated": _known_claim,
        "PaymentPosted": _known_claim,
        "OutcomeMilestoneReached": _milestone,
    }


# -- R6 custody --------------------------------------------------------------------------

class Custody:
    """R6: items move only from their holder, and only with two signatures (the holder
    releases to a named receiver, that receiver accepts; a shipment is dispatched by its
    holder to a named consignee and received only by it); receipts match open dispatches;
    an item is never in two places; a quarantined item goes nowhere until the qualified
    person releases it, and quarantined or expired doses never reach the patient."""

    name = "R6"

    def __init__(self, just_in_time_window_us: int = JUST_IN_TIME_WINDOW_US) -> None:
        """:param just_in_time_window_us: how soon after a JUST_IN_TIME placement the
            administration it is delivered for must be scheduled."""
        self.just_in_time_window_us = just_in_time_window_us

    def check(self, event: InboundEvent, case: CaseState) -> Verdict:
        check = self._checks.get(event.event_type)
        return ACCEPT if check is None else check(self, event, case)

    def _unknown(self, event: InboundEvent, item_id: str) -> Verdict:
        return Verdict.refuse(
            self.name, "UNKNOWN_ITEM",
            f"event {event.event_id} ({event.event_type}) names item {item_id}, which "
            f"therapy {event.coi} has no record of; record the item's creation first or fix "
            "the item id",
        )

    def _unknown_dose(self, event: InboundEvent, dose_id: str) -> Verdict:
        return Verdict.refuse(
            self.name, "UNKNOWN_DOSE",
            f"event {event.event_id} ({event.event_type}) names dose {dose_id}, which no "
            f"released batch of therapy {event.coi} holds, so nobody is its holder and it "
            "may not move or reach a patient; quarantine it and check its label",
        )

    def _in_transit(self, event: InboundEvent, item_id: str, shipment: str) -> Verdict:
        return Verdict.refuse(
            self.name, "ITEM_IN_TRANSIT",
            f"event {event.event_id} ({event.event_type}) acts on item {item_id}, which is "
            f"in transit in shipment {shipment}; an item is never in two places: receive "
            "the shipment first",
        )

    def _consumed(self, event: InboundEvent, item_id: str) -> Verdict:
        return Verdict.refuse(
            self.name, "ITEM_CONSUMED",
            f"event {event.event_id} ({event.event_type}) moves item {item_id}, which was "
            "already administered or destroyed; check the item id",
        )

    def _not_holder(self, event: InboundEvent, item_id: str, actor: str, holder: str
                    ) -> Verdict:
        return Verdict.refuse(
            self.name, "HOLDER_MISMATCH",
            f"event {event.event_id} ({event.event_type}) has {actor} act on item {item_id} "
            f"(signed by {event.producer}), but its current holder is {holder}; the holder "
            "must hand it over, or record the missing transfer or receipt first",
        )

    def _quarantined(self, event: InboundEvent, item_id: str, item: CustodyItem) -> Verdict:
        return Verdict.refuse(
            self.name, "ITEM_QUARANTINED",
            f"event {event.event_id} ({event.event_type}) moves item {item_id}, which is "
            f"quarantined after {item.quarantine_reason or 'a deviation'}; keep it in "
            "quarantine storage until the qualified person releases or destroys it "
            "(QuarantineDispositioned, with the reason)",
        )

    def _movable(self, event: InboundEvent, item_id: str, item: CustodyItem) -> Verdict:
        """The item may leave its holder now: not travelling, not used up."""
        if item.open_dispatch is not None:
            return self._in_transit(event, item_id, item.open_dispatch)
        if item.consumed:
            return self._consumed(event, item_id)
        return ACCEPT

    def _release(self, event: InboundEvent, case: CaseState) -> Verdict:
        """The first signature of a hand-over: the holder names the one receiver."""
        p = event.payload
        item = case.items.get(p["item_id"])
        if item is None:
            return self._unknown(event, p["item_id"])
        if event.producer != item.holder or p["from_actor"] != item.holder:
            return self._not_holder(event, p["item_id"], event.producer, item.holder)
        if p["to_actor"] == item.holder:
            return Verdict.refuse(
                self.name, "RELEASE_TO_SELF",
                f"event {event.event_id} releases item {p['item_id']} from {item.holder} to "
                "the same actor; name the actor who will take the item over",
            )
        return self._movable(event, p["item_id"], item)

    def _transfer(self, event: InboundEvent, case: CaseState) -> Verdict:
        """The second signature of a hand-over: the named receiver accepts; only then does
        custody move."""
        p = event.payload
        item = case.items.get(p["item_id"])
        if item is None:
            return self._unknown(event, p["item_id"])
        giver, taker = p["from_actor"], p["to_actor"]
        if giver != item.holder:
            return self._not_holder(event, p["item_id"], giver, item.holder)
        if event.producer != taker:
            return Verdict.refuse(
                self.name, "ACCEPTANCE_BY_RECEIVER_ONLY",
                f"event {event.event_id} records {taker} taking item {p['item_id']}, but it "
                f"is signed by {event.producer}; custody moves only when the receiver signs "
                f"its acceptance: the holder releases it (CustodyReleased to {taker}) and "
                f"{taker} signs this CustodyTransferred",
            )
        moving = self._movable(event, p["item_id"], item)
        if not moving.accepted:
            return moving
        if item.released_to != taker:
            released = (f"released it to {item.released_to}" if item.released_to
                        else "has not released it")
            return Verdict.refuse(
                self.name, "CUSTODY_NOT_RELEASED",
                f"event {event.event_id} has {taker} take custody of item {p['item_id']}, "
                f"but its holder {item.holder} {released}; the receiver alone cannot move "
                f"custody: have {item.holder} sign the release to {taker} "
                "(CustodyReleased) first, or return the item",
            )
        return ACCEPT

    def _dispatch(self, event: InboundEvent, case: CaseState) -> Verdict:
        p = event.payload
        if p["shipment_id"] in case.shipments:
            return Verdict.refuse(
                self.name, "DUPLICATE_SHIPMENT",
                f"event {event.event_id} dispatches shipment {p['shipment_id']}, which was "
                "already dispatched; use a new shipment id",
            )
        for item_id in p["item_ids"]:
            item = case.items.get(item_id)
            if item is None:
                return self._unknown(event, item_id)
            if item.holder != event.producer:
                return self._not_holder(event, item_id, event.producer, item.holder)
            moving = self._movable(event, item_id, item)
            if not moving.accepted:
                return moving
            if item.quarantined:
                return self._quarantined(event, item_id, item)
            batch = case.batches.get(item_id)
            if batch is not None and batch.disposition != "RELEASED":
                return Verdict.refuse(
                    self.name, "NOT_RELEASED",
                    f"shipment {p['shipment_id']} in event {event.event_id} carries batch "
                    f"{item_id}, which the qualified person has not released; wait for "
                    "release before shipping",
                )
        return ACCEPT

    def _receipt(self, event: InboundEvent, case: CaseState) -> Verdict:
        shipment_id = event.payload["shipment_id"]
        shipment = case.shipments.get(shipment_id)
        if shipment is None or shipment.received:
            state = "was never dispatched" if shipment is None else "was already received"
            return Verdict.refuse(
                self.name, "RECEIPT_WITHOUT_DISPATCH",
                f"event {event.event_id} receives shipment {shipment_id} for therapy "
                f"{event.coi}, but that shipment {state}; hold the goods and ask the sender "
                "for the dispatch record",
            )
        if shipment.recipient != event.producer:
            return Verdict.refuse(
                self.name, "WRONG_RECIPIENT",
                f"event {event.event_id} receives shipment {shipment_id} as {event.producer}, "
                f"but it was dispatched to {shipment.recipient}; only the named consignee "
                "receives it: hand the shipment to that consignee",
            )
        strays = sorted(set(event.payload.get("item_ids") or ()) - set(shipment.items))
        if strays:
            return Verdict.refuse(
                self.name, "ITEM_NOT_IN_SHIPMENT",
                f"event {event.event_id} receives {', '.join(strays)} in shipment "
                f"{shipment_id}, which carried only {', '.join(shipment.items)}; quarantine "
                "the stray items physically and report them: they may be another "
                "patient's",
                alert=True,
            )
        return ACCEPT

    def _sequenced(self, event: InboundEvent, case: CaseState) -> Verdict:
        for sample_id in event.payload["sample_ids"]:
            item = case.items.get(sample_id)
            if item is not None and item.quarantined:
                return Verdict.refuse(
                    self.name, "ITEM_QUARANTINED",
                    f"event {event.event_id} sequences sample {sample_id}, which is "
                    f"quarantined after {item.quarantine_reason}; do not use it: collect a "
                    "new sample, or have the qualified person release it with a reason "
                    "(QuarantineDispositioned)",
                )
        return ACCEPT

    def _quarantine_disposition(self, event: InboundEvent, case: CaseState) -> Verdict:
        p = event.payload
        item = case.items.get(p["item_id"])
        if item is None:
            return self._unknown(event, p["item_id"])
        if p["decision"] not in ("RELEASED", "DESTROYED"):
            return Verdict.refuse(
                self.name, "UNKNOWN_DECISION",
                f"event {event.event_id} decides {p['decision']} for item {p['item_id']}; "
                "decide RELEASED or DESTROYED",
            )
        if not item.quarantined or item.consumed:
            state = "already used or destroyed" if item.consumed else "not quarantined"
            return Verdict.refuse(
                self.name, "NOT_QUARANTINED",
                f"event {event.event_id} dispositions item {p['item_id']}, which is {state}; "
                "only a quarantined item needs the qualified person's disposition",
            )
        if not p["reason"].strip() or p["qualified_person"] != event.producer:
            return Verdict.refuse(
                self.name, "DISPOSITION_UNJUSTIFIED",
                f"event {event.event_id} {p['decision']} quarantined item {p['item_id']} "
                f"(quarantined after {item.quarantine_reason}) without "
                + ("a reason" if not p["reason"].strip()
                   else f"naming its signer {event.producer} as the qualified person")
                + "; the qualified person states why the item is fit for use or must be "
                "destroyed, and signs as themself",
            )
        if p["decision"] == "RELEASED" and item.open_dispatch is not None:
            return self._in_transit(event, p["item_id"], item.open_dispatch)
        return ACCEPT

    def _sample_received(self, event: InboundEvent, case: CaseState) -> Verdict:
        sample_id = event.payload["sample_id"]
        item = case.items.get(sample_id)
        if item is None:
            return self._unknown(event, sample_id)
        if item.open_dispatch is not None:
            return self._in_transit(event, sample_id, item.open_dispatch)
        if item.holder != event.producer:
            return self._not_holder(event, sample_id, event.producer, item.holder)
        return ACCEPT

    def _excursion(self, event: InboundEvent, case: CaseState) -> Verdict:
        for item_id in event.payload["item_ids"]:
            if item_id not in case.items:
                return self._unknown(event, item_id)
        return ACCEPT

    def _temperature_log(self, event: InboundEvent, case: CaseState) -> Verdict:
        """Readings the hub can judge: of known items, in time order, for a therapy type
        whose storage range is specified."""
        refused = self._excursion(event, case)
        if not refused.accepted:
            return refused
        times = [codec.to_us(r["at"]) for r in event.payload["readings"]]
        problem = None
        if not times:
            problem = "it holds no reading"
        elif any(b < a for a, b in pairwise(times)):
            problem = "its readings are not in time order"
        elif panel_for(case.therapy_type) is None:
            problem = f"no storage range is specified for therapy type {case.therapy_type}"
        if problem is None:
            return ACCEPT
        return Verdict.refuse(
            self.name, "TEMPERATURE_LOG_UNJUDGEABLE",
            f"event {event.event_id} uploads logger {event.payload['logger_id']}'s readings, "
            f"but {problem}; upload the logger's full download as read",
        )

    def _unusable(self, event: InboundEvent, case: CaseState, dose_id: str,
                  dose: DoseRecord) -> Verdict | None:
        """A refusal if the dose may not go further towards the patient, else None."""
        if dose.status is DoseStatus.QUARANTINED:
            item = case.items.get(dose_id)
            why = item.quarantine_reason if item is not None else ""
            return Verdict.refuse(
                self.name, "DOSE_QUARANTINED",
                f"dose {dose_id} in event {event.event_id} ({event.event_type}) is "
                f"quarantined after {why or 'a deviation'}; do not use it: keep it in "
                "quarantine storage until the qualified person releases or destroys it "
                "(QuarantineDispositioned, with the reason)",
                alert=event.event_type in ("DoseDispensed", "DoseAdministered"),
            )
        if dose.status is DoseStatus.EXPIRED or (
                dose.expiry_us is not None and event.occurred_at_us >= dose.expiry_us):
            return Verdict.refuse(
                self.name, "DOSE_EXPIRED",
                f"dose {dose_id} in event {event.event_id} ({event.event_type}) expired at "
                f"{dose.expiry_us} µs; destroy it and use another dose",
            )
        if dose.status in FINAL_DOSE:
            return Verdict.refuse(
                self.name, "DOSE_USED",
                f"dose {dose_id} in event {event.event_id} ({event.event_type}) is already "
                f"{dose.status.value}; use another dose",
            )
        return None

    def _not_placed(self, event: InboundEvent, dose_id: str, dose: DoseRecord) -> Verdict:
        return Verdict.refuse(
            self.name, "DOSE_NOT_PLACED",
            f"dose {dose_id} in event {event.event_id} ({event.event_type}) is "
            f"{dose.status.value}, not placed in the site's storage; receive it and record "
            "its placement (InventoryPlaced) first",
        )

    def _placement(self, event: InboundEvent, case: CaseState) -> Verdict:
        dose_id = event.payload["dose_id"]
        dose, item = case.doses.get(dose_id), case.items.get(dose_id)
        if dose is None or item is None:
            return self._unknown_dose(event, dose_id)
        refused = self._unusable(event, case, dose_id, dose)
        if refused is not None:
            return refused
        if item.open_dispatch is not None:
            return self._in_transit(event, dose_id, item.open_dispatch)
        if item.holder != event.producer:
            return self._not_holder(event, dose_id, event.producer, item.holder)
        if dose.status is DoseStatus.RESERVED:
            return Verdict.refuse(
                self.name, "DOSE_RESERVED",
                f"event {event.event_id} places dose {dose_id}, which is reserved for "
                f"administration {dose.reserved_for}; dispense it or let the reservation go",
            )
        method = event.payload["placement_method"]
        if method not in PLACEMENT_METHODS:
            return Verdict.refuse(
                self.name, "PLACEMENT_METHOD_UNKNOWN",
                f"event {event.event_id} places dose {dose_id} as {method}; who owns the "
                f"dose, and when it is billed, follow from the method: name one of "
                f"{', '.join(sorted(PLACEMENT_METHODS))}",
            )
        if method == "JUST_IN_TIME":
            return self._just_in_time(event, case, dose_id)
        return ACCEPT

    def _just_in_time(self, event: InboundEvent, case: CaseState, dose_id: str) -> Verdict:
        """A just-in-time delivery is for an administration scheduled soon at this site."""
        at, until = event.occurred_at_us, event.occurred_at_us + self.just_in_time_window_us
        given = {a.administration_id for a in case.administrations.values()}
        if any(at <= s.scheduled_for_us <= until and s.site == event.payload["site_id"]
               and a not in given for a, s in case.scheduled.items()):
            return ACCEPT
        hours = self.just_in_time_window_us / 3_600_000_000
        return Verdict.refuse(
            self.name, "NO_ADMINISTRATION_SCHEDULED",
            f"event {event.event_id} places dose {dose_id} just in time, but therapy "
            f"{event.coi} has no administration scheduled at site {event.payload['site_id']} "
            f"within {hours:g} h of the placement; schedule the administration first "
            "(AdministrationScheduled), or place the dose as consignment or site stock",
        )

    def _reservation(self, event: InboundEvent, case: CaseState) -> Verdict:
        dose_id = event.payload["dose_id"]
        dose = case.doses.get(dose_id)
        if dose is None:
            return self._unknown_dose(event, dose_id)
        refused = self._unusable(event, case, dose_id, dose)
        if refused is not None:
            return refused
        if dose.status is not DoseStatus.PLACED:
            return self._not_placed(event, dose_id, dose)
        return ACCEPT

    def _dispense(self, event: InboundEvent, case: CaseState) -> Verdict:
        dose_id = event.payload["dose_id"]
        dose = case.doses.get(dose_id)
        if dose is None:
            return self._unknown_dose(event, dose_id)
        refused = self._unusable(event, case, dose_id, dose)
        if refused is not None:
            return refused
        if dose.status is DoseStatus.DISPENSED:
            return Verdict.refuse(
                self.name, "DOSE_USED",
                f"dose {dose_id} in event {event.event_id} was already dispensed; use "
                "another dose",
            )
        if dose.status not in (DoseStatus.PLACED, DoseStatus.RESERVED):
            return self._not_placed(event, dose_id, dose)
        wanted = event.payload.get("administration_id")
        if dose.status is DoseStatus.RESERVED and wanted is not None \
                and wanted != dose.reserved_for:
            return Verdict.refuse(
                self.name, "DOSE_RESERVED",
                f"event {event.event_id} dispenses dose {dose_id} for administration "
                f"{wanted}, but the dose is reserved for administration {dose.reserved_for}; "
                "dispense the dose reserved for this administration",
            )
        return ACCEPT

    def _administration(self, event: InboundEvent, case: CaseState) -> Verdict:
        dose_id = event.payload["dose_id"]
        dose = case.doses.get(dose_id)
        if dose is None:
            return self._unknown_dose(event, dose_id)
        refused = self._unusable(event, case, dose_id, dose)
        if refused is not None:
            return refused
        if dose.status is not DoseStatus.DISPENSED:
            return Verdict.refuse(
                self.name, "DOSE_NOT_DISPENSED",
                f"dose {dose_id} in event {event.event_id} is {dose.status.value}, not "
                "dispensed; the pharmacy must dispense it before administration",
            )
        return ACCEPT

    def _dose_end(self, event: InboundEvent, case: CaseState) -> Verdict:
        dose_id = event.payload["dose_id"]
        dose = case.doses.get(dose_id)
        if dose is None:
            return self._unknown_dose(event, dose_id)
        if dose.status is DoseStatus.QUARANTINED and event.event_type == "DoseDestroyed":
            return Verdict.refuse(
                self.name, "DISPOSITION_BY_QUALIFIED_PERSON",
                f"event {event.event_id} destroys dose {dose_id}, which is quarantined; only "
                "the qualified person's disposition (QuarantineDispositioned DESTROYED, with "
                "the reason) destroys a quarantined dose: ask them to decide",
            )
        if dose.status not in FINAL_DOSE:
            return ACCEPT
        return Verdict.refuse(
            self.name, "DOSE_USED",
            f"event {event.event_id} ({event.event_type}) names dose {dose_id}, which is "
            f"already {dose.status.value}; check the dose id",
        )

    _checks: dict[str, Callable[[Custody, InboundEvent, CaseState], Verdict]] = {
        "CustodyReleased": _release,
        "CustodyTransferred": _transfer,
        "ShipmentDispatched": _dispatch,
        "ShipmentReceived": _receipt,
        "SampleReceived": _sample_received,
        "SequencingCompleted": _sequenced,
        "TemperatureExcursion": _excursion,
        "TemperatureLogRecorded": _temperature_log,
        "QuarantineDispositioned": _quarantine_disposition,
        "InventoryPlaced": _placement,
        "DoseReserved": _reservation,
        "DoseDispensed": _dispense,
        "DoseAdministered": _administration,
        "DoseDestroyed": _dose_end,
        "DoseExpired": _dose_end,
    }


# -- R9 manufacturing and QC by specification --------------------------------------------

class QcSpecification:
    """R9: a batch is made and judged by the therapy type's specification
    (``pcvhub.schemas.specifications``), not on the plant's word: its manufacturing steps
    follow the recipe in order, QC is recorded only once every step of the recipe was; a QC
    result is judged against the specification panel: the test is one of the panel, its
    specification and unit are the panel's, PASS or FAIL agrees with the value, and a test
    that already failed is retested only under an out-of-specification investigation (both
    results stay in the batch's history)."""

    name = "R9"

    def check(self, event: InboundEvent, case: CaseState) -> Verdict:
        if event.event_type not in ("ManufacturingStepCompleted", "QcResultRecorded"):
            return ACCEPT
        p = event.payload
        batch = case.batches.get(p["batch_id"])
        if batch is None:
            return Verdict.refuse(
                self.name, "UNKNOWN_BATCH",
                f"event {event.event_id} ({event.event_type}) names batch {p['batch_id']}, "
                f"which was never started for therapy {event.coi}; check the lot number",
            )
        panel = panel_for(case.therapy_type)
        if panel is None and event.event_type == "QcResultRecorded":
            return Verdict.refuse(
                self.name, "NO_QC_PANEL",
                f"event {event.event_id} records QC for therapy {event.coi} of therapy type "
                f"{case.therapy_type}, for which no QC specification panel exists; a batch "
                "cannot be judged without one: add the panel (pcvhub.schemas."
                "specifications) after review",
            )
        recipe = recipe_for(case.therapy_type)
        if recipe is None:
            return Verdict.refuse(
                self.name, "NO_RECIPE",
                f"event {event.event_id} ({event.event_type}) is for therapy {event.coi} of "
                f"therapy type {case.therapy_type}, for which no manufacturing recipe exists; "
                "a batch cannot be made or judged without one: add the recipe (pcvhub."
                "schemas.specifications) after review",
            )
        if event.event_type == "ManufacturingStepCompleted":
            return self._step(event, batch, recipe)
        missing = recipe.missing(batch.steps)
        if missing:
            return Verdict.refuse(
                self.name, "RECIPE_INCOMPLETE",
                f"event {event.event_id} records QC of batch {p['batch_id']}, but recipe "
                f"step(s) {', '.join(missing)} of {recipe.therapy_type} were not recorded "
                f"(recorded: {', '.join(batch.steps) or 'none'}); QC follows manufacturing: "
                f"record {missing[0]} and the steps after it first",
            )
        assert panel is not None  # refused above
        limit = panel.limit(p["test"])
        if limit is None:
            return Verdict.refuse(
                self.name, "UNKNOWN_QC_TEST",
                f"event {event.event_id} records test {p['test']!r} for batch "
                f"{p['batch_id']}, which is not in the QC panel of {panel.therapy_type} "
                f"({', '.join(panel.tests)}); record a test of the panel under its name",
            )
        unit = p.get("unit") or None
        if p["specification"] != limit.specification or unit != limit.unit:
            return Verdict.refuse(
                self.name, "SPECIFICATION_MISMATCH",
                f"event {event.event_id} judges {p['test']} of batch {p['batch_id']} "
                f"against {p['specification']!r} ({unit or 'no unit'}), but the panel of "
                f"{panel.therapy_type} specifies {limit.specification!r} "
                f"({limit.unit or 'no unit'}); record it against the approved specification",
            )
        try:
            meets = limit.meets(p["value"], design_hash=batch.design_hash)
        except UnreadableValue as exc:
            return Verdict.refuse(
                self.name, "QC_VALUE_UNREADABLE",
                f"event {event.event_id} records {p['test']} of batch {p['batch_id']}: "
                f"{exc}; record the measured number",
            )
        if p["result"] not in ("PASS", "FAIL") or meets != (p["result"] == "PASS"):
            return Verdict.refuse(
                self.name, "QC_RESULT_CONTRADICTS_SPECIFICATION",
                f"event {event.event_id} records {p['test']} of batch {p['batch_id']} as "
                f"{p['result']}, but value {_short(p['value'])} "
                f"{'meets' if meets else 'does not meet'} the specification "
                f"{limit.specification!r}; record the result the value gives",
                alert=limit.kind is LimitKind.DESIGN_MATCH and p["result"] == "PASS",
            )
        if batch.failed_before(p["test"]) and not (p.get("investigation_ref") or "").strip():
            return Verdict.refuse(
                self.name, "RETEST_WITHOUT_INVESTIGATION",
                f"event {event.event_id} retests {p['test']} of batch {p['batch_id']}, "
                "which already failed; a retest after an out-of-specification result is "
                "done only under an investigation: name it (investigation_ref); the failed "
                "result stays on record",
            )
        return ACCEPT

    def _step(self, event: InboundEvent, batch: BatchRecord, recipe: Recipe) -> Verdict:
        """A manufacturing step is the recipe's next one for this batch."""
        step, batch_id = event.payload["step"], event.payload["batch_id"]
        if step not in recipe.steps:
            return Verdict.refuse(
                self.name, "UNKNOWN_RECIPE_STEP",
                f"event {event.event_id} records step {step!r} of batch {batch_id}, which is "
                f"not a step of the recipe of {recipe.therapy_type} "
                f"({', '.join(recipe.steps)}); record the step under its recipe name",
            )
        expected = recipe.next_step(batch.steps)
        if step == expected:
            return ACCEPT
        # every step before ``expected`` is recorded: a step not recorded is a later one
        why = "which was already recorded" if step in batch.steps \
            else f"but {expected} comes first"
        todo = (f"record {expected} next" if expected is not None else
                "a batch goes through its recipe once: start a new batch to make it again")
        return Verdict.refuse(
            self.name, "RECIPE_STEP_OUT_OF_ORDER",
            f"event {event.event_id} records step {step} of batch {batch_id}, {why} "
            f"(recorded so far: {', '.join(batch.steps) or 'none'}; the recipe of "
            f"{recipe.therapy_type}: {', '.join(recipe.steps)}); {todo}",
        )


# -- R7 consent --------------------------------------------------------------------------

class Consent:
    """R7: the consent scope an event needs (the ``consent`` column of the policy table)
    holds at its occurred-at; for the scopes of ``PATIENT_SIGNED_SCOPES`` only a grant the
    patient signed with their card, or a witnessed one, counts (``CaseState.grants``).

    Under time bounds that judge revocations at signed time (production), a withdrawal
    also applies to everything *signed* after it: an event back-dated to before the
    withdrawal is refused, naming the withdrawal, the signing and the claimed times."""

    name = "R7"

    def __init__(self, policy: Mapping[str, EventPolicy] = POLICY, *,
                 bounds: TimeBounds) -> None:
        self.policy, self.bounds = policy, bounds

    def check(self, event: InboundEvent, case: CaseState) -> Verdict:
        row = self.policy.get(event.event_type)
        scope = row.consent if row is not None else None
        if scope is None:
            return ACCEPT
        at = event.occurred_at_us
        if case.consent_covers(scope, at):
            return self._not_withdrawn_since(event, case, scope)
        ended = case.consent_ended(scope, at)
        if ended is not None and ended.withdrawn_at_us is not None \
                and at >= ended.withdrawn_at_us:
            return Verdict.refuse(
                self.name, "CONSENT_WITHDRAWN",
                f"event {event.event_id} ({event.event_type}) needs {scope} consent, which "
                f"the patient of therapy {event.coi} withdrew at {ended.withdrawn_at_us} µs "
                f"(the event occurred at {at} µs); stop this use of the patient's data",
            )
        if ended is not None:
            return Verdict.refuse(
                self.name, "CONSENT_EXPIRED",
                f"event {event.event_id} ({event.event_type}) needs {scope} consent, which "
                f"expired at {ended.expires_at_us} µs for therapy {event.coi} (the event "
                f"occurred at {at} µs); record a renewed consent first",
            )
        if any(w.covers(at) for w in case.consents.get(scope, ())):
            return Verdict.refuse(
                self.name, "CONSENT_NOT_SIGNED_BY_PATIENT",
                f"event {event.event_id} ({event.event_type}) needs {scope} consent; therapy "
                f"{event.coi} holds only a grant the hospital recorded, which does not count "
                f"for {scope}: the patient signs it with their card, or a clinician records "
                "it as witnessed (ConsentWitnessed)",
            )
        return Verdict.refuse(
            self.name, "CONSENT_MISSING",
            f"event {event.event_id} ({event.event_type}) needs {scope} consent, which therapy "
            f"{event.coi} did not hold at {at} µs; record the patient's consent first",
        )


    def _not_withdrawn_since(self, event: InboundEvent, case: CaseState, scope: str
                             ) -> Verdict:
        """Consent held when the event occurred: refuse it still if it was signed after a
        withdrawal of that consent (the signed clock only; an expiry since is no refusal:
        the fact happened while consent held and is only recorded later)."""
        signed, clock = self.bounds.judged_at(event.envelope)
        if clock != "signed" or case.consent_covers(scope, signed):
            return ACCEPT
        ended = case.consent_ended(scope, signed)
        if ended is None or ended.withdrawn_at_us is None or ended.withdrawn_at_us > signed:
            return ACCEPT
        return Verdict.refuse(
            self.name, "CONSENT_WITHDRAWN",
            f"event {event.event_id} ({event.event_type}) needs {scope} consent, which the "
            f"patient of therapy {event.coi} withdrew at {utc_iso(ended.withdrawn_at_us)}; "
            f"the event was signed at {utc_iso(signed)}, after the withdrawal (it claims to "
            f"have occurred at {utc_iso(event.occurred_at_us)}); a withdrawal applies to "
            f"everything signed after it (time bounds: {self.bounds.name}): stop this use "
            "of the patient's data",
        )


def default_rules(registry: KeyRegistry, *, bounds: TimeBounds,
                  just_in_time_window_us: int = JUST_IN_TIME_WINDOW_US) -> AllOf:
    """The gatekeeper's rule set, cheapest refusals first and signatures before trust.

    ``registry`` is held, not copied: registry events the gatekeeper accepts are folded
    into it and count for the very next event. ``bounds``: the deployment's time bounds
    (``pcvhub.streams.timebounds``; ``SIMULATION`` for builders on a simulated clock).
    ``just_in_time_window_us``: R6's window for just-in-time placements (the setting
    ``gatekeeper.just_in_time_window_hours``, which ``pcvhub.streams.worker.rules_for`` passes).
    """
    return AllOf([
        Idempotence(),
        Signatures(registry),
        SigningTime(registry, bounds),
        HashChain(),
        RoleAllowed(registry),
        Lifecycle(),
        ChainOfIdentity(registry),
        Custody(just_in_time_window_us),
        QcSpecification(),
        Consent(bounds=bounds),
    ])
