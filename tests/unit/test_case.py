"""CaseState: the fold of one therapy's accepted events."""

from __future__ import annotations

from decimal import Decimal

from pcvhub.streams.case import CaseState, DoseStatus, Stage
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.registry import REGISTRY_COI

from .therapy_builder import Hub, TherapyScenario


def test_a_new_case_is_empty() -> None:
    case = CaseState.new("PCV-X")
    assert (case.coi, case.head, case.event_ids, case.stage) == ("PCV-X", b"", set(), Stage.NEW)


def test_apply_moves_the_head_and_records_the_event(scenario: TherapyScenario) -> None:
    event = scenario.commit(scenario.enrol())
    case = scenario.case
    assert case.head == chain_digest(event.envelope)
    assert case.event_ids == {event.event_id}
    assert case.stage is Stage.ENROLLED
    assert case.stage_entered_us == {Stage.ENROLLED: event.occurred_at_us}
    assert (case.patient_hash, case.site, case.therapy_type) == (
        scenario.patient_hash, scenario.site, scenario.therapy_type)


def test_the_happy_path_walks_every_stage_in_order(scenario: TherapyScenario) -> None:
    stages = []
    for label in scenario.path:
        scenario.accept(scenario.step(label))
        if not stages or stages[-1] is not scenario.case.stage:
            stages.append(scenario.case.stage)
    first_pass = list(dict.fromkeys(stages))
    assert first_pass == [s for s in Stage if s is not Stage.NEW]
    # the second dose loops back: follow-up -> dispensed -> administered -> follow-up
    assert stages[-4:] == [Stage.FOLLOW_UP, Stage.DISPENSED, Stage.ADMINISTERED,
                           Stage.FOLLOW_UP]
    entered = scenario.case.stage_entered_us
    assert [entered[s] for s in first_pass] == sorted(entered[s] for s in first_pass)


def test_folding_the_whole_therapy_gives_the_final_state(scenario: TherapyScenario) -> None:
    events = scenario.full_therapy()
    case = scenario.case
    assert case.stage is Stage.FOLLOW_UP
    assert {d: case.doses[d].status for d in scenario.dose_ids} == {
        "DOSE-1": DoseStatus.ADMINISTERED, "DOSE-2": DoseStatus.ADMINISTERED}
    assert case.doses_remaining() == 0
    assert all(case.items[d].consumed for d in scenario.dose_ids)
    assert case.doses_administered == [1, 2]
    assert {a.administration_id for a in case.administrations.values()} == {"ADM-1", "ADM-2"}
    assert case.used_identity_checks() == set(case.identity_checks)
    assert {c.administration_event_id for c in case.claims.values()} == set(
        case.administrations)
    assert {(c.status, c.paid) for c in case.claims.values()} == {
        ("PAID", Decimal("1250000.00"))}
    assert case.milestones == {("OBA-2026-1", "stable disease at week 12")}
    assert case.approved_design_hashes == {scenario.design_hash}
    assert case.head == chain_digest(events[-1].envelope)


def test_folding_the_log_again_gives_the_same_case(scenario: TherapyScenario) -> None:
    scenario.full_therapy()
    rebuilt = CaseState.new(scenario.coi)
    for event in scenario.log:
        rebuilt.apply(event, chain_digest(event.envelope))
    assert rebuilt == scenario.case


def test_two_different_approvers_approve_a_design(scenario: TherapyScenario) -> None:
    scenario.run_until("approve_first")
    assert scenario.case.stage is Stage.DESIGNED
    design = scenario.case.designs[scenario.design_id]
    assert design.sequencing_hash == scenario.sequencing_hash
    assert len(design.approvers) == 1 and not design.approved
    scenario.accept(scenario.approve_second())
    assert design.approved and design.approvers == {
        scenario.id_of("approver1"), scenario.id_of("approver2")}
    assert scenario.case.approved_design_hashes == {scenario.design_hash}
    assert scenario.case.stage is Stage.APPROVED


def test_release_creates_doses_held_by_the_manufacturer(scenario: TherapyScenario) -> None:
    scenario.run_until("release")
    case = scenario.case
    assert case.batches[scenario.batch_id].disposition == "RELEASED"
    assert case.batches[scenario.batch_id].latest_results() == dict.fromkeys(
        ("endotoxin", "identity", "mRNA integrity", "sterility"), "PASS")
    release_at = scenario.log[-1].occurred_at_us
    for dose_id in scenario.dose_ids:
        assert case.doses[dose_id].status is DoseStatus.AVAILABLE
        assert case.doses[dose_id].expiry_us == release_at + scenario.shelf_life_us
        assert case.items[dose_id].holder == scenario.id_of("manufacturer")


