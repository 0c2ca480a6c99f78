"""A study's chain: parties compute only the spec an ethics approver approved on it.

Given a researcher, an ethics approver and a study chain judged by the gatekeeper's rules,
when the chain is folded as a party folds it, then the requested spec is computable once
approved; not before, not after the request is altered (another statistic, another
threshold: another digest), not once the approval expired, not when the requester approves
their own study, and not when someone without the ETHICS_APPROVER role signs the approval.
A recorded run and its published result must carry the same digest. Projected, the
chain's events are on the log and the chain is not listed as a therapy.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pcvhub.ids import study_coi
from pcvhub.mpc.chain import (
    StudyChain,
    approval_payload,
    fold_study_chain,
    request_payload,
    run_payloads,
)
from pcvhub.mpc.study import Statistic, StudyRefused, StudySpec
from pcvhub.schemas.policy import meaning_for
from pcvhub.streams.case import CaseState
from pcvhub.streams.event import InboundEvent
from pcvhub.trust.canonical import chain_digest

from .therapy_builder import DAY_US, T0_US, Hub, Party, decode_inbound

SPEC = StudySpec("melanoma-2026", (Statistic.RESPONSE_BY_RECIST, Statistic.OVERALL_SURVIVAL_KM),
                 ("KYOTO01", "OSAKA02", "TOKYO03"), ("C43",), small_cell_threshold=5)


class StudyLog:
    """One study chain, every event judged by the gatekeeper's rules before it counts."""

    def __init__(self) -> None:
        self.hub = Hub()
        self.researcher = self.hub.register("dr-researcher", {"RESEARCHER"}, "UNIV-RES")
        self.approver = self.hub.register("irb-member", {"ETHICS_APPROVER"}, "IRB")
        self.case = CaseState.new(study_coi(SPEC.study_id))
        self.events: list[InboundEvent] = []
        self.now_us = T0_US

    def publish(self, by: Party, event_type: str, payload: dict[str, Any]) -> InboundEvent:
        self.now_us += 1_000_000
        event = decode_inbound(by.issuer.issue(
            event_type, self.case.coi, payload, occurred_at_us=self.now_us,
            prev_hash=self.case.head, meaning=meaning_for(event_type)).wire)
        verdict = self.hub.judge(event, self.case)
        assert verdict.accepted, verdict
        self.case.apply(event, chain_digest(event.envelope))
        self.events.append(event)
        return event

    def fold(self) -> StudyChain:
        return fold_study_chain(SPEC.study_id, ((e, self.hub.registry.roles_of(e.producer))
                                                for e in self.events))


@pytest.fixture
def log() -> StudyLog:
    return StudyLog()


def test_an_approved_spec_is_what_parties_compute(log: StudyLog) -> None:
    log.publish(log.researcher, "StudyRequested", request_payload(SPEC, "response in C43"))
    with pytest.raises(StudyRefused, match="is not approved; an ethics approver must"):
        log.fold().approved(log.now_us)
    log.publish(log.approver, "StudyApproved", approval_payload(SPEC, "IRB-2026-017"))
    assert log.fold().approved(log.now_us) == SPEC


def test_a_request_altered_after_its_approval_is_refused(log: StudyLog) -> None:
    log.publish(log.researcher, "StudyRequested", request_payload(SPEC, "response in C43"))
    log.publish(log.approver, "StudyApproved", approval_payload(SPEC, "IRB-2026-017"))
    for altered in (replace(SPEC, statistics=(*SPEC.statistics,
                                              Statistic.VEIN_TO_VEIN_QUARTILES)),
                    replace(SPEC, small_cell_threshold=1)):
        log.publish(log.researcher, "StudyRequested", request_payload(altered, "more"))
        with pytest.raises(StudyRefused, match=f"{altered.digest().hex()[:12]} .* is not "
                                               "approved; an earlier spec was"):
            log.fold().approved(log.now_us)


def test_an_expired_approval_stops_later_runs(log: StudyLog) -> None:
    log.publish(log.researcher, "StudyRequested", request_payload(SPEC, "response in C43"))
    until = log.now_us + 30 * DAY_US
    log.publish(log.approver, "StudyApproved", approval_payload(SPEC, "IRB-1", until))
    assert log.fold().approved(until - 1) == SPEC
    with pytest.raises(StudyRefused, match="expired"):
        log.fold().approved(until)


