"""A connector flags what it enters late, so production bounds do not refuse a backlog.

Given a source record (an HL7 message from an interface backlog, a logger file uploaded
after the trip) that occurred further back than the deployment's late-entry bound, when a
connector issues it, then the event carries the signed late-entry flag with a reason
naming the connector and how late it is, and R1 accepts it under the production bounds;
a contemporaneous record carries no flag, and a source's own reason is kept.
"""

from __future__ import annotations

from pcvhub.connectors.core import EventRequest, late_entry_reason
from pcvhub.demo.therapy import decode_inbound
from pcvhub.streams.timebounds import HOUR_US, PRODUCTION, SIMULATION, SigningTime
from pcvhub.trust.issuer import now_us

from .therapy_builder import Hub, TherapyScenario

PAYLOAD = {"time_point": "week-12", "recist_response": "PR", "ctdna_status": "DETECTED",
           "survival_status": "ALIVE"}


def request(hours_ago: float, reason: str | None = None) -> EventRequest:
    return EventRequest("OutcomeRecorded", "PCV-X", PAYLOAD,
                        occurred_at_us=now_us() - int(hours_ago * HOUR_US), late_entry=reason)


def test_a_record_older_than_the_bound_is_flagged_with_the_connectors_reason() -> None:
    reason = late_entry_reason(request(30), "emr-mllp", PRODUCTION, now_us())
    assert reason is not None and "emr-mllp" in reason and "30 h after it occurred" in reason
    assert late_entry_reason(request(2), "emr-mllp", PRODUCTION, now_us()) is None
    assert late_entry_reason(request(30), "emr-mllp", SIMULATION, now_us()) is None
    own = late_entry_reason(request(30, "replayed after the outage"), "emr-mllp", PRODUCTION,
                            now_us())
    assert own == "replayed after the outage"


def test_the_connectors_flag_passes_r1_under_the_production_bounds() -> None:
    therapy = TherapyScenario(Hub())  # its story occurred weeks ago (the builders' clock)
    therapy.run_until("issue_card")
    old = EventRequest("ConsentGranted", therapy.coi, {
        "scope": "TREATMENT", "consent_document_ref": "DocumentReference/backlog",
        "expires_at": None, "consent_form_version": "v3.2"}, occurred_at_us=therapy.now_us)
    issuer = therapy.actors["physician"].issuer
    rule = SigningTime(therapy.hub.registry, PRODUCTION)
    for late_entry, code in ((None, "LATE_ENTRY_UNFLAGGED"),
                             (late_entry_reason(old, issuer.producer, PRODUCTION, now_us()),
                              "OK")):
        issued = issuer.issue(old.event_type, old.coi, old.payload,
                              occurred_at_us=old.occurred_at_us, prev_hash=therapy.case.head,
                              late_entry=late_entry)
        verdict = rule.check(decode_inbound(issued.wire), therapy.case)
        assert (verdict.code if not verdict.accepted else "OK") == code, verdict
