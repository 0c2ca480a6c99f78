"""The production time bounds in a real `pcvhub worker`, against the broker's append times.

Given a therapy whose story runs over the last half hour (so honest events are
contemporaneous) and a worker started with ``PCVHUB_TIME_BOUNDS=production``, when the
therapy's events and three attempts at back-dating go to ingress, then the honest events
and a registry entry recorded three weeks late with its signed flag are on the canonical
topic (still flagged), while the same entry unflagged, an event signed two hours away from
the broker's append time, and a research request signed after the patient's withdrawal but
dated before it are refused with reasons naming the times.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from pcvhub.schemas.codec import decode_envelope, decode_payload, encode_envelope
from pcvhub.schemas.envelope import LateEntry
from pcvhub.streams.sandbox import Sandbox
from pcvhub.streams.timebounds import HOUR_US, MINUTE_US
from pcvhub.times import utc_iso
from pcvhub.trust.issuer import now_us
from pcvhub.trust.registry import REGISTRY_COI, Actor, registration_payload

from ..unit.therapy_builder import DAY_US, Hub, Party, TherapyScenario

pytestmark = pytest.mark.kafka

LATE_REASON = "paper consent form found in the clinic's file"


@pytest.fixture
def hub(kafka, settings, tmp_path):
    isolated = Sandbox.create(settings, kafka.bootstrap_servers, tmp_path)
    yield isolated
    isolated.stop_all()


def test_back_dating_is_refused_and_a_flagged_late_entry_accepted_by_a_production_worker(
        hub):
    started = now_us()
    # the registrar registers everyone half an hour ago (a Hub registers a day before its
    # start), the therapy's story runs from twenty minutes ago, a second per event
    builder = Hub(start_us=started + DAY_US - 30 * MINUTE_US)
    builder.deploy_gatekeeper(hub)
    therapy = TherapyScenario(builder, start_us=started - 20 * MINUTE_US)
    therapy.run_until("issue_card")

    # The registrar records, three weeks late, a courier it registered on paper then. (Its
    # key has been valid for a year; an actor's key is judged at the event's occurred-at,
    # so a late entry needs a key valid back then.)
    weeks_ago = started - 21 * DAY_US
    courier = Party.new("courier-paper", frozenset({"COURIER"}), "COURIER-CO")
    registration = registration_payload(
        Actor(courier.actor_id, "Courier (paper record)", courier.roles, courier.site),
        courier.key_id, courier.issuer.signer.keys.public, weeks_ago)
    unflagged = builder.registry_event("ActorRegistered", registration, at_us=weeks_ago)
    late = builder.admit(builder.registry_event("ActorRegistered", registration,
                                                at_us=weeks_ago, late_entry=LATE_REASON))
    # signed by a producer whose clock runs two hours ahead of the broker's
    physician = therapy.actors["physician"].issuer
    stale_draft = replace(physician.draft("DiagnosisRecorded", therapy.coi,
                                          therapy.diagnose().payload,
                                          occurred_at_us=therapy.now_us,
                                          prev_hash=therapy.case.head),
                          signed_at_us=started + 2 * HOUR_US)
    stale = encode_envelope(physician.signer.seal(stale_draft))
    therapy.accept(therapy.consent("RESEARCH"))
    withdrawal = therapy.accept(therapy.withdraw("RESEARCH"))
    back_dated = therapy.issue("researcher", "ResearchDataRequested",
                               therapy.research_use("RQ-9").payload,
                               occurred_at_us=withdrawal.occurred_at_us - 1_000_000)

    worker = hub.start_worker(env={"PCVHUB_TIME_BOUNDS": "production"})
    registrations = builder.registry_log
    late_at = registrations.index(late)
    registry = REGISTRY_COI.encode()
    hub.send([(registry, e.raw) for e in registrations[:late_at]])
    hub.send([(registry, unflagged.raw)])
    hub.send([(registry, e.raw) for e in registrations[late_at:]])
    assert hub.wait_answered(len(registrations) + 1, 120, worker) >= len(registrations) + 1, \
        hub.worker_log()
    key = therapy.coi.encode()
    hub.send([(key, e.raw) for e in therapy.log[:1]] + [(key, stale)])
    hub.send([(key, e.raw) for e in therapy.log[1:]] + [(key, back_dated.raw)])
    expected = len(registrations) + len(therapy.log) + 3
    assert hub.wait_answered(expected, 180, worker) == expected, hub.worker_log()

    canonical = [decode_envelope(m.value) for m in hub.read_all("events")]
    assert [e.event_id for e in canonical if e.coi == therapy.coi] == [
        e.event_id for e in therapy.log]
    assert [e.event_id for e in canonical if e.coi == REGISTRY_COI] == [
        e.event_id for e in registrations]
    [late_read] = [e for e in canonical if e.event_id == late.event_id]
    assert (late_read.version, late_read.late_entry) == (2, LateEntry(LATE_REASON))

    refused = {}
    for msg in hub.read_all("rejected"):
        env = decode_envelope(msg.value)
        _, payload = decode_payload(env.schema_fingerprint, env.payload, env.event_type)
        refused[payload["rejected_event_id"]] = payload
    stale_id = stale_draft.event_id
    assert set(refused) == {unflagged.event_id, stale_id, back_dated.event_id}, refused
    assert (refused[unflagged.event_id]["rule"],
            refused[unflagged.event_id]["reason_code"]) == ("R1", "LATE_ENTRY_UNFLAGGED")
    assert utc_iso(weeks_ago) in refused[unflagged.event_id]["reason"]
    outside = refused[stale_id]
    assert outside["reason_code"] == "SIGNED_OUTSIDE_WINDOW", outside
    assert utc_iso(started + 2 * HOUR_US) in outside["reason"]  # and the broker's time
    withdrawn = refused[back_dated.event_id]
    assert (withdrawn["rule"], withdrawn["reason_code"]) == ("R7", "CONSENT_WITHDRAWN")
    for instant in (withdrawal.occurred_at_us, back_dated.envelope.signed_at_us,
                    back_dated.occurred_at_us):
        assert utc_iso(instant) in withdrawn["reason"]
