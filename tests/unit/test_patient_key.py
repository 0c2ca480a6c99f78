"""The patient's own key: the card a clinician binds to the therapy, the consents only the
patient signs (or a clinician witnesses, marked as such), the bedside check the hub verifies
against the patient's card, and the card's loss and re-issue.

Given a therapy built from real signed events, when the patient (or someone pretending to
be the patient) signs, then the gatekeeper's rules accept or refuse with a reason that names
what was wrong.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pcvhub.schemas.envelope import SignatureMeaning
from pcvhub.trust.consent import ConsentSigner
from pcvhub.trust.keys import KeyStoreError
from pcvhub.trust.patient_card import (
    BedsideChallenge,
    BiometricMismatch,
    PatientCard,
    verify_consent_token,
    witnessed_proof,
)

from .therapy_builder import Hub, Party, TherapyScenario, refused

# -- the card and its binding ------------------------------------------------------------

def test_the_card_is_bound_by_a_clinician_and_its_key_then_signs_consent(
        scenario: TherapyScenario) -> None:
    scenario.run_until("consent_payer")
    credential = scenario.case.patient_credentials[scenario.card.key_id]
    assert credential.witnessed_by == scenario.id_of("nurse")
    assert credential.biometric_template_hash == scenario.card.biometric_template_hash
    consents = [e for e in scenario.log if e.event_type == "ConsentGranted"]
    assert {e.producer for e in consents} == {scenario.card.patient_actor_id}
    assert {e.envelope.meaning for e in consents} == {SignatureMeaning.APPROVED}
    for scope in ("TREATMENT", "GENOME_STORAGE", "PAYER_SHARING"):
        assert scenario.case.consent_signers(scope, scenario.now_us) == {ConsentSigner.PATIENT}


def test_a_card_handed_to_another_patient_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("enrol")
    event = scenario.issue("nurse", "PatientCredentialIssued", scenario.card.credential_payload(
        "bb" * 32), meaning=SignatureMeaning.VERIFIED)
    verdict = refused(scenario.judge(event), "R5", "IDENTITY_MISMATCH", event)
    assert scenario.card.card_id in verdict.reason


def test_a_staff_key_cannot_be_bound_as_the_patients_card(scenario: TherapyScenario) -> None:
    scenario.run_until("enrol")
    nurse = scenario.actors["nurse"]
    payload = {**scenario.card.credential_payload(scenario.patient_hash),
               "patient_actor_id": nurse.actor_id, "key_id": nurse.key_id}
    event = scenario.issue("nurse", "PatientCredentialIssued", payload,
                           meaning=SignatureMeaning.VERIFIED)
    verdict = refused(scenario.judge(event), "R5", "NOT_A_PATIENT_KEY", event)
    assert "NURSE" in verdict.reason


def test_a_connector_cannot_witness_a_card(hub: Hub, scenario: TherapyScenario) -> None:
    scenario.run_until("enrol")
    connector = hub.register("emr-connector", {"CONNECTOR"}, scenario.site)
    event = scenario.issue(connector, "PatientCredentialIssued",
                           scenario.card.credential_payload(scenario.patient_hash),
                           meaning=SignatureMeaning.VERIFIED)
    refused(scenario.judge(event), "R2", "ROLE_NOT_ALLOWED", event)


# -- consent the patient signs -----------------------------------------------------------

def test_genome_storage_consent_signed_by_a_clinician_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until("consent_treatment")
    event = scenario.consent("GENOME_STORAGE", by="physician")
    verdict = refused(scenario.judge(event), "R2", "PATIENT_SIGNATURE_REQUIRED", event)
    assert "GENOME_STORAGE" in verdict.reason and scenario.id_of("physician") in verdict.reason


def test_a_clinician_signing_consent_as_if_it_were_the_patients_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until("consent_treatment")
    # the physician uses the patient's meaning (APPROVED): still not the patient's key
    event = scenario.issue("physician", "ConsentGranted", {
        "scope": "RESEARCH", "consent_document_ref": "DocumentReference/consent-RESEARCH"},
        meaning=SignatureMeaning.APPROVED)
    refused(scenario.judge(event), "R2", "PATIENT_SIGNATURE_REQUIRED", event)


def test_a_patient_key_of_another_therapy_cannot_consent_here(
        hub: Hub, scenario: TherapyScenario) -> None:
    other = TherapyScenario(hub, cast=scenario.actors, patient_hash="b2" * 32)
    other.run_until("issue_card")
    scenario.run_until("consent_treatment")
    event = scenario.consent("RESEARCH", by=other.patient)
    verdict = refused(scenario.judge(event), "R2", "PATIENT_NOT_OF_THIS_THERAPY", event)
    assert other.card.key_id in verdict.reason and scenario.card.key_id in verdict.reason


def test_the_patient_signing_without_approving_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("consent_treatment")
    event = scenario.issue(scenario.patient, "ConsentGranted", {
        "scope": "RESEARCH", "consent_document_ref": "DocumentReference/consent-RESEARCH"},
        meaning=SignatureMeaning.AUTHORED)
    refused(scenario.judge(event), "R2", "WRONG_SIGNATURE_MEANING", event)


def test_a_witnessed_consent_is_accepted_and_marked_as_witnessed(
        scenario: TherapyScenario) -> None:
    scenario.run_until("consent_treatment", skipping=())
    witnessed = scenario.accept(scenario.witnessed_consent("GENOME_STORAGE"))
    assert witnessed.event_type == "ConsentWitnessed"
    assert scenario.case.consent_signers("GENOME_STORAGE", scenario.now_us) == {
        ConsentSigner.WITNESSED}
    # it counts: sequencing may go ahead under it
    scenario.run_until("sequence", skipping=("consent_genome",))


def test_a_connector_cannot_witness_a_consent(hub: Hub, scenario: TherapyScenario) -> None:
    scenario.run_until("consent_treatment")
    connector = hub.register("emr-connector", {"CONNECTOR"}, scenario.site)
    event = scenario.witnessed_consent("RESEARCH", by="physician")
    forged = scenario.issue(connector, "ConsentWitnessed", event.payload,
                            meaning=SignatureMeaning.VERIFIED)
    refused(scenario.judge(forged), "R2", "ROLE_NOT_ALLOWED", forged)


def test_treatment_consent_may_still_be_the_hospitals_record(
        scenario: TherapyScenario) -> None:
    scenario.run_until("issue_card")
    scenario.accept(scenario.consent("TREATMENT", by="physician"))
    assert scenario.case.consent_signers("TREATMENT", scenario.now_us) == {
        ConsentSigner.HOSPITAL}


def test_the_patients_withdrawal_alone_stops_what_it_covers(
        scenario: TherapyScenario) -> None:
    scenario.run_until("sequence")
    withdrawal = scenario.accept(scenario.withdraw("GENOME_STORAGE"))
    assert withdrawal.producer == scenario.card.patient_actor_id
    event = scenario.store_genome()
    refused(scenario.judge(event), "R7", "CONSENT_WITHDRAWN", event)


def test_the_patient_may_withdraw_a_witnessed_consent(scenario: TherapyScenario) -> None:
    scenario.run_until("consent_treatment")
    scenario.accept(scenario.witnessed_consent("RESEARCH"))
    scenario.accept(scenario.research_use("RQ-1"))
    scenario.accept(scenario.withdraw("RESEARCH"))
    event = scenario.research_use("RQ-2")
    refused(scenario.judge(event), "R7", "CONSENT_WITHDRAWN", event)


# -- bedside identity the hub verifies ---------------------------------------------------

def test_a_bedside_check_answered_by_the_patients_card_clears_the_dose(
        scenario: TherapyScenario) -> None:
    scenario.run_until("administer#1")
    check = scenario.case.identity_checks[scenario.last_check_of(1)]
    assert check.proof_kind == "CARD_SIGNATURE" and check.administration_id == "ADM-1"


def test_a_bedside_match_without_the_patients_proof_is_refused(
        scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    event = scenario.verify_identity(1, proof=None)
    verdict = refused(scenario.judge(event), "R5", "IDENTITY_UNPROVEN", event)
    assert verdict.alert and "MATCH flag" in verdict.reason


def test_a_replayed_bedside_challenge_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    first = scenario.accept(scenario.verify_identity(1))
    # a recording of the card's answer is sent again for a second check
    replay = scenario.verify_identity(1, proof=first.payload["patient_proof"])
    verdict = refused(scenario.judge(replay), "R5", "BEDSIDE_CHALLENGE_REPLAYED", replay)
    assert verdict.alert


def test_another_patients_card_at_the_bedside_is_refused(
        hub: Hub, scenario: TherapyScenario) -> None:
    other = TherapyScenario(hub, cast=scenario.actors, patient_hash="b2" * 32)
    other.run_until("issue_card")
    scenario.run_until("dispense#1")
    event = scenario.verify_identity(1, card=other.card)
    verdict = refused(scenario.judge(event), "R5", "PATIENT_CARD_NOT_OF_THIS_THERAPY", event)
    assert verdict.alert and other.card.key_id in verdict.reason


def test_a_proof_carried_where_none_is_demanded_is_verified_too(
        hub: Hub, scenario: TherapyScenario) -> None:
    other = TherapyScenario(hub, cast=scenario.actors, patient_hash="b2" * 32)
    scenario.run_until("dispense#1")
    event = scenario.issue("nurse", "IdentityVerified", {
        **scenario.verify_identity(1).payload, "step": "DISPENSE",
        "patient_proof": other.card.answer(scenario.challenge(1))},
        meaning=SignatureMeaning.VERIFIED)
    refused(scenario.judge(event), "R5", "PATIENT_CARD_NOT_OF_THIS_THERAPY", event)


def test_a_match_on_card_with_the_enrolled_template_is_accepted(
        scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    check = scenario.accept(scenario.verify_identity(1, proof="biometric"))
    assert scenario.case.identity_checks[check.event_id].proof_kind == "CARD_BIOMETRIC_MATCH"


def test_a_wrong_biometric_template_hash_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    # a tampered card signs after matching against a template that is not the enrolled one
    proof = scenario.card.sign_challenge(scenario.challenge(1), "ff" * 32)
    event = scenario.verify_identity(1, proof=proof)
    verdict = refused(scenario.judge(event), "R5", "BIOMETRIC_TEMPLATE_MISMATCH", event)
    assert scenario.card.card_id in verdict.reason


def test_an_honest_card_does_not_sign_for_a_biometric_that_does_not_match(
        scenario: TherapyScenario) -> None:
    with pytest.raises(BiometricMismatch, match=scenario.card.card_id):
        scenario.card.answer(scenario.challenge(1), b"someone else's fingerprint")


def test_an_answer_for_another_dose_does_not_verify(scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    proof = scenario.card.answer(scenario.challenge(2))  # the challenge of dose 2
    event = scenario.verify_identity(1, proof={**proof, "administration_id": "ADM-1"})
    verdict = refused(scenario.judge(event), "R5", "PATIENT_PROOF_INVALID", event)
    assert "signature does not verify" in verdict.reason


def test_a_stale_bedside_challenge_is_refused(scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    proof = scenario.card.answer(scenario.challenge(1, age_us=10 * 60 * 1_000_000))
    event = scenario.verify_identity(1, proof=proof)
    refused(scenario.judge(event), "R5", "BEDSIDE_CHALLENGE_STALE", event)


def test_a_check_for_one_administration_does_not_clear_another(
        scenario: TherapyScenario) -> None:
    scenario.run_until("verify_identity#1")
    event = scenario.issue("nurse", "DoseAdministered", {
        **scenario.administer(1).payload, "administration_id": "ADM-OTHER"})
    verdict = refused(scenario.judge(event), "R5", "IDENTITY_NOT_VERIFIED", event)
    assert "ADM-1" in verdict.reason


def test_the_witnessed_bedside_fallback_is_accepted_and_named(
        scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    check = scenario.accept(scenario.verify_identity(1, proof="witnessed"))
    assert scenario.case.identity_checks[check.event_id].proof_kind == "WITNESSED_NO_CARD"
    scenario.accept(scenario.administer(1))


def test_a_witnessed_fallback_needs_its_reason() -> None:
    challenge = BedsideChallenge.fresh("PCV-X", "DOSE-1", "ADM-1", 0)
    with pytest.raises(ValueError, match="reason"):
        witnessed_proof(challenge, "  ")


# -- loss and re-issue -------------------------------------------------------------------

def test_a_lost_card_stops_signing_and_its_witnessed_replacement_takes_over(
        hub: Hub, scenario: TherapyScenario) -> None:
    scenario.run_until("dispense#1")
    lost_at = scenario.now_us + scenario.tick_us
    hub.card_lost(scenario.card, lost_at)
    scenario.clock_to(lost_at + scenario.tick_us)
    event = scenario.verify_identity(1)
    verdict = refused(scenario.judge(event), "R5", "PATIENT_KEY_INVALID", event)
    assert "CARD_LOST" in verdict.reason
    consent = scenario.consent("RESEARCH")
    refused(scenario.judge(consent), "R1", "KEY_REVOKED", consent)
    lost = scenario.card
    replacement = hub.reissue_card(lost, scenario.now_us)
    scenario.card = replacement
    # not yet witnessed: the new key is registered, but not this therapy's patient's
    early = scenario.consent("RESEARCH")
    refused(scenario.judge(early), "R2", "PATIENT_NOT_OF_THIS_THERAPY", early)
    scenario.accept(scenario.issue_card(replacement, "REISSUE_AFTER_LOSS", lost.key_id))
    scenario.accept(scenario.consent("RESEARCH"))
    scenario.accept(scenario.verify_identity(1))


# -- the wallet and the consent token ----------------------------------------------------

def test_the_wallet_opens_only_with_the_patients_pin(tmp_path: Path) -> None:
    card = PatientCard.issue("KYOTO01", b"template")
    card.save(tmp_path / "wallet", b"2468", "2026-01-01T00:00:00Z")
    opened = PatientCard.load(tmp_path / "wallet", b"2468")
    assert (opened.key_id, opened.public, opened.biometric_template_hash) == (
        card.key_id, card.public, card.biometric_template_hash)
    with pytest.raises(KeyStoreError, match="cannot unlock"):
        PatientCard.load(tmp_path / "wallet", b"0000")


def test_a_consent_token_is_verified_once_and_not_after_it_expires() -> None:
    card = PatientCard.issue("KYOTO01")
    token = card.consent_token("PCV-KYOTO01-2026-X", "GENOME_RESTORE", "vault-restorer",
                               expires_at_us=1_000)
    assert verify_consent_token(token, card.public, 999, spent=set()).ok
    assert verify_consent_token(token, card.public, 999, {token.nonce}).code == "TOKEN_SPENT"
    assert verify_consent_token(token, card.public, 1_000, set()).code == "TOKEN_EXPIRED"
    other = PatientCard.issue("KYOTO01")
    assert verify_consent_token(token, other.public, 999, set()).code == "SIGNATURE_INVALID"
    for altered in (replace(token, requester="someone-else"), replace(token, coi="PCV-OTHER"),
                    replace(token, expires_at_us=10**12)):
        assert verify_consent_token(altered, card.public, 999, set()).code == \
            "SIGNATURE_INVALID"


def test_party_of_the_patient_holds_only_the_patient_role(scenario: TherapyScenario) -> None:
    patient: Party = scenario.patient
    assert patient.roles == {"PATIENT"}
    assert scenario.hub.registry.roles_of(patient.actor_id) == {"PATIENT"}


def test_a_consent_token_counts_only_with_the_patients_own_consent_on_the_log(
        hub: Hub, scenario: TherapyScenario) -> None:
    scenario.run_until("consent_payer")
    case, at = scenario.case.consent, scenario.now_us + 1
    token = scenario.card.consent_token(scenario.coi, "GENOME_RESTORE", "vault-restorer",
                                        expires_at_us=at + 60_000_000)
    assert case.check_token(token, hub.registry, "GENOME_STORAGE", at, spent=set()).ok
    spent = {token.nonce}  # honoured once: the restore records its nonce
    assert case.check_token(token, hub.registry, "GENOME_STORAGE", at, spent).code == \
        "TOKEN_SPENT"
    # a token from the card of another therapy's patient
    other = TherapyScenario(hub, cast=scenario.actors, patient_hash="b2" * 32)
    foreign = other.card.consent_token(scenario.coi, "GENOME_RESTORE", "vault-restorer",
                                       expires_at_us=at + 60_000_000)
    assert case.check_token(foreign, hub.registry, "GENOME_STORAGE", at, set()).code == \
        "TOKEN_NOT_THE_PATIENTS"
    # research was never consented to: no token can stand in for it
    assert case.check_token(token, hub.registry, "RESEARCH", at, set()).code == \
        "CONSENT_MISSING"
    withdrawal = scenario.accept(scenario.withdraw("GENOME_STORAGE"))
    later = withdrawal.occurred_at_us + 1
    assert case.check_token(token, hub.registry, "GENOME_STORAGE", later, set()).code == \
        "CONSENT_MISSING"