def test_the_requester_cannot_approve_their_own_study(log: StudyLog) -> None:
    both = log.hub.register("dr-both", {"RESEARCHER", "ETHICS_APPROVER"}, "UNIV-RES")
    log.publish(both, "StudyRequested", request_payload(SPEC, "response in C43"))
    log.publish(both, "StudyApproved", approval_payload(SPEC, "IRB-self"))
    with pytest.raises(StudyRefused, match="dr-both requested this spec and may not approve"):
        log.fold().approved(log.now_us)


def test_an_approval_counts_only_from_an_ethics_approver(log: StudyLog) -> None:
    """The gatekeeper refuses it (R2); a chain folded from a log that holds one anyway (an
    older deployment, a broken rule) still does not count it."""
    log.publish(log.researcher, "StudyRequested", request_payload(SPEC, "response in C43"))
    other = log.hub.register("dr-colleague", {"RESEARCHER"}, "UNIV-RES")
    forged = decode_inbound(other.issuer.issue(
        "StudyApproved", log.case.coi, approval_payload(SPEC, "none"),
        occurred_at_us=log.now_us + 1, prev_hash=log.case.head,
        meaning=meaning_for("StudyApproved")).wire)
    verdict = log.hub.judge(forged, log.case)
    assert (verdict.rule, verdict.code) == ("R2", "ROLE_NOT_ALLOWED"), verdict
    chain = fold_study_chain(SPEC.study_id, [
        (log.events[0], frozenset({"RESEARCHER"})), (forged, frozenset({"RESEARCHER"}))])
    with pytest.raises(StudyRefused, match="not an ETHICS_APPROVER"):
        chain.approved(log.now_us)


def test_a_request_whose_parts_disagree_with_its_spec_is_not_folded(log: StudyLog) -> None:
    lying = {**request_payload(SPEC, "response in C43"), "small_cell_threshold": 11}
    log.publish(log.researcher, "StudyRequested", lying)
    with pytest.raises(StudyRefused, match="small_cell_threshold disagree"):
        log.fold().approved(log.now_us)


def test_a_run_and_its_result_carry_one_digest(log: StudyLog) -> None:
    log.publish(log.researcher, "StudyRequested", request_payload(SPEC, "response in C43"))
    log.publish(log.approver, "StudyApproved", approval_payload(SPEC, "IRB-2026-017"))
    result = {"study_id": SPEC.study_id, "statistics": {}}
    run, published = run_payloads(SPEC, "run-1", ["response_by_recist"], T0_US, result)
    log.publish(log.researcher, "StudyRunCompleted", run)
    log.publish(log.researcher, "StudyResultPublished", {
        **published, "run_id": "run-1", "result": json.dumps({**result, "altered": 1})})
    log.publish(log.researcher, "StudyResultPublished", published)
    chain = log.fold()
    assert list(chain.runs) == ["run-1"] and chain.runs["run-1"].parties == SPEC.sites
    assert chain.results == {"run-1": result}
    assert len(chain.ignored) == 1 and "does not have the digest" in chain.ignored[0]


def test_a_study_chain_is_projected_as_events_and_never_listed_as_a_therapy(
        tmp_path: Path) -> None:
    """Through the gatekeeper into a projection: the study's events are accepted on the
    canonical log, and the case-status view (one row per therapy) does not list its chain."""
    from pcvhub.projections.store import connect
    from pcvhub.trust.signing import EventSigner, HybridKeyPair

    from .test_projection_scenario import ScriptedLog, project

    gatekeeper = EventSigner("hub-gatekeeper", "hub-gatekeeper-k1", HybridKeyPair.generate())
    log = StudyLog()
    log.hub.register_gatekeeper(gatekeeper)
    log.publish(log.researcher, "StudyRequested", request_payload(SPEC, "response in C43"))
    log.publish(log.approver, "StudyApproved", approval_payload(SPEC, "IRB-2026-017"))
    scripted = ScriptedLog(log.hub, gatekeeper)
    for event in log.events:
        scripted.send(event)
    path = tmp_path / "hub.duckdb"
    project(path, scripted.gatekeep(), scripted.anchor)
    con = connect(path, read_only=True)
    try:
        on_chain = con.execute(
            "SELECT event_type FROM log.envelopes WHERE log_topic = 'events' AND coi = ? "
            "ORDER BY log_offset", [log.case.coi]).fetchall()
        listed = con.execute("SELECT count(*) FROM case_status").fetchone()
    finally:
        con.close()
    assert [t for (t,) in on_chain] == ["StudyRequested", "StudyApproved"]
    assert listed == (0,)
