"""The gatekeeper as a real `pcvhub worker` process on the real broker.

Given a registrar (the trust anchor) that registers every actor, a whole therapy and a
handful of faults sent to ingress, when the worker runs, then every valid event is on
the canonical topic once, in chain order, and every fault is on the rejected topic once
with its reason; killed with SIGKILL and restarted, it neither loses nor repeats.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.streams.sandbox import Sandbox
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.signing import EventSigner, HybridKeyPair

from ..unit.therapy_builder import Hub, TherapyScenario

pytestmark = pytest.mark.kafka


def _rejections(hub: Sandbox) -> dict[str, dict]:
    found = {}
    for msg in hub.read_all("rejected"):
        env = decode_envelope(msg.value)
        _, payload = decode_payload(env.schema_fingerprint, env.payload, env.event_type)
        found[payload["rejected_event_id"] or f"@{payload['source_offset']}"] = payload
    return found


@pytest.fixture
def hub(kafka, settings, tmp_path):
    isolated = Sandbox.create(settings, kafka.bootstrap_servers, tmp_path)
    yield isolated
    isolated.stop_all()


def test_a_therapy_and_its_faults_through_a_worker_killed_twice(hub):
    builder = Hub()
    builder.deploy_gatekeeper(hub)
    scenario = TherapyScenario(builder)
    therapy = scenario.full_therapy()
    # A second therapy whose dose had a temperature excursion, then someone tries to
    # dispense it: refused (R6) and raised as an alert people see.
    quarantined = TherapyScenario(builder, cast=scenario.actors, patient_hash="b2" * 32)
    quarantined.run_until("reserve#1")
    quarantined.accept(quarantined.excursion([quarantined.dose(1)]))
    bad_dispense = quarantined.dispense(1)
    registrations = builder.registry_log

    # Faults, each to be refused with its code:
    stranger = EventIssuer(EventSigner("stranger", "stranger-k1", HybridKeyPair.generate()))
    unregistered = stranger.issue("ConsentWithdrawn", therapy[0].coi, {
        "scope": "RESEARCH", "consent_document_ref": "DocumentReference/9", "reason": None,
        "granted_event_id": None},
        occurred_at_us=scenario.now_us + 10**6, prev_hash=chain_digest(therapy[-1].envelope))
    duplicate = therapy[3].raw
    garbage = b"\xc3\x01 this is not an envelope"

    worker = hub.start_worker()
    hub.send([(e.coi.encode(), e.raw) for e in registrations])
    assert hub.wait_answered(len(registrations), 120, worker) >= len(registrations), \
        hub.worker_log()

    sent = [(e.coi.encode(), e.raw) for e in therapy]
    hub.send(sent[: len(sent) // 2])
    hub.kill(worker, signal.SIGKILL)
    worker = hub.start_worker()
    hub.send(sent[len(sent) // 2:])
    hub.kill(worker, signal.SIGKILL)
    worker = hub.start_worker()
    hub.send([(unregistered.key, unregistered.wire), (therapy[0].coi.encode(), duplicate),
              (therapy[0].coi.encode(), garbage)])
    hub.send([(e.coi.encode(), e.raw) for e in [*quarantined.log, bad_dispense]])

    expected = len(registrations) + len(therapy) + 3 + len(quarantined.log) + 1
    assert hub.wait_answered(expected, 180, worker) == expected, hub.worker_log()

    canonical = [decode_envelope(m.value) for m in hub.read_all("events")]
    counts = Counter(e.event_id for e in canonical)
    assert max(counts.values()) == 1, "an event was written twice"
    in_chain = [e for e in canonical if e.coi == therapy[0].coi]
    assert [e.event_id for e in in_chain] == [e.event_id for e in therapy]
    rejected = _rejections(hub)
    assert rejected[unregistered.envelope.event_id]["reason_code"] == "UNREGISTERED_KEY"
    assert rejected[therapy[3].event_id]["reason_code"] == "DUPLICATE_EVENT"
    garbage_refusal = next(p for p in rejected.values() if p["original"] == garbage)
    assert garbage_refusal["reason_code"] == "MALFORMED"
    assert "envelope" in garbage_refusal["reason"]
    assert rejected[bad_dispense.event_id]["reason_code"] == "DOSE_QUARANTINED"
    assert len(rejected) == 4
    alerts = []
    for msg in hub.read_all("alerts"):
        env = decode_envelope(msg.value)
        alerts.append(decode_payload(env.schema_fingerprint, env.payload, env.event_type)[1])
    [alert] = [a for a in alerts if a["subject_event_id"] == bad_dispense.event_id]
    assert alert["code"] == "DOSE_QUARANTINED" and alert["severity"] == "CRITICAL"
    assert quarantined.dose(1) in alert["message"]
