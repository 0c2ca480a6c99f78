"""The policy table: one row per event type, consistent with the catalog, the roles, the
stages and the preconditions; and the rules refuse exactly what the table forbids.

The table-driven rule tests judge real signed events (payloads drawn from each event
type's schema) with one rule at a time, so each rule is seen to read its own column.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pcvhub.ids import study_coi
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.envelope import SignatureMeaning
from pcvhub.schemas.policy import (
    PATIENT_SIGNED_SCOPES,
    POLICY,
    ConsentScope,
    DuplicatePolicyRow,
    EventPolicy,
    next_step,
    policy_table,
)
from pcvhub.schemas.stages import Stage
from pcvhub.streams.case import PRECONDITIONS, CaseState
from pcvhub.streams.event import InboundEvent
from pcvhub.streams.rules import Consent, Lifecycle, RoleAllowed
from pcvhub.streams.timebounds import PRODUCTION
from pcvhub.trust.consent import ConsentSigner, ConsentWindow, PatientCredential
from pcvhub.trust.registry import REGISTRY_COI

from .avro_samples import sample
from .therapy_builder import SITE, T0_US, Hub, Party, decode_inbound

CATALOG = load_catalog()
THERAPY = "KYOTO01-2026-P0LICY"
ELSEWHERE = "OSAKA09"


def symbols(event_type: str, field_name: str) -> set[str]:
    raw = CATALOG.schema(event_type).raw
    field = next(f for f in raw["fields"] if f["name"] == field_name)
    kind = field["type"]
    kind = kind["items"] if kind["type"] == "array" else kind
    return set(kind["symbols"])


ROWS = sorted(POLICY.values(), key=lambda row: row.event_type)
THERAPY_ROWS = [r for r in ROWS if r.transition is not None and not r.registry
                and not r.study]
STUDY_ROWS = [r for r in ROWS if r.study]
STUDY = study_coi("melanoma-response-2026")
CANONICAL_ROWS = [r for r in ROWS if not r.gatekeeper_output]


def ids(rows: list[EventPolicy]) -> list[str]:
    return [row.event_type for row in rows]


# -- the table itself ----------------------------------------------------------------------

def test_every_catalog_event_type_has_exactly_one_row() -> None:
    types = sorted(CATALOG.short_name(t) for t in CATALOG.event_types())
    assert len(types) == 56
    assert sorted(POLICY) == types
    assert all(key == row.event_type for key, row in POLICY.items())


def test_a_second_row_for_an_event_type_is_refused() -> None:
    row = POLICY["DoseDispensed"]
    with pytest.raises(DuplicatePolicyRow, match="two rows for DoseDispensed"):
        policy_table([row, POLICY["DoseAdministered"], row])


def test_every_role_named_is_a_role_an_actor_can_hold() -> None:
    known = symbols("ActorRegistered", "roles")
    for row in ROWS:
        assert row.roles, f"{row.event_type}: nobody may sign it"
        assert row.roles <= known, (row.event_type, row.roles - known)


def test_every_consent_scope_is_one_a_patient_can_grant() -> None:
    assert set(ConsentScope) == symbols("ConsentGranted", "scope") - {"UNKNOWN"}
    assert {row.consent for row in ROWS if row.consent is not None} == set(ConsentScope)


def test_every_transition_names_real_stages_and_every_stage_can_be_entered() -> None:
    entered: set[Stage] = set()
    for row in THERAPY_ROWS:
        move = row.transition
        assert move is not None and move.allowed_from, row.event_type
        assert move.allowed_from <= set(Stage), row.event_type
        if move.otherwise is not None:
            assert move.advance_if is not None, f"{row.event_type}: otherwise is unreachable"
        entered |= {s for s in (move.to, move.otherwise) if s is not None}
    assert entered == set(Stage) - {Stage.NEW}


def test_every_precondition_named_is_one_the_gatekeeper_checks() -> None:
    named = {row.transition.requires for row in ROWS
             if row.transition is not None and row.transition.requires is not None}
    assert named == set(PRECONDITIONS)


def test_each_stage_waits_for_exactly_one_event_type_that_is_in_order_there() -> None:
    for stage in Stage:
        waiting = [row for row in ROWS if stage in dict(row.next_step_at)]
        assert len(waiting) == 1, (stage, ids(waiting))
        [row] = waiting
        assert row.transition is not None and stage in row.transition.allowed_from
        assert row.transition.to is not None, f"{row.event_type} does not move the therapy"
        assert next_step(stage).endswith(f"({row.event_type})")


def test_gatekeeper_outputs_have_no_place_in_a_lifecycle_and_only_it_signs_alerts() -> None:
    outputs = [row for row in ROWS if row.gatekeeper_output]
    assert ids(outputs) == ["AlertRaised", "CustodyViolationDetected", "EventRejected"]
    assert all(row.transition is None and not row.registry for row in outputs)
    assert {r for row in outputs for r in row.roles} == {"GATEKEEPER", "CONNECTOR"}
    assert POLICY["EventRejected"].roles == {"GATEKEEPER", "CONNECTOR"}


def test_study_chains_hold_the_study_events_and_an_ethics_approver_approves() -> None:
    assert ids(STUDY_ROWS) == ["StudyApproved", "StudyRequested", "StudyResultPublished",
                               "StudyRunCompleted"]
    assert POLICY["StudyApproved"].roles == {"ETHICS_APPROVER"}
    assert POLICY["StudyApproved"].meaning is SignatureMeaning.APPROVED
    assert all(row.roles == {"RESEARCHER"} for row in STUDY_ROWS
               if row.event_type != "StudyApproved")
    assert "ETHICS_APPROVER" in symbols("ActorRegistered", "roles")


def test_r4_keeps_study_events_on_study_chains_and_everything_else_off_them(
        signers: Signers) -> None:
    rule = Lifecycle()
    for row in STUDY_ROWS:
        on_study = signers.event(row, signers.allowed[row.event_type], coi=STUDY)
        assert rule.check(on_study, CaseState.new(STUDY)).accepted, row.event_type
        off = signers.event(row, signers.allowed[row.event_type])
        verdict = rule.check(off, case_for(off))
        assert (verdict.rule, verdict.code) == ("R4", "NOT_IN_LIFECYCLE"), row.event_type
    for row in (r for r in ROWS if not r.study):
        event = signers.event(row, signers.allowed.get(row.event_type, signers.outsider),
                              coi=STUDY)
        verdict = rule.check(event, CaseState.new(STUDY))
        assert (verdict.rule, verdict.code) == ("R4", "NOT_IN_LIFECYCLE"), row.event_type
        assert STUDY in verdict.reason


def test_only_the_registrar_signs_the_registry_chain() -> None:
    registry = [row for row in ROWS if row.registry]
    assert ids(registry) == ["ActorRegistered", "KeyRevoked", "KeyRotated", "ModelRegistered",
                             "ModelRetired"]
    assert all(row.roles == {"REGISTRAR"} for row in registry)


# -- each rule refuses what its column forbids ---------------------------------------------

class Signers:
    """Registered actors per row: one holding every role the row allows (at the site), one
    holding them at another site, and an outsider holding none."""

    def __init__(self) -> None:
        self.hub = Hub()
        self.outsider = self.hub.register("outsider", {"OTHER"}, SITE)
        self.allowed: dict[str, Party] = {}
        self.far: dict[str, Party] = {}
        for row in CANONICAL_ROWS:
            self.allowed[row.event_type] = self.hub.register(
                f"signer-{row.event_type}", row.roles, SITE)
            self.far[row.event_type] = self.hub.register(
                f"far-{row.event_type}", row.roles, ELSEWHERE)

    def event(self, row: EventPolicy, by: Party, *, meaning: SignatureMeaning | None = None,
              coi: str | None = None, scope: str | None = None) -> InboundEvent:
        payload: dict[str, Any] = sample(CATALOG.schema(row.event_type).raw,
                                         random.Random(row.event_type))
        if row.patient_scopes:
            # the generic tests judge a scope anyone allowed may sign; the patient's own
            # scopes have their test below
            payload["scope"] = scope or "TREATMENT"
        chain = coi or (REGISTRY_COI if row.registry else THERAPY)
        issued = by.issuer.issue(row.event_type, chain, payload, occurred_at_us=T0_US,
                                 prev_hash=b"", meaning=meaning or row.meaning)
        return decode_inbound(issued.wire)


@pytest.fixture(scope="module")
def signers() -> Signers:
    return Signers()


def case_for(event: InboundEvent) -> CaseState:
    case = CaseState.new(event.coi)
    case.site = SITE
    return case


@pytest.mark.parametrize("row", CANONICAL_ROWS, ids=ids(CANONICAL_ROWS))
def test_r2_refuses_every_role_meaning_and_site_the_row_does_not_allow(
        row: EventPolicy, signers: Signers) -> None:
    rule = RoleAllowed(signers.hub.registry)
    outsider = signers.event(row, signers.outsider)
    verdict = rule.check(outsider, case_for(outsider))
    assert (verdict.rule, verdict.code) == ("R2", "ROLE_NOT_ALLOWED"), verdict
    wrong = next(m for m in SignatureMeaning if m is not row.meaning)
    mis_signed = signers.event(row, signers.allowed[row.event_type], meaning=wrong)
    verdict = rule.check(mis_signed, case_for(mis_signed))
    assert (verdict.rule, verdict.code) == ("R2", "WRONG_SIGNATURE_MEANING"), verdict
    far = signers.event(row, signers.far[row.event_type])
    verdict = rule.check(far, case_for(far))
    if row.site_bound is not None and row.site_bound(far.payload):
        assert (verdict.rule, verdict.code) == ("R2", "WRONG_SITE"), verdict
    else:
        assert verdict.accepted, verdict
    right = signers.event(row, signers.allowed[row.event_type])
    assert rule.check(right, case_for(right)).accepted


def test_r2_refuses_gatekeeper_outputs_whoever_signs_them(signers: Signers) -> None:
    gatekeeper = signers.hub.register("a-gatekeeper", {"GATEKEEPER", "CONNECTOR"}, "HUB")
    rule = RoleAllowed(signers.hub.registry)
    for row in (r for r in ROWS if r.gatekeeper_output):
        event = signers.event(row, gatekeeper)
        verdict = rule.check(event, case_for(event))
        assert (verdict.rule, verdict.code) == ("R2", "GATEKEEPER_OUTPUT"), verdict


@pytest.mark.parametrize("row", THERAPY_ROWS, ids=ids(THERAPY_ROWS))
def test_r4_refuses_the_event_in_every_stage_its_transition_does_not_allow(
        row: EventPolicy, signers: Signers) -> None:
    assert row.transition is not None
    rule = Lifecycle()
    event = signers.event(row, signers.allowed[row.event_type])
    for stage in Stage:
        case = case_for(event)
        case.lifecycle.stage = stage
        verdict = rule.check(event, case)
        if stage not in row.transition.allowed_from:
            assert (verdict.rule, verdict.code) == ("R4", "OUT_OF_ORDER"), (stage, verdict)
        elif row.transition.requires is None:
            assert verdict.accepted, (stage, verdict)
    on_registry = signers.event(row, signers.allowed[row.event_type], coi=REGISTRY_COI)
    verdict = rule.check(on_registry, CaseState.new(REGISTRY_COI))
    assert (verdict.rule, verdict.code) == ("R4", "NOT_IN_LIFECYCLE"), verdict


def test_r4_keeps_registry_events_and_gatekeeper_outputs_off_therapy_chains(
        signers: Signers) -> None:
    rule = Lifecycle()
    for row in (r for r in ROWS if r.registry or r.gatekeeper_output):
        event = signers.event(row, signers.outsider, coi=THERAPY)
        verdict = rule.check(event, case_for(event))
        assert (verdict.rule, verdict.code) == ("R4", "NOT_IN_LIFECYCLE"), row.event_type


@pytest.mark.parametrize("row", THERAPY_ROWS, ids=ids(THERAPY_ROWS))
def test_r7_refuses_the_event_without_the_consent_its_row_names(
        row: EventPolicy, signers: Signers) -> None:
    rule = Consent(bounds=PRODUCTION)
    event = signers.event(row, signers.allowed[row.event_type])
    verdict = rule.check(event, case_for(event))
    if row.consent is None:
        assert verdict.accepted, verdict
        return
    assert (verdict.rule, verdict.code) == ("R7", "CONSENT_MISSING"), verdict
    assert row.consent.value in verdict.reason
    others = case_for(event)
    for scope in ConsentScope:
        if scope is not row.consent:
            others.consents[scope] = [ConsentWindow(granted_at_us=0)]
    assert not rule.check(event, others).accepted  # only its own scope covers it
    consented = case_for(event)
    consented.consents[row.consent] = [ConsentWindow(granted_at_us=0,
                                                     signed_by=ConsentSigner.PATIENT)]
    assert rule.check(event, consented).accepted
    witnessed = case_for(event)
    witnessed.consents[row.consent] = [ConsentWindow(granted_at_us=0,
                                                     signed_by=ConsentSigner.WITNESSED)]
    assert rule.check(event, witnessed).accepted
    recorded = case_for(event)  # the hospital's record of a paper form
    recorded.consents[row.consent] = [ConsentWindow(granted_at_us=0)]
    verdict = rule.check(event, recorded)
    if row.consent in PATIENT_SIGNED_SCOPES:
        assert (verdict.rule, verdict.code) == ("R7", "CONSENT_NOT_SIGNED_BY_PATIENT"), verdict
    else:
        assert verdict.accepted, verdict


PATIENT_ROWS = [r for r in ROWS if r.patient_scopes]


@pytest.mark.parametrize("row", PATIENT_ROWS, ids=ids(PATIENT_ROWS))
def test_r2_lets_only_the_therapys_own_patient_sign_the_patient_scopes(
        row: EventPolicy, signers: Signers) -> None:
    rule = RoleAllowed(signers.hub.registry)
    patient = signers.hub.register(f"patient-{row.event_type}", {"PATIENT"}, SITE)
    staff = signers.allowed[row.event_type]
    bound = case_for(signers.event(row, patient))
    bound.patient_credentials[patient.key_id] = PatientCredential(
        patient.actor_id, patient.key_id, "CARD-1", None, 0, staff.actor_id, "")
    for scope in ConsentScope:
        own = signers.event(row, patient, meaning=row.meaning_of(True), scope=scope)
        assert rule.check(own, bound).accepted, scope
        # the patient's key of another therapy: nobody bound it to this one
        verdict = rule.check(own, case_for(own))
        assert (verdict.rule, verdict.code) == ("R2", "PATIENT_NOT_OF_THIS_THERAPY"), verdict
        assert patient.key_id in verdict.reason
        # a clinician signing consent as if it were the patient's
        for meaning in {row.meaning, row.meaning_of(True)}:
            as_if = signers.event(row, staff, meaning=meaning, scope=scope)
            verdict = rule.check(as_if, bound)
            if scope in row.patient_scopes:
                assert (verdict.rule, verdict.code) == ("R2", "PATIENT_SIGNATURE_REQUIRED"), \
                    verdict
                assert scope in verdict.reason and "ConsentWitnessed" in verdict.reason
            elif meaning is row.meaning:
                assert verdict.accepted, verdict
            else:
                assert (verdict.rule, verdict.code) == ("R2", "WRONG_SIGNATURE_MEANING")
