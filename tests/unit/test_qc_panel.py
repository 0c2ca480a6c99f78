"""Release by specification: given a batch and its therapy type's QC panel, when results
are recorded and the qualified person releases, then the gatekeeper judges the values
itself, needs every test of the panel passed, and keeps every retest on record; and given
its recipe, when manufacturing steps are recorded, then only in the recipe's order, and QC
only once every step was.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from pcvhub.schemas.envelope import SignatureMeaning
from pcvhub.schemas.specifications import PANELS, RECIPES, Limit, LimitKind, UnreadableValue

from .therapy_builder import QC_STEPS, RECIPE_STEPS, Hub, TherapyScenario, refused


def test_the_limits_of_the_panel_judge_values_at_their_bounds() -> None:
    endotoxin = Limit("endotoxin", "< 5", LimitKind.AT_MOST, unit="EU/mL", bound=Decimal(5))
    integrity = Limit("mRNA integrity", ">= 80", LimitKind.AT_LEAST, unit="%",
                      bound=Decimal(80), inclusive=True)
    assert endotoxin.meets("4.99", design_hash="") and not endotoxin.meets("5", design_hash="")
    assert integrity.meets("80", design_hash="") and not integrity.meets("79.9", design_hash="")
    with pytest.raises(UnreadableValue, match="not a number"):
        endotoxin.meets("NaN", design_hash="")
    identity = PANELS["individualized-neoantigen-mRNA"].limit("identity")
    assert identity is not None and identity.meets("AB" * 32, design_hash="ab" * 32)


def test_a_batch_with_every_test_of_the_panel_passed_is_released(
        scenario: TherapyScenario) -> None:
    scenario.run_until("record_qc")
    assert scenario.judge(scenario.release()).accepted


def test_a_release_after_one_pass_of_one_test_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[-1])
    scenario.accept(scenario.record_qc())  # sterility passed; nothing else tested
    event = scenario.release()
    verdict = refused(scenario.judge(event), "R4", "QC_NOT_PASSED", event)
    for test in ("endotoxin not recorded", "identity not recorded",
                 "mRNA integrity not recorded"):
        assert test in verdict.reason


def test_a_release_with_a_failed_sterility_test_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("qc_test#3")
    scenario.accept(scenario.record_qc("FAIL"))
    event = scenario.release()
    verdict = refused(scenario.judge(event), "R4", "QC_NOT_PASSED", event)
    assert "sterility last FAIL" in verdict.reason
    assert scenario.judge(scenario.release(disposition="REJECTED")).accepted


def test_a_pass_the_value_contradicts_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[-1])
    event = scenario.qc_result("endotoxin", "12.5", "PASS")
    verdict = refused(scenario.judge(event), "R9", "QC_RESULT_CONTRADICTS_SPECIFICATION",
                      event)
    assert "does not meet" in verdict.reason and "'< 5'" in verdict.reason


def test_an_identity_pass_for_another_sequence_is_refused_with_an_alert(
        scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[-1])
    event = scenario.qc_result("identity", "0f" * 32, "PASS")
    verdict = refused(scenario.judge(event), "R9", "QC_RESULT_CONTRADICTS_SPECIFICATION",
                      event)
    assert verdict.alert


def test_a_specification_looser_than_the_panels_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[-1])
    event = scenario.issue("qc", "QcResultRecorded", {
        **scenario.qc_result("endotoxin", "8").payload, "specification": "< 10"},
        meaning=SignatureMeaning.REVIEWED)
    verdict = refused(scenario.judge(event), "R9", "SPECIFICATION_MISMATCH", event)
    assert "'< 5'" in verdict.reason


def test_a_test_outside_the_panel_and_an_unreadable_value_are_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[-1])
    unknown = scenario.qc_result("colour", "clear")
    verdict = refused(scenario.judge(unknown), "R9", "UNKNOWN_QC_TEST", unknown)
    assert "sterility" in verdict.reason
    unreadable = scenario.qc_result("endotoxin", "low")
    refused(scenario.judge(unreadable), "R9", "QC_VALUE_UNREADABLE", unreadable)


def test_a_retest_after_a_failure_needs_an_investigation_and_keeps_both_results(
        scenario: TherapyScenario) -> None:
    scenario.run_until("qc_test#3")
    failed = scenario.accept(scenario.record_qc("FAIL"))
    retest = scenario.record_qc("PASS")
    verdict = refused(scenario.judge(retest), "R9", "RETEST_WITHOUT_INVESTIGATION", retest)
    assert "investigation_ref" in verdict.reason
    passed = scenario.accept(scenario.record_qc("PASS", investigation_ref="OOS-2026-011"))
    history = [(r.test, r.result, r.event_id, r.investigation_ref)
               for r in scenario.case.batches[scenario.batch_id].qc_history
               if r.test == "sterility"]
    assert history == [("sterility", "FAIL", failed.event_id, None),
                       ("sterility", "PASS", passed.event_id, "OOS-2026-011")]
    assert scenario.judge(scenario.release()).accepted


def test_a_therapy_type_without_a_panel_has_no_release_path(hub: Hub) -> None:
    scenario = TherapyScenario(hub, therapy_type="autologous-dendritic-cell")
    scenario.run_until("start_manufacturing")
    event = scenario.qc_test(1)
    verdict = refused(scenario.judge(event), "R9", "NO_QC_PANEL", event)
    assert "autologous-dendritic-cell" in verdict.reason
    # nor any manufacturing: a batch is made only by a reviewed recipe
    event = scenario.complete_step(1, "cell culture")
    verdict = refused(scenario.judge(event), "R9", "NO_RECIPE", event)
    assert "autologous-dendritic-cell" in verdict.reason


def test_the_happy_path_records_the_whole_panel() -> None:
    panel = PANELS["individualized-neoantigen-mRNA"]
    assert len(QC_STEPS) == len(panel.tests)


# -- the manufacturing recipe, in order, before QC -----------------------------------------

RECIPE = RECIPES["individualized-neoantigen-mRNA"]


def test_the_happy_path_records_the_recipe_in_order(scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[-1])
    assert scenario.case.batches[scenario.batch_id].steps == list(RECIPE.steps)
    assert scenario.judge(scenario.qc_test(1)).accepted


def test_qc_before_the_recipes_steps_is_refused_naming_the_missing_ones(
        scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[1])  # synthesis and purification only
    event = scenario.qc_test(1)
    verdict = refused(scenario.judge(event), "R9", "RECIPE_INCOMPLETE", event)
    assert "LNP formulation, fill-finish" in verdict.reason
    assert "record LNP formulation" in verdict.reason
    scenario.run_until(RECIPE_STEPS[-1])
    assert scenario.judge(scenario.qc_test(1)).accepted


def test_a_step_out_of_the_recipes_order_is_refused_naming_the_step_due(
        scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[0])
    event = scenario.complete_step(3)  # LNP formulation before purification
    verdict = refused(scenario.judge(event), "R9", "RECIPE_STEP_OUT_OF_ORDER", event)
    assert "but purification comes first" in verdict.reason
    assert "record purification next" in verdict.reason
    again = scenario.complete_step(1)
    verdict = refused(scenario.judge(again), "R9", "RECIPE_STEP_OUT_OF_ORDER", again)
    assert "already recorded" in verdict.reason
    scenario.accept(scenario.complete_step(2))
    assert scenario.judge(scenario.complete_step(3)).accepted


def test_a_step_the_recipe_does_not_name_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[0])
    event = scenario.complete_step(2, "ultrafiltration")
    verdict = refused(scenario.judge(event), "R9", "UNKNOWN_RECIPE_STEP", event)
    assert "IVT mRNA synthesis, purification, LNP formulation, fill-finish" in verdict.reason


def test_a_finished_recipe_takes_no_more_steps(scenario: TherapyScenario) -> None:
    scenario.run_until(RECIPE_STEPS[-1])
    event = scenario.complete_step(4)
    verdict = refused(scenario.judge(event), "R9", "RECIPE_STEP_OUT_OF_ORDER", event)
    assert "start a new batch" in verdict.reason


def test_a_batch_qc_tested_without_its_recipe_is_not_released_until_the_steps_are_recorded(
        scenario: TherapyScenario) -> None:
    """Given a log from before the recipe was enforced (one fill-finish step, then the whole
    panel passed), when the qualified person releases the batch, then R4 names the steps
    not recorded; once they are, in order, the release goes through."""
    scenario.run_until("start_manufacturing")
    scenario.commit(scenario.complete_step(4))  # folded as an older log holds it, unjudged
    for label in QC_STEPS:
        scenario.commit(scenario.step(label))
    event = scenario.release()
    verdict = refused(scenario.judge(event), "R4", "QC_NOT_PASSED", event)
    assert ("recipe step IVT mRNA synthesis not recorded, recipe step purification not "
            "recorded, recipe step LNP formulation not recorded") in verdict.reason
    skipped = scenario.complete_step(2)
    verdict = refused(scenario.judge(skipped), "R9", "RECIPE_STEP_OUT_OF_ORDER", skipped)
    assert "IVT mRNA synthesis comes first" in verdict.reason
    for n in (1, 2, 3):
        scenario.accept(scenario.complete_step(n))
    assert scenario.judge(scenario.release()).accepted
