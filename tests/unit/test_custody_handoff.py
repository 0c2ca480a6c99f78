"""Custody that cannot be walked around: given a therapy so far, when someone moves an item
alone, quarantines it or lifts a quarantine, then the gatekeeper's verdict says why.

A hand-over takes two signatures (the holder releases to a named receiver, the receiver
accepts); a shipment goes from its holder to a named consignee; a receipt that shows
tampering or a missing item quarantines the shipment; a quarantined item goes nowhere
until the qualified person decides, with a reason.
"""

from __future__ import annotations

from pathlib import Path

from pcvhub.config import load_settings
from pcvhub.streams.case import DoseStatus, Stage
from pcvhub.streams.worker import rules_for

from .therapy_builder import TherapyScenario, refused

# -- two-party hand-overs ------------------------------------------------------------------


def test_a_hand_over_moves_custody_only_when_the_named_receiver_accepts(
        scenario: TherapyScenario) -> None:
    scenario.run_until("collect")
    sample = scenario.case.items[scenario.sample_id]
    scenario.accept(scenario.hand_over_sample())
    assert sample.holder == scenario.id_of("nurse")  # released, not yet accepted
    scenario.accept(scenario.accept_sample())
    assert sample.holder == scenario.id_of("lab")
    assert sample.released_to is None


def test_the_receiver_alone_cannot_take_custody(scenario: TherapyScenario) -> None:
    scenario.run_until("collect")
    # the lab signs that it took the sample from the nurse; the nurse never released it
    event = scenario.accept_sample()
    verdict = refused(scenario.judge(event), "R6", "CUSTODY_NOT_RELEASED", event)
    assert scenario.id_of("nurse") in verdict.reason and "CustodyReleased" in verdict.reason
    assert scenario.case.items[scenario.sample_id].holder == scenario.id_of("nurse")


def test_the_holder_alone_cannot_hand_custody_over(scenario: TherapyScenario) -> None:
    scenario.run_until("hand_over_sample")
    # the nurse signs the lab's acceptance herself
    event = scenario.transfer("nurse", scenario.sample_id, "nurse", "lab")
    verdict = refused(scenario.judge(event), "R6", "ACCEPTANCE_BY_RECEIVER_ONLY", event)
    assert scenario.id_of("lab") in verdict.reason


def test_only_the_receiver_named_in_the_release_may_accept(
        scenario: TherapyScenario) -> None:
    scenario.run_until("hand_over_sample")  # released to the lab
    event = scenario.transfer("courier", scenario.sample_id, "nurse", "courier")
    verdict = refused(scenario.judge(event), "R6", "CUSTODY_NOT_RELEASED", event)
    assert f"released it to {scenario.id_of('lab')}" in verdict.reason


def test_only_the_holder_may_release(scenario: TherapyScenario) -> None:
    scenario.run_until("collect")
    event = scenario.release_item("courier", scenario.sample_id, "lab")
    refused(scenario.judge(event), "R6", "HOLDER_MISMATCH", event)


def test_a_release_lapses_once_the_item_travels(scenario: TherapyScenario) -> None:
    scenario.run_until("release")
    dose = scenario.dose(1)
    scenario.accept(scenario.release_item("manufacturer", dose, "courier",
                                          location="Kobe plant dock 2"))
    scenario.accept(scenario.ship())  # the plant ships it itself instead
    assert scenario.case.items[dose].released_to is None
    event = scenario.transfer("courier", dose, "manufacturer", "courier")
    refused(scenario.judge(event), "R6", "ITEM_IN_TRANSIT", event)


# -- shipments -----------------------------------------------------------------------------


def test_a_shipment_is_received_only_by_its_consignee(scenario: TherapyScenario) -> None:
    scenario.run_until("ship")
    event = scenario.receive_at_site(by="lab")
    verdict = refused(scenario.judge(event), "R6", "WRONG_RECIPIENT", event)
    assert scenario.id_of("pharmacist") in verdict.reason


def test_a_receipt_with_a_broken_seal_quarantines_the_shipment(
        scenario: TherapyScenario) -> None:
    scenario.run_until("ship")
    scenario.accept(scenario.receive_at_site(seal_intact=False))
    for dose_id in scenario.dose_ids:
        assert scenario.case.doses[dose_id].status is DoseStatus.QUARANTINED
        assert scenario.case.items[dose_id].holder == scenario.id_of("pharmacist")
    event = scenario.place(1)
    verdict = refused(scenario.judge(event), "R6", "DOSE_QUARANTINED", event)
    assert "seal broken" in verdict.reason and "QuarantineDispositioned" in verdict.reason


def test_a_receipt_under_another_seal_quarantines_the_shipment(
        scenario: TherapyScenario) -> None:
    scenario.run_until("ship")
    scenario.accept(scenario.receive_at_site(seal_id="SEAL-FORGED"))
    event = scenario.place(1)
    verdict = refused(scenario.judge(event), "R6", "DOSE_QUARANTINED", event)
    assert "SEAL-FORGED" in verdict.reason and "SEAL-SHP-1" in verdict.reason


