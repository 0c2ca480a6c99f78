"""Alerts get owners: acknowledged by someone who acts on the therapy, resolved by someone
answerable for it, each an event on the therapy's chain that the gatekeeper judges."""

from __future__ import annotations

from datetime import timedelta

from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.schemas.envelope import SignatureMeaning
from pcvhub.streams.case import AlertStatus
from pcvhub.streams.event import SourcePosition
from pcvhub.streams.gatekeeper import Gatekeeper, PartitionLedger
from pcvhub.streams.rules import default_rules
from pcvhub.streams.timebounds import SIMULATION
from pcvhub.streams.timers import TimerPolicy, TurnaroundTimers
from pcvhub.trust.issuer import EventIssuer

from .sealing import gatekeeper_signer, sealed
from .therapy_builder import Hub, TherapyScenario, decode_inbound

TICK = 1_000
FAST = TimerPolicy(sample_to_design=timedelta(microseconds=20 * TICK))


class Ward:
    """A gatekeeper with one stalled therapy whose TAT alert the sweep raised."""

    def __init__(self) -> None:
        hub = Hub()
        signer = gatekeeper_signer()
        hub.register_gatekeeper(signer)  # first: it seals everything after it
        self.scenario = TherapyScenario(hub, tick_us=TICK)
        rules = default_rules(hub.registry, bounds=SIMULATION)
        self.gatekeeper = Gatekeeper(rules, EventIssuer(signer),
                                     hub.registry, TurnaroundTimers(FAST))
        self.ledger = PartitionLedger(0)
        for event in self.scenario.run_until("collect"):
            self.gatekeeper.replay_accepted(event, self.ledger)
        self.now_us = self.scenario.now_us + 30 * TICK
        [alert] = self.gatekeeper.sweep(self.ledger, self.now_us)
        self.alert = alert
        self.alert_id = decode_inbound(alert.value).payload["alert_id"]
        self.offset = 0
        self.accepted: list = []

    @property
    def case(self):  # noqa: ANN201 - the gatekeeper's case of the therapy
        return self.ledger.case(self.scenario.coi)

    def send(self, who: str, event_type: str, payload: dict,
             meaning: SignatureMeaning = SignatureMeaning.AUTHORED) -> dict | None:
        """Judge one event; None if accepted, else the refusal's payload."""
        self.now_us += TICK
        issued = self.scenario.actors[who].issuer.issue(
            event_type, self.scenario.coi, payload, occurred_at_us=self.now_us,
            prev_hash=self.case.head, meaning=meaning)
        self.offset += 1
        *_, primary = self.gatekeeper.judge(issued.wire, issued.key,
                                            SourcePosition("ingress.direct", 0, self.offset),
                                            self.ledger)
        if primary.topic == "events":
            self.accepted.append(decode_inbound(primary.value))
            return None
        env = decode_envelope(primary.value)
        return decode_payload(env.schema_fingerprint, env.payload)[1]


def resolve(ward: Ward, who: str, alert_id: str) -> dict | None:
    return ward.send(who, "AlertResolved", {
        "alert_id": alert_id, "resolution": "CORRECTED",
        "reason": "sequencing lab re-ran the library; design due tomorrow"},
        SignatureMeaning.RESPONSIBLE)


def test_an_alert_is_acknowledged_then_resolved_and_then_closed_for_good() -> None:
    ward = Ward()
    assert ward.case.alerts == {ward.alert_id: AlertStatus.OPEN}
    assert ward.send("nurse", "AlertAcknowledged",
                     {"alert_id": ward.alert_id, "note": "calling the lab"}) is None
    assert ward.case.alerts[ward.alert_id] is AlertStatus.ACKNOWLEDGED
    assert resolve(ward, "physician", ward.alert_id) is None
    assert ward.case.alerts[ward.alert_id] is AlertStatus.RESOLVED
    again = resolve(ward, "physician", ward.alert_id)
    assert again is not None and again["reason_code"] == "NO_OPEN_ALERT"
    late_ack = ward.send("nurse", "AlertAcknowledged", {"alert_id": ward.alert_id,
                                                        "note": None})
    assert late_ack is not None and late_ack["reason_code"] == "NO_OPEN_ALERT"


