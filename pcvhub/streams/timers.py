"""Turnaround timers: deadlines on event time that raise alerts, never rejections.

A timer has an *anchor* (a step that happened: the first sample collected, the design
approved, a batch released, an administration scheduled, a dose administered) and an
*awaited step* (the design produced, the batch released, the first administration, the
scheduled administration, an outcome recorded). It is due
when event time (the partition's watermark, not the wall clock) has passed
``anchor + duration`` and the awaited step has not happened. Durations come from a
``TimerPolicy`` chosen per therapy type, so tests can compress a month into microseconds.

Each due timer has a stable ``key`` (``"<coi>/<kind>/<anchor>"``): the gatekeeper derives
the alert id from it, so a timer alerts once however often ``due`` is asked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pcvhub.streams.case import USABLE_DOSE, CaseState, DoseStatus, Stage

INFO = "INFO"
WARNING = "WARNING"
CRITICAL = "CRITICAL"

_UNUSED_DOSE = USABLE_DOSE | {DoseStatus.DISPENSED}


def _iso(us: int) -> str:
    """Event time as people read it in an alert (UTC, to the minute)."""
    return datetime.fromtimestamp(us / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _us(span: timedelta) -> int:
    return span // timedelta(microseconds=1)


@dataclass(frozen=True)
class TimerPolicy:
    """Deadlines of one therapy type (event time).

    :param sample_to_design: first sample collected -> neoantigen design produced.
    :param approval_to_release: design approved (second approver) -> batch released.
    :param release_to_first_dose: batch released -> first administration (dose window).
    :param dose_shelf_life: release -> dose expiry, for doses whose record has no expiry.
    :param dose_expiry_notice: how long before a dose's expiry to warn that it is unused.
    :param follow_up: administration -> outcome recorded (follow-up due).
    :param administration_grace: scheduled time -> that administration recorded.
    """

    sample_to_design: timedelta = timedelta(days=28)
    approval_to_release: timedelta = timedelta(days=21)
    release_to_first_dose: timedelta = timedelta(days=14)
    dose_shelf_life: timedelta = timedelta(days=90)
    dose_expiry_notice: timedelta = timedelta(days=3)
    follow_up: timedelta = timedelta(days=42)
    administration_grace: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        for name, span in vars(self).items():
            if span < timedelta(0):
                raise ValueError(f"timer policy {name} is negative ({span}); use a duration >= 0")


DEFAULT_POLICY = TimerPolicy()


@dataclass(frozen=True)
class DueTimer:
    """One passed deadline whose awaited step has not happened."""

    key: str
    kind: str
    severity: str
    detail: str
    deadline_us: int

    @property
    def due_at_us(self) -> int:
        """When the awaited step was due (AlertRaised ``due_at``)."""
        return self.deadline_us


@dataclass(frozen=True)
class _Deadline:
    kind: str
    anchor: str
    deadline_us: int
    severity: str
    detail: str


class TurnaroundTimers:
    """Computes the due timers of a case from its state; holds no state of its own.

    :param policy: the default policy (``DEFAULT_POLICY`` if None).
    :param per_therapy: policies by the therapy type named at enrolment.
    """

    def __init__(self, policy: TimerPolicy | None = None,
                 per_therapy: Mapping[str, TimerPolicy] | None = None) -> None:
        self.policy = policy or DEFAULT_POLICY
        self.per_therapy = dict(per_therapy or {})

    def policy_for(self, case: CaseState) -> TimerPolicy:
        if case.therapy_type is not None:
            return self.per_therapy.get(case.therapy_type, self.policy)
        return self.policy

    def due(self, case: CaseState, now_us: int) -> list[DueTimer]:
        """Every pending deadline of ``case`` that event time ``now_us`` has reached."""
        return [
            DueTimer(f"{case.coi}/{d.kind}/{d.anchor}", d.kind, d.severity, d.detail,
                     d.deadline_us)
            for d in self._pending(case)
            if d.deadline_us <= now_us
        ]

    def next_deadline(self, case: CaseState) -> int | None:
        """The earliest pending deadline of ``case`` (event time, µs), or None."""
        return min((d.deadline_us for d in self._pending(case)), default=None)

    def _pending(self, case: CaseState) -> Iterator[_Deadline]:
        policy = self.policy_for(case)
        entered = case.stage_entered_us
        coi = case.coi

        collected = entered.get(Stage.COLLECTED)
        if collected is not None and Stage.DESIGNED not in entered:
            yield _Deadline(
                "TAT_SAMPLE_TO_DESIGN", str(collected),
                collected + _us(policy.sample_to_design), WARNING,
                f"therapy {coi}: no neoantigen design within {policy.sample_to_design} of "
                "sample collection; chase the sequencing lab and the design service",
            )
        approved = entered.get(Stage.APPROVED)
        if approved is not None and Stage.RELEASED not in entered:
            yield _Deadline(
                "TAT_APPROVAL_TO_RELEASE", str(approved),
                approved + _us(policy.approval_to_release), WARNING,
                f"therapy {coi}: no batch released within {policy.approval_to_release} of "
                "design approval; check manufacturing and QC with the manufacturer",
            )
        released = entered.get(Stage.RELEASED)
        if released is not None and Stage.ADMINISTERED not in entered:
            yield _Deadline(
                "DOSE_WINDOW", str(released),
                released + _us(policy.release_to_first_dose), CRITICAL,
                f"therapy {coi}: first dose not administered within "
                f"{policy.release_to_first_dose} of batch release; schedule the patient "
                "or ask the manufacturer about the dose window",
            )
        for dose_id, dose in case.doses.items():
            if dose.status not in _UNUSED_DOSE:
                continue
            expiry = dose.expiry_us
            if expiry is None:
                if released is None:
                    continue
                expiry = released + _us(policy.dose_shelf_life)
            notice = expiry - _us(policy.dose_expiry_notice)
            if notice < expiry:
                yield _Deadline(
                    "DOSE_EXPIRY_NOTICE", f"{dose_id}@{expiry}", notice, INFO,
                    f"therapy {coi}: dose {dose_id} ({dose.status}) expires at {_iso(expiry)} "
                    "and is not yet administered; plan its administration or its destruction",
                )
            yield _Deadline(
                "DOSE_EXPIRED", f"{dose_id}@{expiry}", expiry, WARNING,
                f"therapy {coi}: dose {dose_id} passed its expiry ({_iso(expiry)}) unused; "
                "quarantine and destroy it, and ask the manufacturer for a replacement",
            )
        fulfilled = {a.administration_id for a in case.administrations.values()}
        for admin_id, visit in case.scheduled.items():
            if admin_id in fulfilled:
                continue
            yield _Deadline(
                "ADMINISTRATION_OVERDUE", admin_id,
                visit.scheduled_for_us + _us(policy.administration_grace), WARNING,
                f"therapy {coi}: administration {admin_id} (dose {visit.dose_number}) was "
                f"scheduled for {_iso(visit.scheduled_for_us)} at site {visit.site} and is not "
                f"recorded within {policy.administration_grace}; contact the patient and "
                "reschedule, or record the administration",
            )
        last_outcome = case.last_outcome_at_us
        for admin_id, admin in case.administrations.items():
            if last_outcome is not None and last_outcome >= admin.occurred_at_us:
                continue
            yield _Deadline(
                "FOLLOW_UP_DUE", admin_id,
                admin.occurred_at_us + _us(policy.follow_up), INFO,
                f"therapy {coi}: no outcome recorded within {policy.follow_up} of the "
                f"administration {admin_id} (dose {admin.dose_id}); record the follow-up "
                "assessment in the EMR",
            )
