"""A restore only on the patient's fresh token, judged against the therapy's log.

Given a therapy whose patient bound a card and consented to genome storage, and whose lab
stored the genome, when someone asks to restore it with a token, then the token is refused
with its reason when it is expired, already spent, for another purpose, for another
requester, or not signed by this therapy's patient; a good token leads to a
``GenomeRestored`` the hub's rules accept, after which the same token is spent.
"""

from __future__ import annotations

import io
import os
from dataclasses import replace

import pytest

from pcvhub.trust.patient_card import PatientCard
from pcvhub.vault.randomness import AesCtrDrbg
from pcvhub.vault.restore_gate import (
    VaultRecord,
    genome_restored_payload,
    judge_restore,
    token_from_json,
    token_from_restore,
    token_to_json,
)
from pcvhub.vault.sealing import SiteKeyPair
from pcvhub.vault.vault import Site, put

from .therapy_builder import Hub, TherapyScenario, refused

PURPOSE = "NEOANTIGEN_REDESIGN"
MINUTE_US = 60_000_000


def _record(scenario: TherapyScenario) -> VaultRecord:
    record = VaultRecord()
    for e in scenario.log:
        record.fold(e.event_type, e.payload, e.event_id, e.occurred_at_us, e.producer,
                    e.envelope.key_id)
    return record


@pytest.fixture
def stored(scenario: TherapyScenario) -> TherapyScenario:
    scenario.run_until("sequence")
    sites = [Site(f"site-{i}", SiteKeyPair.generate().public, f"vault://site-{i}/o/{i}")
             for i in (1, 2, 3)]
    _, payload = put(io.BytesIO(os.urandom(2000)), scenario.coi, sites, lambda *a: None,
                     chunk_size=1024, randomness=AesCtrDrbg())
    scenario.accept(scenario.issue("lab", "GenomeStored", payload))
    return scenario


def _judge(scenario: TherapyScenario, hub: Hub, token, purpose: str = PURPOSE,
           requester: str | None = None, at_us: int | None = None,
           record: VaultRecord | None = None):
    return judge_restore(record or _record(scenario), hub.registry, token, scenario.coi,
                         purpose, requester or scenario.id_of("designer"),
                         at_us if at_us is not None else scenario.now_us + 1)


def _token(scenario: TherapyScenario, card: PatientCard | None = None,
           purpose: str = PURPOSE, requester: str | None = None, valid_us: int = MINUTE_US):
    return (card or scenario.card).consent_token(
        scenario.coi, purpose, requester or scenario.id_of("designer"),
        scenario.now_us + valid_us)


def test_a_fresh_patient_token_is_honoured_once_and_recorded(
        hub: Hub, stored: TherapyScenario) -> None:
    token = _token(stored)
    assert _judge(stored, hub, token).ok
    record = _record(stored)
    payload = genome_restored_payload(record.latest, token, 2000, ["site-1", "site-2"], [])
    restored = stored.accept(stored.issue("designer", "GenomeRestored", payload))
    # the event carries the token whole: anyone reading the log can check it again
    assert token_from_restore(stored.coi, restored.payload) == token
    verdict = _judge(stored, hub, token)
    assert verdict.code == "TOKEN_SPENT" and token.nonce.hex()[:16] in str(verdict)


def test_the_hub_refuses_a_second_restore_on_the_same_token_and_a_forged_one(
        hub: Hub, stored: TherapyScenario) -> None:
    record = _record(stored)
    token = _token(stored)
    payload = genome_restored_payload(record.latest, token, 2000, ["site-1", "site-2"], [])
    stored.accept(stored.issue("designer", "GenomeRestored", payload))
    again = stored.issue("designer", "GenomeRestored", payload)
    refused(stored.judge(again), "R5", "TOKEN_SPENT", again)
    # a token the patient never signed, a root never stored, a token for someone else
    fresh = _token(stored)
    forged = genome_restored_payload(record.latest, replace(fresh, purpose="ANY"), 2000,
                                     [], [])
    event = stored.issue("designer", "GenomeRestored", forged)
    refused(stored.judge(event), "R5", "SIGNATURE_INVALID", event)
    unknown = {**genome_restored_payload(record.latest, fresh, 2000, [], []),
               "root_hash": "00" * 32}
    event = stored.issue("designer", "GenomeRestored", unknown)
    refused(stored.judge(event), "R5", "GENOME_NOT_STORED", event)
    event = stored.issue("researcher", "GenomeRestored",
                         genome_restored_payload(record.latest, fresh, 2000, [], []))
    refused(stored.judge(event), "R5", "TOKEN_OTHER_REQUESTER", event)


def test_an_expired_token_is_refused(hub: Hub, stored: TherapyScenario) -> None:
    token = _token(stored, valid_us=10)
    verdict = _judge(stored, hub, token, at_us=stored.now_us + 11)
    assert verdict.code == "TOKEN_EXPIRED" and "expired" in str(verdict)


def test_a_token_for_another_purpose_is_refused(hub: Hub, stored: TherapyScenario) -> None:
    verdict = _judge(stored, hub, _token(stored, purpose="RESEARCH_EXPORT"))
    assert verdict.code == "TOKEN_WRONG_PURPOSE" and "RESEARCH_EXPORT" in str(verdict)


def test_a_token_for_another_requester_is_refused(hub: Hub, stored: TherapyScenario) -> None:
    verdict = _judge(stored, hub, _token(stored), requester=stored.id_of("researcher"))
    assert verdict.code == "TOKEN_OTHER_REQUESTER"


def test_a_token_not_signed_by_this_therapys_patient_is_refused(
        hub: Hub, stored: TherapyScenario) -> None:
    other = TherapyScenario(hub, cast=stored.actors, patient_hash="b2" * 32)
    other.run_until("issue_card")
    verdict = _judge(stored, hub, _token(stored, card=other.card))
    assert verdict.code == "TOKEN_NOT_THE_PATIENTS"
    # nor a token whose fields were changed after the patient signed it
    forged = replace(_token(stored), expires_at_us=stored.now_us + 10**12)
    assert _judge(stored, hub, forged).code == "SIGNATURE_INVALID"


def test_no_restore_after_the_patient_withdraws_genome_storage(
        hub: Hub, stored: TherapyScenario) -> None:
    token = _token(stored, valid_us=100 * MINUTE_US)
    stored.accept(stored.withdraw("GENOME_STORAGE"))
    assert _judge(stored, hub, token).code == "CONSENT_MISSING"


def test_nothing_stored_nothing_to_restore(hub: Hub, scenario: TherapyScenario) -> None:
    scenario.run_until("sequence")
    assert _judge(scenario, hub, _token(scenario)).code == "NOTHING_STORED"


def test_a_token_survives_its_file_form(stored: TherapyScenario) -> None:
    token = _token(stored)
    assert token_from_json(token_to_json(token)) == token