def test_only_real_alerts_of_this_therapy_and_only_answerable_roles() -> None:
    ward = Ward()
    unknown = ward.send("nurse", "AlertAcknowledged", {"alert_id": "no-such-alert",
                                                       "note": None})
    assert unknown is not None and (unknown["rule"], unknown["reason_code"]) == (
        "R4", "NO_OPEN_ALERT")
    by_nurse = resolve(ward, "nurse", ward.alert_id)  # a nurse may own it, not close it
    assert by_nurse is not None and by_nurse["rule"] == "R2"
    unsigned_responsibility = ward.send("physician", "AlertResolved", {
        "alert_id": ward.alert_id, "resolution": "NO_ACTION_NEEDED", "reason": "x"})
    assert unsigned_responsibility is not None and unsigned_responsibility["rule"] == "R2"
    assert ward.case.alerts[ward.alert_id] is AlertStatus.OPEN


def test_a_rebuilt_ledger_knows_the_alert_is_resolved() -> None:
    ward = Ward()
    assert ward.send("nurse", "AlertAcknowledged", {"alert_id": ward.alert_id,
                                                    "note": None}) is None
    assert resolve(ward, "physician", ward.alert_id) is None
    rebuilt = PartitionLedger(0)
    ward.gatekeeper.replay_alert(decode_inbound(ward.alert.value), rebuilt)  # alerts first
    for event in [*ward.scenario.log, *ward.accepted]:
        ward.gatekeeper.replay_accepted(event, rebuilt)
    assert rebuilt.case(ward.scenario.coi).alerts == {ward.alert_id: AlertStatus.RESOLVED}
    assert ward.gatekeeper.sweep(rebuilt, ward.now_us) == []  # and is never raised again


def test_the_alerts_view_shows_owner_and_resolution(tmp_path) -> None:  # noqa: ANN001
    from pcvhub.log.verify import RawRecord
    from pcvhub.projections.store import connect
    from pcvhub.topics import partition_for
    from pcvhub.trust.registry import REGISTRY_COI

    from .test_projection_scenario import PARTITIONS, anchor_of, project

    ward = Ward()
    hub = ward.scenario.hub
    assert ward.send("nurse", "AlertAcknowledged",
                     {"alert_id": ward.alert_id, "note": "calling the lab"}) is None
    assert resolve(ward, "physician", ward.alert_id) is None
    offsets: dict[tuple[str, int], int] = {}

    def at(topic: str, coi: str, wire: bytes) -> RawRecord:
        partition = partition_for(coi.encode(), PARTITIONS)
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        return RawRecord.at(topic, partition, offset, coi.encode(), wire)

    coi = ward.scenario.coi
    records = [*(at("events", REGISTRY_COI, e.raw) for e in hub.registry_log),
               *(at("events", coi, e.raw) for e in ward.scenario.log),
               at("alerts", coi, ward.alert.value),
               *(at("events", coi, e.raw) for e in ward.accepted)]
    project(tmp_path / "p.duckdb", sealed(ward.gatekeeper.issuer.signer, records),
            anchor_of(hub))
    con = connect(tmp_path / "p.duckdb", read_only=True)
    try:
        row = con.execute("SELECT status, acknowledged_by, owner_note, resolved_by, resolution, "
                          "resolution_reason FROM alerts WHERE alert_id = ?",
                          [ward.alert_id]).fetchone()
        open_count = con.execute("SELECT open_alerts FROM case_status WHERE coi = ?",
                                 [coi]).fetchone()
    finally:
        con.close()
    assert row == ("RESOLVED", ward.scenario.actors["nurse"].actor_id, "calling the lab",
                   ward.scenario.actors["physician"].actor_id, "CORRECTED",
                   "sequencing lab re-ran the library; design due tomorrow")
    assert open_count == (0,)