def test_a_receipt_missing_an_item_quarantines_and_keeps_the_missing_one_in_transit(
        scenario: TherapyScenario) -> None:
    scenario.run_until("ship")
    scenario.accept(scenario.receive_at_site(item_ids=[scenario.dose(1)]))
    first, second = (scenario.case.items[d] for d in scenario.dose_ids)
    assert (first.holder, first.open_dispatch) == (scenario.id_of("pharmacist"), None)
    assert second.open_dispatch == scenario.shipment_id
    assert first.quarantined and second.quarantined
    assert f"without {scenario.dose(2)}" in first.quarantine_reason


def test_a_receipt_naming_an_item_the_shipment_did_not_carry_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until("ship")
    event = scenario.receive_at_site(item_ids=[*scenario.dose_ids, "DOSE-OF-SOMEONE"])
    verdict = refused(scenario.judge(event), "R6", "ITEM_NOT_IN_SHIPMENT", event)
    assert verdict.alert and "DOSE-OF-SOMEONE" in verdict.reason


def test_a_sample_received_rejected_is_quarantined_and_not_sequenced(
        scenario: TherapyScenario) -> None:
    scenario.run_until("accept_sample")
    scenario.accept(scenario.issue("lab", "SampleReceived", {
        **scenario.receive_sample().payload, "condition": "REJECTED",
        "condition_notes": "tube cracked, thawed"}))
    event = scenario.sequence()
    verdict = refused(scenario.judge(event), "R6", "ITEM_QUARANTINED", event)
    assert "REJECTED" in verdict.reason and "tube cracked" in verdict.reason


# -- quarantine ----------------------------------------------------------------------------


def test_a_quarantined_dose_cannot_be_shipped(scenario: TherapyScenario) -> None:
    scenario.run_until("release")
    scenario.accept(scenario.issue("manufacturer", "TemperatureExcursion", {
        **scenario.excursion().payload, "item_ids": [scenario.dose(1)]}))
    event = scenario.ship()
    verdict = refused(scenario.judge(event), "R6", "ITEM_QUARANTINED", event)
    assert "temperature excursion" in verdict.reason


def test_a_quarantined_dose_cannot_be_placed_reserved_dispensed_or_administered(
        scenario: TherapyScenario) -> None:
    scenario.run_until("reserve#1")
    scenario.accept(scenario.excursion([scenario.dose(2)]))
    reserve = scenario.issue("pharmacist", "DoseReserved", {  # for the scheduled ADM-1
        **scenario.reserve(2).payload, "administration_id": "ADM-1"})
    for event in (scenario.place(2), reserve, scenario.dispense(2)):
        refused(scenario.judge(event), "R6", "DOSE_QUARANTINED", event)
    scenario.run_until("verify_identity#1")  # dose 1 is dispensed, the patient verified
    scenario.accept(scenario.excursion([scenario.dose(1)]))
    event = scenario.administer(1)
    verdict = refused(scenario.judge(event), "R6", "DOSE_QUARANTINED", event)
    assert verdict.alert


def test_only_the_qualified_person_releases_a_quarantine(scenario: TherapyScenario) -> None:
    scenario.run_until("reserve#1")
    scenario.accept(scenario.excursion([scenario.dose(1)]))
    by_pharmacist = scenario.disposition_quarantine(scenario.dose(1), signer="pharmacist")
    refused(scenario.judge(by_pharmacist), "R2", "ROLE_NOT_ALLOWED", by_pharmacist)
    destroyed = scenario.destroy(1)  # the pharmacy destroying it is no decision either
    refused(scenario.judge(destroyed), "R6", "DISPOSITION_BY_QUALIFIED_PERSON", destroyed)


def test_a_quarantine_is_released_only_with_a_reason(scenario: TherapyScenario) -> None:
    scenario.run_until("reserve#1")
    scenario.accept(scenario.excursion([scenario.dose(1)]))
    event = scenario.disposition_quarantine(scenario.dose(1), reason="  ")
    verdict = refused(scenario.judge(event), "R6", "DISPOSITION_UNJUSTIFIED", event)
    assert "without a reason" in verdict.reason


def test_a_released_quarantine_restores_the_dose_to_where_it_was(
        scenario: TherapyScenario) -> None:
    scenario.run_until("reserve#1")
    scenario.accept(scenario.excursion([scenario.dose(1)]))
    scenario.accept(scenario.disposition_quarantine(scenario.dose(1)))
    dose = scenario.case.doses[scenario.dose(1)]
    assert (dose.status, dose.reserved_for) == (DoseStatus.RESERVED, "ADM-1")
    scenario.run_until("milestone")  # the therapy goes on to its end
    assert scenario.case.stage is Stage.FOLLOW_UP


def test_a_quarantine_destroyed_ends_the_dose(scenario: TherapyScenario) -> None:
    scenario.run_until("reserve#1")
    scenario.accept(scenario.excursion([scenario.dose(1)]))
    scenario.accept(scenario.disposition_quarantine(scenario.dose(1), "DESTROYED",
                                                    "thawed beyond stability data"))
    assert scenario.case.doses[scenario.dose(1)].status is DoseStatus.DESTROYED
    event = scenario.disposition_quarantine(scenario.dose(1))
    refused(scenario.judge(event), "R6", "NOT_QUARANTINED", event)


