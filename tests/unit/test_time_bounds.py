"""R1's clock under the production bounds: back-dating is refused, with both times named.

Given a therapy whose events occurred weeks ago (the builders' simulated clock) and were
signed now (the wall clock), when a key is revoked, or revoked as compromised since an
instant, then anything signed after that instant is refused whatever occurred-at it claims;
an event dated after its own signing, or signed far from when the broker appended it, is
refused; an honest event passes. Under the simulation profile the same back-dated event is
judged at its occurred-at, as the demo's story needs.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from pcvhub.streams.event import InboundEvent, SourcePosition
from pcvhub.streams.rules import Consent, default_rules
from pcvhub.streams.timebounds import MINUTE_US, PRODUCTION, SIMULATION, SigningTime
from pcvhub.times import utc_iso
from pcvhub.trust.issuer import now_us
from pcvhub.trust.registry import revocation_payload

from .therapy_builder import Hub, TherapyScenario

TREATMENT_CONSENT = {"scope": "TREATMENT",
                     "consent_document_ref": "DocumentReference/consent-TREATMENT",
                     "expires_at": None, "consent_form_version": "v3.2"}


@pytest.fixture
def therapy() -> TherapyScenario:
    """A therapy on the builders' simulated clock: its events occurred weeks before they
    are signed (now), as a back-dating producer's would."""
    scenario = TherapyScenario(Hub())
    scenario.run_until("issue_card")
    return scenario


@pytest.fixture
def today() -> TherapyScenario:
    """A therapy whose story runs over the last half hour: honest, contemporaneous events."""
    start = now_us() - 30 * MINUTE_US
    scenario = TherapyScenario(Hub(start_us=start), start_us=start)
    scenario.run_until("issue_card")
    return scenario


def appended(event: InboundEvent, at_us: int) -> InboundEvent:
    """The event as the gatekeeper reads it off ingress: with the broker's append time."""
    return replace(event, source=SourcePosition("pcvhub.ingress.fhir", 0, 7, at_us))


def revoke(therapy: TherapyScenario, who: str, at_us: int, compromised_since_us: int | None
           ) -> None:
    party = therapy.actors[who]
    therapy.hub.registry.apply("KeyRevoked", {
        **revocation_payload(party.actor_id, party.key_id, at_us, "COMPROMISED"),
        "compromised_since": compromised_since_us})


def test_an_honest_event_passes_every_rule_under_the_production_bounds(today) -> None:
    event = today.consent("TREATMENT", by="physician")
    rules = default_rules(today.hub.registry, bounds=PRODUCTION)
    verdict = rules.check(appended(event, event.envelope.signed_at_us + 2_000_000),
                          today.case)
    assert verdict.accepted, verdict


def test_a_back_dated_event_signed_after_the_compromise_is_refused_naming_both_times(
        therapy) -> None:
    event = therapy.consent("TREATMENT", by="physician")  # occurred weeks ago, signed now
    compromised = now_us() - 60 * MINUTE_US
    revoke(therapy, "physician", now_us() - MINUTE_US, compromised)
    assert event.envelope.occurred_at_us < compromised, "the event claims a time before it"
    verdict = SigningTime(therapy.hub.registry, PRODUCTION).check(
        appended(event, event.envelope.signed_at_us), therapy.case)
    assert not verdict.accepted and verdict.code == "KEY_COMPROMISED", verdict
    assert utc_iso(compromised) in verdict.reason
    assert utc_iso(event.envelope.signed_at_us) in verdict.reason
    assert utc_iso(event.envelope.occurred_at_us) in verdict.reason
    # the whole rule set refuses it too, by R1
    verdict = default_rules(therapy.hub.registry, bounds=PRODUCTION).check(event, therapy.case)
    assert (verdict.rule, verdict.code) == ("R1", "KEY_COMPROMISED"), verdict
    # on the simulated clock the story has it occur before the compromise: accepted
    assert SigningTime(therapy.hub.registry, SIMULATION).check(event, therapy.case).accepted


def test_a_back_dated_event_signed_after_a_revocation_is_refused(therapy) -> None:
    event = therapy.consent("TREATMENT", by="physician")
    revoked = now_us() - MINUTE_US
    revoke(therapy, "physician", revoked, None)
    verdict = SigningTime(therapy.hub.registry, PRODUCTION).check(event, therapy.case)
    assert not verdict.accepted and verdict.code == "KEY_REVOKED", verdict
    assert utc_iso(revoked) in verdict.reason and "signed at" in verdict.reason


def test_an_event_dated_after_its_signing_is_refused(therapy) -> None:
    event = therapy.issue("physician", "ConsentGranted", TREATMENT_CONSENT,
                          occurred_at_us=now_us() + 24 * 60 * MINUTE_US)
    verdict = SigningTime(therapy.hub.registry, PRODUCTION).check(event, therapy.case)
    assert not verdict.accepted and verdict.code == "OCCURRED_AFTER_SIGNING", verdict
    assert SigningTime(therapy.hub.registry, SIMULATION).check(event, therapy.case).accepted