def test_custody_follows_hand_over_dispatch_and_receipt(scenario: TherapyScenario) -> None:
    scenario.run_until("hand_over_sample")
    sample = scenario.case.items[scenario.sample_id]
    assert (sample.holder, sample.released_to) == (scenario.id_of("nurse"),
                                                   scenario.id_of("lab"))
    scenario.run_until("accept_sample")
    assert (sample.holder, sample.released_to) == (scenario.id_of("lab"), None)
    scenario.run_until("ship")
    item = scenario.case.items[scenario.dose_ids[0]]
    assert item.open_dispatch == scenario.shipment_id
    scenario.accept(scenario.receive_at_site())
    assert item.open_dispatch is None
    assert item.holder == scenario.id_of("pharmacist")
    assert item.location == "pharmacy freezer 2"
    assert scenario.case.stage is Stage.RECEIVED_AT_SITE


def test_placement_and_reservation_are_recorded(scenario: TherapyScenario) -> None:
    scenario.run_until("reserve#1")
    first, second = (scenario.case.doses[d] for d in scenario.dose_ids)
    assert (first.status, first.reserved_for, first.site) == (
        DoseStatus.RESERVED, "ADM-1", scenario.site)
    assert (second.status, second.placement_method) == (DoseStatus.PLACED, "CONSIGNMENT")


def test_an_excursion_quarantines_doses(scenario: TherapyScenario) -> None:
    scenario.run_until("receive_at_site")
    scenario.accept(scenario.excursion())
    assert {scenario.case.doses[d].status for d in scenario.dose_ids} == {
        DoseStatus.QUARANTINED}
    assert scenario.case.doses_remaining() == 0
    scenario.accept(scenario.disposition_quarantine(scenario.dose(1), "DESTROYED",
                                                    "thawed: outside stability data"))
    assert scenario.case.doses[scenario.dose(1)].status is DoseStatus.DESTROYED
    assert scenario.case.items[scenario.dose(1)].consumed


def test_an_excursion_of_a_batch_quarantines_its_doses(scenario: TherapyScenario) -> None:
    scenario.run_until("release")
    scenario.accept(scenario.issue("manufacturer", "TemperatureExcursion", {
        **scenario.excursion().payload, "item_ids": [scenario.batch_id]}))
    assert {scenario.case.doses[d].status for d in scenario.dose_ids} == {
        DoseStatus.QUARANTINED}


def test_an_expired_dose_is_recorded_as_expired(scenario: TherapyScenario) -> None:
    scenario.run_until("place#2")
    scenario.accept(scenario.expire(2))
    assert scenario.case.doses[scenario.dose(2)].status is DoseStatus.EXPIRED
    assert scenario.case.doses_remaining() == 1


def test_consent_windows_open_close_and_reopen(scenario: TherapyScenario) -> None:
    scenario.run_until("consent_treatment")
    granted = scenario.now_us
    assert scenario.case.consent_covers("TREATMENT", granted)
    assert not scenario.case.consent_covers("TREATMENT", granted - 1)
    scenario.accept(scenario.withdraw("TREATMENT"))
    withdrawn = scenario.now_us
    assert scenario.case.consent_covers("TREATMENT", withdrawn - 1)
    assert not scenario.case.consent_covers("TREATMENT", withdrawn)
    scenario.accept(scenario.consent_treatment())
    assert scenario.case.consent_covers("TREATMENT", scenario.now_us)
    assert not scenario.case.consent_covers("TREATMENT", withdrawn)


def test_a_rejected_batch_returns_the_therapy_to_approved(scenario: TherapyScenario) -> None:
    scenario.run_until("record_qc")
    scenario.accept(scenario.release(disposition="REJECTED"))
    assert scenario.case.stage is Stage.APPROVED
    assert scenario.case.batches[scenario.batch_id].disposition == "REJECTED"
    assert not scenario.case.doses


def test_records_off_the_main_line_do_not_move_the_stage(scenario: TherapyScenario) -> None:
    scenario.run_until("outcome#1")
    scenario.accept(scenario.adverse_event())
    assert (scenario.case.stage, scenario.case.adverse_events) == (Stage.FOLLOW_UP, 1)


def test_an_unresolvable_reference_is_skipped_not_raised() -> None:
    """A log written under older rules must still fold; nothing it names may crash it."""
    hub = Hub()
    scenario = TherapyScenario(hub)
    for label in ("receive_at_site", "place#1", "dispense#1", "administer#1", "claim#1",
                  "pay#1", "approve_first", "record_qc", "release"):
        scenario.commit(scenario.step(label))
    assert scenario.case.doses == {} and scenario.case.batches == {}
    assert len(scenario.case.event_ids) == 9


def test_registry_events_move_only_the_registry_chain(hub: Hub) -> None:
    before = len(hub.registry_case.event_ids)
    hub.register("courier-7", {"COURIER"}, "COLDCHAIN")
    case = hub.registry_case
    assert case.coi == REGISTRY_COI and case.is_registry
    assert len(case.event_ids) == before + 1 and case.stage is Stage.NEW
    assert hub.registry.roles_of("courier-7") == frozenset({"COURIER"})