def test_an_item_never_quarantined_needs_no_disposition(scenario: TherapyScenario) -> None:
    scenario.run_until("receive_at_site")
    event = scenario.disposition_quarantine(scenario.dose(1))
    refused(scenario.judge(event), "R6", "NOT_QUARANTINED", event)


# -- placement methods ---------------------------------------------------------------------


def test_consigned_stock_stays_the_manufacturers_until_administered(
        scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    first = scenario.case.doses[scenario.dose(1)]
    assert (first.placement_method, first.owner) == ("CONSIGNMENT",
                                                     scenario.id_of("manufacturer"))
    scenario.run_until("administer#1")
    assert first.owner == scenario.site


def test_site_stock_is_the_sites_on_placement(scenario: TherapyScenario) -> None:
    scenario.run_until("receive_at_site")
    scenario.accept(scenario.place(1, method="SITE_STOCK"))
    assert scenario.case.doses[scenario.dose(1)].owner == scenario.site


def test_a_just_in_time_placement_needs_an_administration_scheduled_soon(
        scenario: TherapyScenario) -> None:
    scenario.run_until("receive_at_site")
    event = scenario.place(1, method="JUST_IN_TIME")
    verdict = refused(scenario.judge(event), "R6", "NO_ADMINISTRATION_SCHEDULED", event)
    assert "within 72 h" in verdict.reason and "AdministrationScheduled" in verdict.reason
    scenario.accept(scenario.schedule(1))  # ten ticks ahead: well inside the window
    assert scenario.judge(scenario.place(1, method="JUST_IN_TIME")).accepted


def test_the_just_in_time_window_is_the_deployments_setting(
        scenario: TherapyScenario, tmp_path: Path) -> None:
    """Given a deployment whose pcvhub.toml narrows the window to 6 h, when a dose is placed
    just in time for an administration scheduled 10 h ahead, then the gatekeeper built
    from those settings refuses it naming 6 h; the default (72 h) accepts it."""
    toml = tmp_path / "pcvhub.toml"
    toml.write_text("[gatekeeper]\njust_in_time_window_hours = 6\n")
    simulated = {"PCVHUB_TIME_BOUNDS": "simulation"}  # the builder's story is back-dated
    narrow = rules_for(load_settings({**simulated, "PCVHUB_CONFIG": str(toml)}),
                       scenario.hub.registry)
    default = rules_for(load_settings(simulated), scenario.hub.registry)
    scenario.run_until("receive_at_site")
    scenario.accept(scenario.issue("physician", "AdministrationScheduled", {
        "administration_id": "ADM-1", "dose_number": 1,
        "scheduled_for": scenario.now_us + 10 * 3_600_000_000, "site_id": scenario.site}))
    event = scenario.place(1, method="JUST_IN_TIME")
    verdict = refused(narrow.check(event, scenario.case), "R6", "NO_ADMINISTRATION_SCHEDULED",
                      event)
    assert "within 6 h" in verdict.reason
    assert default.check(event, scenario.case).accepted
    env = load_settings({**simulated, "PCVHUB_CONFIG": str(toml),
                         "PCVHUB_JUST_IN_TIME_WINDOW_HOURS": "12"})
    assert rules_for(env, scenario.hub.registry).check(event, scenario.case).accepted


def test_a_placement_method_the_hub_does_not_know_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until("receive_at_site")
    event = scenario.place(1, method="OTHER")
    refused(scenario.judge(event), "R6", "PLACEMENT_METHOD_UNKNOWN", event)


# -- cold chain from the logger's readings -------------------------------------------------


def test_readings_inside_the_storage_range_quarantine_nothing(
        scenario: TherapyScenario) -> None:
    scenario.run_until("receive_at_site")
    scenario.accept(scenario.logger_readings([-72.0, -71.5, -70.8, -72.2]))
    assert all(not scenario.case.items[d].quarantined for d in scenario.dose_ids)


def test_the_hub_derives_the_excursion_from_the_readings(scenario: TherapyScenario) -> None:
    scenario.run_until("receive_at_site")
    scenario.accept(scenario.logger_readings([-72.0, -55.0, -41.5, -70.0]))
    dose = scenario.case.items[scenario.dose(1)]
    assert dose.quarantined
    assert "2 of 4 logger readings outside -80..-60 C (-55..-41.5 C, about 600 s)" \
        in dose.quarantine_reason
    event = scenario.place(1)
    verdict = refused(scenario.judge(event), "R6", "DOSE_QUARANTINED", event)
    assert "LOG-9" in verdict.reason


def test_readings_out_of_time_order_are_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("receive_at_site")
    good = scenario.logger_readings([-72.0, -71.0])
    readings = list(reversed(good.payload["readings"]))
    event = scenario.issue("courier", "TemperatureLogRecorded", {
        **good.payload, "readings": readings})
    verdict = refused(scenario.judge(event), "R6", "TEMPERATURE_LOG_UNJUDGEABLE", event)
    assert "not in time order" in verdict.reason
