"""Designs only from registered models: given the registry of design models, when a design
names a model, then it is accepted only for a registered, current model with its validated
hash, run by the design service it is registered for.
"""

from __future__ import annotations

from pcvhub.streams.case import Stage
from pcvhub.streams.event import InboundEvent

from .therapy_builder import MODEL_HASH, T0_US, Hub, TherapyScenario, refused


def design_naming(scenario: TherapyScenario, **changes: str) -> InboundEvent:
    scenario.run_until("call_variants")
    return scenario.issue("designer", "NeoantigenDesignProduced", {
        **scenario.design().payload, **changes})


def test_a_design_by_the_registered_model_is_accepted(scenario: TherapyScenario) -> None:
    scenario.run_until("design")
    model = scenario.hub.registry.models[scenario.model_id]
    assert (model.model_hash, model.design_service) == (MODEL_HASH, scenario.id_of("designer"))
    assert scenario.case.stage is Stage.DESIGNED


def test_a_design_naming_an_unknown_model_is_refused(scenario: TherapyScenario) -> None:
    event = design_naming(scenario, model_id="neoagent 4.0-beta")
    verdict = refused(scenario.judge(event), "R5", "MODEL_NOT_REGISTERED", event)
    assert "'neoagent 4.0-beta', which is not registered" in verdict.reason
    assert verdict.alert and "ModelRegistered" in verdict.reason


def test_a_design_naming_another_hash_is_refused(scenario: TherapyScenario) -> None:
    event = design_naming(scenario, model_hash="cd" * 32)
    verdict = refused(scenario.judge(event), "R5", "MODEL_NOT_REGISTERED", event)
    assert "not the validated ones" in verdict.reason


def test_a_design_by_a_retired_model_is_refused(hub: Hub, scenario: TherapyScenario) -> None:
    retired_at = T0_US + 3_000_000
    hub.admit(hub.registry_event("ModelRetired", {
        "model_id": scenario.model_id, "retired_at": retired_at,
        "reason": "superseded by neoagent 3.2"}))
    event = design_naming(scenario)
    assert event.occurred_at_us >= retired_at
    verdict = refused(scenario.judge(event), "R5", "MODEL_NOT_REGISTERED", event)
    assert "was retired" in verdict.reason


def test_a_model_registered_for_another_design_service_is_refused(
        hub: Hub, scenario: TherapyScenario) -> None:
    other = hub.register("designer-elsewhere", {"DESIGN_SERVICE"}, "ELSEWHERE")
    scenario.run_until("call_variants")
    event = scenario.issue(other, "NeoantigenDesignProduced", scenario.design().payload)
    verdict = refused(scenario.judge(event), "R5", "MODEL_NOT_REGISTERED", event)
    assert f"registered for design service {scenario.id_of('designer')}" in verdict.reason


def test_a_model_registration_needs_a_design_approver_and_a_real_hash(
        hub: Hub, scenario: TherapyScenario) -> None:
    event = hub.registry_event("ModelRegistered", {
        "model_id": "neoagent 3.2", "version": "3.2", "model_hash": "not-a-hash",
        "design_service": scenario.id_of("designer"), "validation_evidence_ref": "VAL-9",
        "approved_by": scenario.id_of("designer"), "valid_from": hub.clock_us})
    verdict = refused(hub.judge(event, hub.registry_case), "R5",
                      "MODEL_REGISTRATION_INVALID", event)
    assert "no registered design approver" in verdict.reason
    assert "not a lowercase hex SHA-256" in verdict.reason


def test_a_model_id_is_registered_once(hub: Hub, scenario: TherapyScenario) -> None:
    event = hub.registry_event("ModelRegistered", {
        "model_id": scenario.model_id, "version": "3.1", "model_hash": "ef" * 32,
        "design_service": scenario.id_of("designer"), "validation_evidence_ref": "VAL-9",
        "approved_by": scenario.id_of("approver1"), "valid_from": hub.clock_us})
    verdict = refused(hub.judge(event, hub.registry_case), "R5",
                      "MODEL_REGISTRATION_INVALID", event)
    assert "already registered" in verdict.reason


def test_only_the_registrar_registers_models(scenario: TherapyScenario) -> None:
    hub = scenario.hub
    event = hub.registry_event("ModelRegistered", {
        "model_id": "neoagent 9", "version": "9", "model_hash": "ef" * 32,
        "design_service": scenario.id_of("designer"), "validation_evidence_ref": "VAL-9",
        "approved_by": scenario.id_of("approver1"), "valid_from": hub.clock_us},
        by=scenario.actors["designer"])
    refused(hub.judge(event, hub.registry_case), "R2", "ROLE_NOT_ALLOWED", event)
