"""Turnaround timers on event time, with compressed durations (no sleeping)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pcvhub.streams.timers import DueTimer, TimerPolicy, TurnaroundTimers

from .therapy_builder import QC_STEPS, RECIPE_STEPS, Hub, TherapyScenario

TICK = 1_000  # µs per step of the scenario
FAST = TimerPolicy(
    sample_to_design=timedelta(microseconds=20 * TICK),
    approval_to_release=timedelta(microseconds=20 * TICK),
    release_to_first_dose=timedelta(microseconds=30 * TICK),
    dose_shelf_life=timedelta(microseconds=100 * TICK),
    dose_expiry_notice=timedelta(microseconds=10 * TICK),
    follow_up=timedelta(microseconds=10 * TICK),
    administration_grace=timedelta(microseconds=5 * TICK),
)
SEVERITIES = {"INFO", "WARNING", "CRITICAL"}  # the AlertRaised severities a timer may use


@pytest.fixture
def scenario() -> TherapyScenario:
    # no expiry on the batch record: the policy's shelf life applies
    return TherapyScenario(Hub(), tick_us=TICK, shelf_life_us=None)


def kinds(due: list[DueTimer]) -> set[str]:
    return {d.kind for d in due}


def test_nothing_is_due_before_the_first_anchor(scenario: TherapyScenario) -> None:
    scenario.run_until("order")
    timers = TurnaroundTimers(FAST)
    assert timers.due(scenario.case, scenario.now_us + 10**9) == []
    assert timers.next_deadline(scenario.case) is None


def test_sample_to_design_is_due_only_after_its_deadline(scenario: TherapyScenario) -> None:
    scenario.run_until("collect")
    collected = scenario.now_us
    timers = TurnaroundTimers(FAST)
    deadline = collected + 20 * TICK
    assert timers.next_deadline(scenario.case) == deadline
    assert timers.due(scenario.case, deadline - 1) == []
    [due] = timers.due(scenario.case, deadline)
    assert due.kind == "TAT_SAMPLE_TO_DESIGN" and due.severity == "WARNING"
    assert due.due_at_us == deadline
    assert due.key == f"{scenario.coi}/TAT_SAMPLE_TO_DESIGN/{collected}"
    assert scenario.coi in due.detail
    # the key is stable: asking again gives the same timer (the gatekeeper dedups on it)
    assert timers.due(scenario.case, deadline + 5) == [
        DueTimer(due.key, due.kind, due.severity, due.detail, due.deadline_us)]


def test_a_timer_stops_once_its_awaited_step_happens(scenario: TherapyScenario) -> None:
    scenario.run_until("design")
    timers = TurnaroundTimers(FAST)
    assert "TAT_SAMPLE_TO_DESIGN" not in kinds(timers.due(scenario.case, 10**18))


def test_approval_to_release(scenario: TherapyScenario) -> None:
    scenario.run_until("approve_second")
    approved = scenario.now_us
    timers = TurnaroundTimers(FAST)
    assert kinds(timers.due(scenario.case, approved + 20 * TICK)) == {"TAT_APPROVAL_TO_RELEASE"}
    scenario.run(("start_manufacturing", *RECIPE_STEPS, *QC_STEPS, "release"))
    assert "TAT_APPROVAL_TO_RELEASE" not in kinds(timers.due(scenario.case, 10**18))


def test_release_opens_the_dose_window_and_the_shelf_life(scenario: TherapyScenario) -> None:
    scenario.run_until("release")
    released = scenario.now_us
    timers = TurnaroundTimers(FAST)
    window = timers.due(scenario.case, released + 30 * TICK)
    assert kinds(window) == {"DOSE_WINDOW"} and window[0].severity == "CRITICAL"
    late = timers.due(scenario.case, released + 100 * TICK)
    assert kinds(late) == {"DOSE_WINDOW", "DOSE_EXPIRY_NOTICE", "DOSE_EXPIRED"}
    # one notice and one expiry per dose, each with its own key
    assert len({d.key for d in late}) == 1 + 2 * len(scenario.dose_ids)
    assert {d.severity for d in late} <= SEVERITIES


def test_a_dose_expiry_on_the_batch_record_wins() -> None:
    scenario = TherapyScenario(Hub(), tick_us=TICK, shelf_life_us=50 * TICK)
    scenario.run_until("release")
    expiry = scenario.case.doses[scenario.dose(1)].expiry_us
    assert expiry == scenario.now_us + 50 * TICK
    timers = TurnaroundTimers(FAST)
    assert "DOSE_EXPIRED" not in kinds(timers.due(scenario.case, expiry - 1))
    assert "DOSE_EXPIRED" in kinds(timers.due(scenario.case, expiry))


def test_a_used_or_expired_dose_stops_its_expiry_timers(scenario: TherapyScenario) -> None:
    scenario.run_until("place#2")
    scenario.accept(scenario.expire(2))
    timers = TurnaroundTimers(FAST)
    due = timers.due(scenario.case, 10**18)
    assert any(scenario.dose(1) in d.key for d in due if d.kind == "DOSE_EXPIRED")
    assert not any(scenario.dose(2) in d.key for d in due)


def test_a_scheduled_administration_becomes_overdue(scenario: TherapyScenario) -> None:
    scenario.run_until("schedule#1")
    scheduled = scenario.case.scheduled["ADM-1"].scheduled_for_us
    timers = TurnaroundTimers(FAST)
    assert "ADMINISTRATION_OVERDUE" not in kinds(
        timers.due(scenario.case, scheduled + 5 * TICK - 1))
    [overdue] = [d for d in timers.due(scenario.case, scheduled + 5 * TICK)
                 if d.kind == "ADMINISTRATION_OVERDUE"]
    assert overdue.key == f"{scenario.coi}/ADMINISTRATION_OVERDUE/ADM-1"
    scenario.run(("reserve#1", "dispense#1", "verify_identity#1", "administer#1"))
    assert "ADMINISTRATION_OVERDUE" not in kinds(timers.due(scenario.case, 10**18))


def test_follow_up_is_due_after_each_administration(scenario: TherapyScenario) -> None:
    scenario.run_until("administer#1")
    administered = scenario.now_us
    timers = TurnaroundTimers(FAST)
    assert "FOLLOW_UP_DUE" not in kinds(timers.due(scenario.case, administered + 10 * TICK - 1))
    assert "FOLLOW_UP_DUE" in kinds(timers.due(scenario.case, administered + 10 * TICK))
    scenario.accept(scenario.outcome(1))
    assert "FOLLOW_UP_DUE" not in kinds(timers.due(scenario.case, administered + 10 * TICK))


def test_a_finished_therapy_has_nothing_pending(scenario: TherapyScenario) -> None:
    scenario.full_therapy()
    timers = TurnaroundTimers(FAST)
    assert timers.due(scenario.case, 10**18) == []
    assert timers.next_deadline(scenario.case) is None


def test_policies_are_chosen_per_therapy_type(scenario: TherapyScenario) -> None:
    scenario.run_until("collect")
    slow = TimerPolicy(sample_to_design=timedelta(days=365))
    timers = TurnaroundTimers(FAST, per_therapy={scenario.therapy_type: slow})
    assert timers.due(scenario.case, scenario.now_us + 20 * TICK) == []
    assert TurnaroundTimers(FAST).due(scenario.case, scenario.now_us + 20 * TICK)


def test_a_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="sample_to_design"):
        TimerPolicy(sample_to_design=timedelta(seconds=-1))


def test_the_sweep_alerts_a_stalled_therapy_once_and_a_rebuilt_ledger_remembers(
        scenario: TherapyScenario) -> None:
    """No event arrives after the sample: only the sweep, on processing time, sees the
    deadline pass. Its alert carries no ingress source; a second sweep, or a sweep over
    a ledger rebuilt from the alerts on the log, raises nothing again."""
    from pcvhub.schemas.codec import decode_envelope, decode_payload, to_us
    from pcvhub.streams.gatekeeper import SWEEP_HEADER, Gatekeeper, PartitionLedger
    from pcvhub.streams.rules import default_rules
    from pcvhub.streams.timebounds import SIMULATION
    from pcvhub.topics import SEAL_HEADER
    from pcvhub.trust.issuer import EventIssuer
    from pcvhub.trust.seal import Seal, SealVerdict
    from pcvhub.trust.signing import EventSigner, HybridKeyPair

    from .therapy_builder import decode_inbound

    hub = scenario.hub
    gatekeeper = Gatekeeper(default_rules(hub.registry, bounds=SIMULATION), EventIssuer(EventSigner(
        "hub-gatekeeper", "gk-1", HybridKeyPair.generate())), hub.registry,
        TurnaroundTimers(FAST))
    ledger = PartitionLedger(0)
    for event in scenario.run_until("collect"):
        gatekeeper.replay_accepted(event, ledger)
    deadline = scenario.now_us + 20 * TICK
    assert gatekeeper.sweep(ledger, deadline - 1) == []
    [alert] = gatekeeper.sweep(ledger, deadline)
    assert alert.topic == "alerts" and alert.source is None
    [sealed] = gatekeeper.seal([alert]).at(0)
    seal = Seal.decode(dict(sealed.headers)[SEAL_HEADER])
    assert dict(sealed.headers)[SWEEP_HEADER] == str(deadline).encode()
    assert seal.verdict is SealVerdict.ALERT and seal.source is None
    env = decode_envelope(alert.value)
    _, payload = decode_payload(env.schema_fingerprint, env.payload)
    assert payload["code"] == "TAT_SAMPLE_TO_DESIGN" and to_us(payload["due_at"]) == deadline
    assert gatekeeper.sweep(ledger, deadline + 10 * TICK) == []
    rebuilt = PartitionLedger(0)
    for event in scenario.log:
        gatekeeper.replay_accepted(event, rebuilt)
    gatekeeper.replay_alert(decode_inbound(alert.value), rebuilt)
    assert gatekeeper.sweep(rebuilt, deadline + 10 * TICK) == []
    # event time is the lower bound: a clock behind the partition never hides a deadline
    late = PartitionLedger(0, watermark_us=deadline)
    for event in scenario.log:
        gatekeeper.replay_accepted(event, late)
    assert len(gatekeeper.sweep(late, 0)) == 1