@pytest.mark.parametrize("offset_min", [-90, 90])
def test_an_event_signed_far_from_its_append_time_is_refused(today, offset_min) -> None:
    event = today.consent("TREATMENT", by="physician")
    late = appended(event, event.envelope.signed_at_us + offset_min * MINUTE_US)
    verdict = SigningTime(today.hub.registry, PRODUCTION).check(late, today.case)
    assert not verdict.accepted and verdict.code == "SIGNED_OUTSIDE_WINDOW", verdict
    assert "60 min apart" in verdict.reason
    near = appended(event, event.envelope.signed_at_us + 59 * MINUTE_US)
    assert SigningTime(today.hub.registry, PRODUCTION).check(near, today.case).accepted


# -- late entries (envelope v2) ---------------------------------------------------------

def treatment_consent(scenario: TherapyScenario, *, late_entry: str | None = None
                      ) -> InboundEvent:
    """The physician's record of the treatment consent, at the scenario's clock."""
    return scenario.issue("physician", "ConsentGranted", TREATMENT_CONSENT,
                          late_entry=late_entry)


def test_an_event_older_than_the_late_entry_bound_needs_the_flag(therapy) -> None:
    event = treatment_consent(therapy)  # occurred weeks before it is signed, no flag
    verdict = default_rules(therapy.hub.registry, bounds=PRODUCTION).check(
        appended(event, event.envelope.signed_at_us), therapy.case)
    assert (verdict.rule, verdict.code) == ("R1", "LATE_ENTRY_UNFLAGGED"), verdict
    assert utc_iso(event.envelope.occurred_at_us) in verdict.reason
    assert utc_iso(event.envelope.signed_at_us) in verdict.reason
    assert "late-entry bound is 24 h" in verdict.reason
    # on the simulated clock weeks-old stories are the point: no flag needed
    assert SigningTime(therapy.hub.registry, SIMULATION).check(event, therapy.case).accepted


def test_a_late_entry_with_its_reason_is_accepted_under_the_production_bounds(therapy
                                                                              ) -> None:
    event = treatment_consent(therapy, late_entry="paper form found in the clinic's file")
    assert event.envelope.version == 2 and event.envelope.late_entry is not None
    verdict = default_rules(therapy.hub.registry, bounds=PRODUCTION).check(
        appended(event, event.envelope.signed_at_us + 1_000_000), therapy.case)
    assert verdict.accepted, verdict


@pytest.mark.parametrize("bounds", [PRODUCTION, SIMULATION], ids=lambda b: b.name)
def test_a_late_entry_with_a_blank_reason_is_refused(today, bounds) -> None:
    event = treatment_consent(today, late_entry="   ")
    verdict = SigningTime(today.hub.registry, bounds).check(event, today.case)
    assert not verdict.accepted and verdict.code == "LATE_ENTRY_UNJUSTIFIED", verdict


def test_a_late_entry_signed_after_the_compromise_is_refused_as_compromised(therapy
                                                                            ) -> None:
    """The flag is no way round a revocation: it only says the record is late."""
    event = treatment_consent(therapy, late_entry="entered from the paper chart")
    revoke(therapy, "physician", now_us() - MINUTE_US, now_us() - 60 * MINUTE_US)
    verdict = SigningTime(therapy.hub.registry, PRODUCTION).check(event, therapy.case)
    assert not verdict.accepted and verdict.code == "KEY_COMPROMISED", verdict


# -- consent withdrawals against signed time (R7) ---------------------------------------

def test_a_back_dated_event_signed_after_a_withdrawal_is_refused_naming_the_times(today
                                                                                  ) -> None:
    today.accept(today.consent("RESEARCH"))
    withdrawal = today.accept(today.withdraw("RESEARCH"))
    # signed now, after the withdrawal, claiming to have occurred a second before it
    event = today.issue("researcher", "ResearchDataRequested",
                        today.research_use("RQ-9").payload,
                        occurred_at_us=withdrawal.occurred_at_us - 1_000_000)
    assert event.envelope.signed_at_us > withdrawal.occurred_at_us
    verdict = default_rules(today.hub.registry, bounds=PRODUCTION).check(
        appended(event, event.envelope.signed_at_us), today.case)
    assert (verdict.rule, verdict.code) == ("R7", "CONSENT_WITHDRAWN"), verdict
    for instant in (withdrawal.occurred_at_us, event.envelope.signed_at_us,
                    event.envelope.occurred_at_us):
        assert utc_iso(instant) in verdict.reason
    # the simulated clock judges the story's own time: it occurred while consent held
    assert Consent(bounds=SIMULATION).check(event, today.case).accepted


def test_an_event_signed_before_the_withdrawal_still_counts(today) -> None:
    today.accept(today.consent("RESEARCH"))
    request = today.research_use("RQ-1")  # signed now, before the withdrawal below
    today.now_us = now_us() + 60_000_000  # the withdrawal happens (and is signed) later
    withdrawal = today.withdraw("RESEARCH")
    today.accept(withdrawal)
    assert request.envelope.signed_at_us < withdrawal.occurred_at_us
    assert Consent(bounds=PRODUCTION).check(request, today.case).accepted
