"""Custody rules R1..R9: given a therapy so far, when an event is judged, then a verdict.

Every event here is really signed, encoded and decoded; actors are registered through
the registrar on the registry chain (see ``therapy_builder``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.schemas.envelope import SignatureMeaning
from pcvhub.schemas.policy import POLICY
from pcvhub.streams.case import CaseState, Stage
from pcvhub.streams.event import InboundEvent, SourcePosition
from pcvhub.streams.gatekeeper import Gatekeeper, PartitionLedger
from pcvhub.streams.rules import (
    Consent,
    Custody,
    HashChain,
    Idempotence,
    Lifecycle,
    default_rules,
)
from pcvhub.streams.timebounds import SIMULATION
from pcvhub.streams.verdict import AllOf
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.registry import REGISTRY_COI, Actor, registration_payload
from pcvhub.trust.signing import EventSigner, HybridKeyPair

from .therapy_builder import (
    HAPPY_PATH,
    NIL_UUID,
    RECIPE_STEPS,
    Hub,
    Party,
    TherapyScenario,
    decode_inbound,
    refused,
)

# -- the rule set as a whole -------------------------------------------------------------

def test_default_rules_run_in_the_documented_order(hub: Hub) -> None:
    names = [rule.name for rule in default_rules(hub.registry, bounds=SIMULATION).rules]
    # R1 twice: signatures, then the signed times (pcvhub.streams.timebounds)
    assert names == ["R8", "R1", "R1", "R3", "R2", "R4", "R5", "R6", "R9", "R7"]


def test_an_empty_rule_set_refuses_everything(scenario: TherapyScenario) -> None:
    event = scenario.enrol()
    assert scenario.judge(event).accepted  # the same event passes the real rules
    verdict = AllOf([]).check(event, scenario.case)
    assert not verdict.accepted and (verdict.rule, verdict.code) == ("AllOf", "NO_RULES")


def test_a_full_therapy_with_two_doses_is_accepted_end_to_end(
        scenario: TherapyScenario) -> None:
    events = scenario.full_therapy()
    assert [e.event_type for e in events].count("DoseAdministered") == 2
    assert {e.producer for e in events if e.event_type == "DesignApproved"} == {
        scenario.id_of("approver1"), scenario.id_of("approver2")}
    assert scenario.case.event_ids == {e.event_id for e in events}


# -- R1 signatures -----------------------------------------------------------------------

def test_a_forged_signature_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("order")
    nurse = scenario.actors["nurse"]
    # someone with their own keys signs in the nurse's name and key id
    impostor = EventSigner(nurse.actor_id, nurse.key_id, HybridKeyPair.generate())
    forger = Party(nurse.actor_id, nurse.roles, nurse.site, type(nurse.issuer)(impostor))
    event = scenario.issue(forger, "SampleCollected", scenario.collect().payload)
    verdict = refused(scenario.judge(event), "R1", "SIGNATURE_INVALID", event)
    assert nurse.actor_id in verdict.reason and nurse.key_id in verdict.reason


def test_a_payload_altered_after_signing_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("consent_payer")
    honest = scenario.diagnose()
    other = scenario.order()
    tampered = dataclasses.replace(honest, envelope=dataclasses.replace(
        honest.envelope, payload=other.envelope.payload))
    refused(scenario.judge(tampered), "R1", "SIGNATURE_INVALID", tampered)


def test_an_unregistered_signer_is_refused(scenario: TherapyScenario) -> None:
    stranger = Party.new("walk-in-clinician", frozenset({"PHYSICIAN"}), scenario.site)
    event = scenario.issue(stranger, "PatientEnrolled", scenario.enrol().payload)
    verdict = refused(scenario.judge(event), "R1", "UNREGISTERED_KEY", event)
    assert "walk-in-clinician" in verdict.reason


def test_a_key_used_after_its_revocation_is_refused(
        hub: Hub, scenario: TherapyScenario) -> None:
    scenario.run_until("order")
    nurse = scenario.actors["nurse"]
    revoked_at = scenario.now_us + 2 * scenario.tick_us
    hub.revoke(nurse, revoked_at)
    # an event that occurred before the revocation still verifies ...
    early = scenario.issue("nurse", "SampleCollected", scenario.collect().payload,
                           occurred_at_us=revoked_at - 1)
    assert scenario.judge(early).accepted
    # ... one that occurred at or after it does not
    late = scenario.issue("nurse", "SampleCollected", scenario.collect().payload,
                          occurred_at_us=revoked_at)
    verdict = refused(scenario.judge(late), "R1", "KEY_REVOKED", late)
    assert nurse.key_id in verdict.reason


def test_the_rules_read_the_registry_live(hub: Hub, scenario: TherapyScenario) -> None:
    rules = default_rules(hub.registry, bounds=SIMULATION)  # built before the actor exists
    scenario.run_until("enrol")
    newcomer = Party.new("late-physician", frozenset({"PHYSICIAN"}), scenario.site)
    event = scenario.issue(newcomer, "DiagnosisRecorded", scenario.diagnose().payload)
    refused(rules.check(event, scenario.case), "R1", "UNREGISTERED_KEY", event)
    hub.admit(hub.registry_event("ActorRegistered", registration_payload(
        Actor(newcomer.actor_id, "late physician", newcomer.roles, scenario.site),
        newcomer.key_id, newcomer.issuer.signer.keys.public, hub.clock_us)))
    assert rules.check(event, scenario.case).accepted


# -- R2 role -----------------------------------------------------------------------------

def test_a_valid_signature_from_a_role_not_allowed_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until("record_qc")
    # the QC analyst signs correctly, but only a qualified person may release a batch
    event = scenario.release(signer="qc")
    verdict = refused(scenario.judge(event), "R2", "ROLE_NOT_ALLOWED", event)
    assert "QUALIFIED_PERSON" in verdict.reason and "QC_ANALYST" in verdict.reason


def test_administration_by_clinical_staff_of_another_site_is_refused(
        hub: Hub, scenario: TherapyScenario) -> None:
    scenario.run_until("verify_identity#1")
    scenario.actors["elsewhere"] = hub.register("nurse-osaka", {"NURSE"}, "OSAKA02")
    event = scenario.administer(1, by="elsewhere")
    verdict = refused(scenario.judge(event), "R2", "WRONG_SITE", event)
    assert "OSAKA02" in verdict.reason and scenario.site in verdict.reason


def test_an_approval_not_signed_as_an_approval_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("design")
    event = scenario.approval("approver1", meaning=SignatureMeaning.AUTHORED)
    refused(scenario.judge(event), "R2", "WRONG_SIGNATURE_MEANING", event)


def test_only_the_registrar_changes_the_registry(hub: Hub, scenario: TherapyScenario) -> None:
    physician = scenario.actors["physician"]
    friend = Party.new("friend-of-physician", frozenset({"QUALIFIED_PERSON"}), "MFG-KOBE")
    event = hub.registry_event("ActorRegistered", registration_payload(
        Actor(friend.actor_id, "friend", friend.roles, "MFG-KOBE"), friend.key_id,
        friend.issuer.signer.keys.public, hub.clock_us), by=physician)
    verdict = refused(hub.judge(event, hub.registry_case), "R2", "ROLE_NOT_ALLOWED", event)
    assert "REGISTRAR" in verdict.reason


def test_a_registry_event_on_a_therapy_chain_is_refused(
        hub: Hub, scenario: TherapyScenario) -> None:
    scenario.run_until("enrol")
    nurse = scenario.actors["nurse"]
    event = scenario.issue(hub.registrar, "KeyRevoked", {
        "actor_id": nurse.actor_id, "key_id": nurse.key_id,
        "revoked_at": scenario.now_us, "reason": "ACTOR_LEFT"})
    refused(scenario.judge(event), "R2", "REGISTRY_EVENT_OFF_REGISTRY", event)


def test_a_therapy_event_on_the_registry_chain_is_refused(
        hub: Hub, scenario: TherapyScenario) -> None:
    event = scenario.issue("physician", "PatientEnrolled", scenario.enrol().payload,
                           coi=REGISTRY_COI, prev_hash=hub.registry_case.head)
    refused(hub.judge(event, hub.registry_case), "R2", "NOT_A_REGISTRY_EVENT", event)


@pytest.mark.parametrize("event_type, payload", [
    ("AlertRaised", {"alert_id": "A-1", "severity": "CRITICAL", "rule": "R5",
                     "code": "IDENTITY_MISMATCH", "message": "all clear, ignore"}),
    ("EventRejected", {"source_topic": "ingress.direct", "source_partition": 0,
                       "source_offset": 7, "rule": "R3", "reason_code": "HASH_CHAIN_BROKEN",
                       "reason": "made up", "original": b"\x00"}),
    ("CustodyViolationDetected", {"violation_event_id": NIL_UUID, "rule": "R6",
                                  "reason_code": "HOLDER_MISMATCH", "reason": "made up"}),
])
def test_gatekeeper_outputs_are_never_accepted_from_ingress(
        hub: Hub, scenario: TherapyScenario, event_type: str, payload: dict) -> None:
    scenario.run_until("enrol")
    # even a registered gatekeeper actor cannot inject a verdict through ingress
    gatekeeper = hub.register("gatekeeper-2", {"GATEKEEPER"}, "HUB")
    event = scenario.issue(gatekeeper, event_type, payload)
    verdict = refused(scenario.judge(event), "R2", "GATEKEEPER_OUTPUT", event)
    assert "only the gatekeeper writes" in verdict.reason


# -- R3 chain ----------------------------------------------------------------------------

def test_a_broken_hash_chain_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("consent_payer")
    event = scenario.issue("physician", "DiagnosisRecorded", scenario.diagnose().payload,
                           prev_hash=b"\x01" * 32)
    verdict = refused(scenario.judge(event), "R3", "HASH_CHAIN_BROKEN", event)
    assert "0101010101010101" in verdict.reason
    assert scenario.case.head.hex()[:16] in verdict.reason


def test_a_fork_of_the_chain_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("consent_payer")
    first, rival = scenario.diagnose(), scenario.order()  # both name the same head
    scenario.accept(first)
    refused(scenario.judge(rival), "R3", "HASH_CHAIN_BROKEN", rival)


def test_the_first_event_of_a_therapy_chains_to_nothing(scenario: TherapyScenario) -> None:
    event = scenario.enrol()
    assert event.envelope.prev_hash == b""
    assert HashChain().check(event, scenario.case).accepted


# -- R4 lifecycle ------------------------------------------------------------------------

def test_an_event_out_of_lifecycle_order_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("collect")
    # manufacturing cannot start before sequencing, design and approval
    event = scenario.start_manufacturing()
    verdict = refused(scenario.judge(event), "R4", "OUT_OF_ORDER", event)
    assert "COLLECTED" in verdict.reason and "APPROVED" in verdict.reason


def test_the_first_event_must_be_an_enrolment(scenario: TherapyScenario) -> None:
    event = scenario.consent("TREATMENT", by="physician")  # the hospital's paper form
    verdict = refused(scenario.judge(event), "R4", "OUT_OF_ORDER", event)
    assert "PatientEnrolled" in verdict.reason


def test_one_approval_is_not_enough_to_manufacture(scenario: TherapyScenario) -> None:
    scenario.run_until("approve_first")
    event = scenario.start_manufacturing()
    refused(scenario.judge(event), "R4", "OUT_OF_ORDER", event)


def test_the_same_approver_twice_does_not_approve(scenario: TherapyScenario) -> None:
    scenario.run_until("approve_first")
    scenario.accept(scenario.approval("approver1"))
    assert not scenario.case.approved_design_hashes
    event = scenario.start_manufacturing()
    refused(scenario.judge(event), "R4", "OUT_OF_ORDER", event)


def test_an_ineligible_patient_cannot_be_ordered_therapy(scenario: TherapyScenario) -> None:
    scenario.run_until("issue_card")
    scenario.accept(scenario.confirm_eligibility(eligible=False))
    scenario.accept(scenario.consent_treatment())
    event = scenario.order()
    refused(scenario.judge(event), "R4", "NOT_ELIGIBLE", event)


def test_a_batch_with_a_failed_qc_result_cannot_be_released(
        scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[-1])
    scenario.accept(scenario.record_qc(result="FAIL"))
    event = scenario.release()
    refused(scenario.judge(event), "R4", "QC_NOT_PASSED", event)
    assert scenario.judge(scenario.release(disposition="REJECTED")).accepted


def test_the_next_dose_waits_for_the_current_one(scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    # dose 1 is dispensed but not given: dose 2 cannot be dispensed yet
    event = scenario.dispense(2)
    refused(scenario.judge(event), "R4", "OUT_OF_ORDER", event)


def test_doses_loop_back_until_none_is_left(scenario: TherapyScenario) -> None:
    scenario.run_until("outcome#1")
    assert scenario.case.stage is Stage.FOLLOW_UP
    scenario.run(("verify_identity#2", "dispense#2"))  # the loop goes round again
    assert scenario.case.stage is Stage.DISPENSED
    scenario.run(("administer#2", "outcome#2"))
    event = scenario.dispense(1)
    refused(scenario.judge(event), "R4", "NO_DOSE_LEFT", event)


def test_the_registry_chain_takes_registry_events_in_any_order(hub: Hub) -> None:
    someone = hub.register("someone", {"COURIER"}, "COLDCHAIN")
    revocation = hub.revoke(someone, hub.clock_us + 1)
    assert hub.registry_case.stage is Stage.NEW and revocation.event_id in (
        hub.registry_case.event_ids)
    again = hub.registry_event("ActorRegistered", registration_payload(
        Actor("someone-else", "someone else", frozenset({"COURIER"}), "COLDCHAIN"),
        "someone-else-k1", someone.issuer.signer.keys.public, hub.clock_us))
    assert Lifecycle().check(again, hub.registry_case).accepted


# -- R5 identity -------------------------------------------------------------------------

def test_a_design_on_another_patients_sequencing_is_refused(
        hub: Hub, scenario: TherapyScenario) -> None:
    other = TherapyScenario(hub, patient_hash="b2" * 32)
    other.sequencing_hash = "0f" * 32
    other.run_until("sequence")
    scenario.run_until("call_variants")
    event = scenario.design(sequencing_hash=other.sequencing_hash)
    verdict = refused(scenario.judge(event), "R5", "DESIGN_NOT_FROM_THIS_PATIENT", event)
    assert verdict.alert and scenario.design_id in verdict.reason


def test_an_approval_of_a_different_document_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("approve_first")
    event = scenario.approval("approver2", design_hash="d0" * 32)
    verdict = refused(scenario.judge(event), "R5", "DESIGN_HASH_MISMATCH", event)
    assert verdict.alert


def test_a_batch_from_a_design_altered_after_approval_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until("approve_second")
    event = scenario.start_manufacturing(design_hash="d0" * 32)
    verdict = refused(scenario.judge(event), "R5", "DESIGN_ALTERED_AFTER_APPROVAL", event)
    assert verdict.alert and scenario.batch_id in verdict.reason


def test_a_bedside_check_of_another_patient_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    event = scenario.verify_identity(1, patient_hash="bb" * 32)  # reported as MATCH
    verdict = refused(scenario.judge(event), "R5", "IDENTITY_MISMATCH", event)
    assert verdict.alert


def test_a_bedside_check_reporting_a_mismatch_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    event = scenario.verify_identity(1, result="MISMATCH")
    verdict = refused(scenario.judge(event), "R5", "IDENTITY_MISMATCH", event)
    assert verdict.alert


def test_an_administration_naming_a_failed_identity_check_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    inconclusive = scenario.accept(scenario.verify_identity(1, result="INCONCLUSIVE"))
    event = scenario.administer(1, identity_check_event_id=inconclusive.event_id)
    verdict = refused(scenario.judge(event), "R5", "IDENTITY_NOT_VERIFIED", event)
    assert verdict.alert and "INCONCLUSIVE" in verdict.reason


def test_an_administration_without_identity_verification_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    event = scenario.administer(1, identity_check_event_id=NIL_UUID)
    verdict = refused(scenario.judge(event), "R5", "IDENTITY_NOT_VERIFIED", event)
    assert verdict.alert


def test_another_doses_identity_check_does_not_clear_an_administration(
        scenario: TherapyScenario) -> None:
    scenario.run_until("outcome#1")
    scenario.run(("verify_identity#2", "dispense#2"))
    # the check that cleared dose 1 is reused for dose 2
    event = scenario.administer(2, identity_check_event_id=scenario.last_check_of(1))
    refused(scenario.judge(event), "R5", "IDENTITY_NOT_VERIFIED", event)


def test_a_dose_of_another_therapy_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("reserve#1")
    event = scenario.dispense(1, dose_id="DOSE-OF-SOMEONE-ELSE")
    verdict = refused(scenario.judge(event), "R5", "DOSE_NOT_FROM_THIS_PATIENT", event)
    assert verdict.alert


def test_a_dose_placed_at_another_site_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("receive_at_site")
    event = scenario.place(1, site="OSAKA02")
    verdict = refused(scenario.judge(event), "R5", "SITE_MISMATCH", event)
    assert verdict.alert


def test_a_claim_without_an_administration_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("outcome#1")
    event = scenario.claim(1, administration_event_id=NIL_UUID)
    refused(scenario.judge(event), "R5", "CLAIM_WITHOUT_ADMINISTRATION", event)


def test_an_administration_is_billed_once(scenario: TherapyScenario) -> None:
    scenario.run_until("claim#1")
    event = scenario.claim(1, claim_id="CLM-1-AGAIN")
    refused(scenario.judge(event), "R5", "ADMINISTRATION_ALREADY_BILLED", event)


# -- R6 custody --------------------------------------------------------------------------

def test_a_transfer_from_a_non_holder_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("collect")
    # the courier signs a hand-over of a sample the nurse still holds
    event = scenario.transfer("courier", scenario.sample_id, "courier", "lab")
    verdict = refused(scenario.judge(event), "R6", "HOLDER_MISMATCH", event)
    assert scenario.sample_id in verdict.reason and scenario.id_of("nurse") in verdict.reason


def test_a_sample_received_without_a_hand_over_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("collect")
    event = scenario.receive_sample()
    refused(scenario.judge(event), "R6", "HOLDER_MISMATCH", event)


def test_a_receipt_without_a_dispatch_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("ship")
    event = scenario.receive_at_site(shipment_id="SHP-NEVER-SENT")
    verdict = refused(scenario.judge(event), "R6", "RECEIPT_WITHOUT_DISPATCH", event)
    assert "never dispatched" in verdict.reason


def test_a_shipment_received_twice_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("receive_at_site")
    event = scenario.receive_at_site()
    verdict = refused(scenario.judge(event), "R6", "RECEIPT_WITHOUT_DISPATCH", event)
    assert "already received" in verdict.reason


def test_a_shipment_received_by_someone_else_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("ship")
    event = scenario.receive_at_site(by="courier")
    refused(scenario.judge(event), "R6", "WRONG_RECIPIENT", event)


def test_an_item_in_transit_cannot_be_dispatched_again(scenario: TherapyScenario) -> None:
    scenario.run_until("ship")
    event = scenario.ship(shipment_id="SHP-2")
    refused(scenario.judge(event), "R6", "ITEM_IN_TRANSIT", event)


def test_an_unreleased_batch_cannot_be_shipped(scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[-1])
    event = scenario.issue("manufacturer", "ShipmentDispatched", {
        **scenario.ship().payload, "item_ids": [scenario.batch_id]})
    refused(scenario.judge(event), "R6", "NOT_RELEASED", event)


def test_an_excursion_quarantines_the_dose_and_it_cannot_then_be_dispensed(
        scenario: TherapyScenario) -> None:
    scenario.run_until("reserve#1")
    scenario.accept(scenario.excursion([scenario.dose(1)]))
    event = scenario.dispense(1)
    verdict = refused(scenario.judge(event), "R6", "DOSE_QUARANTINED", event)
    assert verdict.alert and scenario.dose(1) in verdict.reason


def test_an_expired_dose_cannot_be_dispensed(scenario: TherapyScenario) -> None:
    scenario.run_until("reserve#1")
    expiry = scenario.case.doses[scenario.dose(1)].expiry_us
    assert expiry is not None
    scenario.now_us = expiry - scenario.tick_us  # event time reaches the expiry
    event = scenario.dispense(1)
    refused(scenario.judge(event), "R6", "DOSE_EXPIRED", event)


def test_a_dose_not_yet_placed_cannot_be_dispensed(scenario: TherapyScenario) -> None:
    scenario.run_until("place#1")
    event = scenario.dispense(2)
    refused(scenario.judge(event), "R6", "DOSE_NOT_PLACED", event)


def test_only_a_dispensed_dose_is_administered(scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    scenario.accept(scenario.verify_identity(2))  # the right patient, but dose 2 is in stock
    event = scenario.administer(2)
    refused(scenario.judge(event), "R6", "DOSE_NOT_DISPENSED", event)


def test_custody_alone_refuses_an_unknown_dose_at_every_step(
        scenario: TherapyScenario) -> None:
    # R6 judges on its own: with R5 (which would refuse first) out of the composition,
    # a dose no batch of this therapy released must still go nowhere
    scenario.run_until("receive_at_site")
    scenario.dose_ids.append("DOSE-FOREIGN")
    foreign = len(scenario.dose_ids)
    custody_only = AllOf([Custody()])
    for step in ("place", "reserve", "dispense", "administer", "destroy", "expire"):
        event = scenario.step(f"{step}#{foreign}")
        verdict = refused(custody_only.check(event, scenario.case), "R6", "UNKNOWN_DOSE",
                          event)
        assert "DOSE-FOREIGN" in verdict.reason


def test_custody_alone_refuses_a_sample_it_never_saw(scenario: TherapyScenario) -> None:
    scenario.run_until("hand_over_sample")
    scenario.sample_id = "SMP-OF-SOMEONE-ELSE"
    event = scenario.receive_sample()
    verdict = refused(Custody().check(event, scenario.case), "R6", "UNKNOWN_ITEM", event)
    assert "SMP-OF-SOMEONE-ELSE" in verdict.reason


# -- R7 consent --------------------------------------------------------------------------

def test_sequencing_without_genome_storage_consent_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until("receive_sample", skipping=("consent_genome",))
    event = scenario.sequence()
    refused(scenario.judge(event), "R7", "CONSENT_MISSING", event)


def test_consent_withdrawn_then_a_research_event_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until("issue_card")
    scenario.accept(scenario.consent("RESEARCH"))
    scenario.accept(scenario.research_use("RQ-1"))
    scenario.accept(scenario.withdraw("RESEARCH"))
    event = scenario.research_use("RQ-2")
    verdict = refused(scenario.judge(event), "R7", "CONSENT_WITHDRAWN", event)
    assert "RESEARCH" in verdict.reason


def test_consent_is_judged_at_the_events_occurred_at(scenario: TherapyScenario) -> None:
    scenario.run_until("issue_card")
    scenario.accept(scenario.consent("RESEARCH"))
    withdrawal = scenario.accept(scenario.withdraw("RESEARCH"))
    # a request made before the withdrawal, arriving after it, is still covered
    late_arrival = scenario.issue("researcher", "ResearchDataRequested",
                                  scenario.research_use("RQ-3").payload,
                                  occurred_at_us=withdrawal.occurred_at_us - 1)
    assert Consent(bounds=SIMULATION).check(late_arrival, scenario.case).accepted


def test_an_expired_consent_no_longer_covers(scenario: TherapyScenario) -> None:
    scenario.run_until("issue_card")
    scenario.accept(scenario.consent("RESEARCH",
                                     expires_at_us=scenario.now_us + 3 * scenario.tick_us))
    scenario.accept(scenario.research_use("RQ-1"))
    event = scenario.research_use("RQ-2")
    refused(scenario.judge(event), "R7", "CONSENT_EXPIRED", event)


def test_withdrawing_treatment_consent_stops_administration(
        scenario: TherapyScenario) -> None:
    scenario.run_until("verify_identity#1")
    scenario.accept(scenario.withdraw("TREATMENT"))
    event = scenario.administer(1)
    refused(scenario.judge(event), "R7", "CONSENT_WITHDRAWN", event)


def gatekeep(scenario: TherapyScenario, event: InboundEvent) -> dict[str, Any] | None:
    """Send ``event`` through a gatekeeper that has the scenario's therapy so far: None if
    it was accepted onto the canonical log, else the refusal it wrote."""
    rules = default_rules(scenario.hub.registry, bounds=SIMULATION)
    gatekeeper = Gatekeeper(rules, EventIssuer(EventSigner(
        "hub-gatekeeper", "gk-1", HybridKeyPair.generate())), scenario.hub.registry)
    ledger = PartitionLedger(0)
    for accepted in scenario.log:
        gatekeeper.replay_accepted(accepted, ledger)
    *_, primary = gatekeeper.judge(event.raw, scenario.coi.encode(),
                                   SourcePosition("ingress.direct", 0, len(scenario.log)),
                                   ledger)
    if primary.topic == "events":
        return None
    env = decode_envelope(primary.value)
    return decode_payload(env.schema_fingerprint, env.payload)[1]


def test_the_genome_is_stored_while_genome_storage_consent_holds(
        scenario: TherapyScenario) -> None:
    scenario.run_until("sequence")
    assert gatekeep(scenario, scenario.store_genome()) is None


def test_the_genome_is_not_stored_once_genome_storage_consent_is_withdrawn(
        scenario: TherapyScenario) -> None:
    scenario.run_until("sequence")
    scenario.accept(scenario.withdraw("GENOME_STORAGE"))
    event = scenario.store_genome()
    refusal = gatekeep(scenario, event)
    assert refusal is not None
    assert (refusal["rule"], refusal["reason_code"]) == ("R7", "CONSENT_WITHDRAWN")
    assert "GENOME_STORAGE" in refusal["reason"] and event.event_id in refusal["reason"]


def test_the_genome_is_not_stored_once_genome_storage_consent_expired(
        scenario: TherapyScenario) -> None:
    scenario.run_until("consent_treatment")
    expiry = scenario.now_us + 100 * scenario.tick_us  # after sequencing, before storage
    scenario.accept(scenario.consent("GENOME_STORAGE", expires_at_us=expiry))
    scenario.run_until("sequence", skipping=("consent_genome",))
    scenario.clock_to(expiry + scenario.tick_us)
    refusal = gatekeep(scenario, scenario.store_genome())
    assert refusal is not None
    assert (refusal["rule"], refusal["reason_code"]) == ("R7", "CONSENT_EXPIRED")


# -- R8 idempotence ----------------------------------------------------------------------

def test_the_same_event_sent_twice_is_applied_once(scenario: TherapyScenario) -> None:
    scenario.run_until("consent_payer")
    event = scenario.accept(scenario.order())
    head, seen = scenario.case.head, set(scenario.case.event_ids)
    again = decode_inbound(event.raw)
    refused(scenario.judge(again), "R8", "DUPLICATE_EVENT", again)
    assert (scenario.case.head, scenario.case.event_ids) == (head, seen)
    # it is a duplicate only of this therapy's accepted events
    assert Idempotence().check(again, CaseState.new(scenario.coi)).accepted


def test_a_replayed_log_is_refused_event_by_event(scenario: TherapyScenario) -> None:
    events = scenario.run_until("collect")
    for event in events:
        refused(scenario.judge(decode_inbound(event.raw)), "R8", "DUPLICATE_EVENT", event)


# -- the happy path is the only path the builder takes -----------------------------------

def test_the_happy_path_lists_every_lifecycle_event_type_that_a_therapy_needs() -> None:
    scenario = TherapyScenario(Hub())
    issued = {scenario.step(label).event_type for label in HAPPY_PATH}
    off_path = {"ConsentWithdrawn", "ConsentWitnessed",  # only for a patient who cannot sign
                "TemperatureExcursion", "TemperatureLogRecorded",
                "QuarantineDispositioned", "DoseDestroyed",
                "DoseExpired",
                "AdverseEventReported", "ResearchDataRequested",
                "AlertAcknowledged", "AlertResolved",  # only where an alert was raised
                "GenomeStored",  # optional: a lab that keeps its own genome store never sends it
                "GenomeRestored"}  # only when a stored genome is restored under a token
    therapy_events = {t for t, row in POLICY.items()
                      if row.transition is not None and not row.registry and not row.study}
    assert issued | off_path == therapy_events

