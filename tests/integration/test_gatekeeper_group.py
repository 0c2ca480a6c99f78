"""Two gatekeeper workers in one consumer group share the ingress partitions; a worker
joining and one leaving mid-stream lose and duplicate nothing."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from pcvhub.schemas.codec import decode_envelope
from pcvhub.streams.sandbox import Sandbox

from ..unit.therapy_builder import Hub, TherapyScenario

pytestmark = pytest.mark.kafka

THERAPIES = 60


@pytest.fixture
def hub(kafka, settings, tmp_path):
    isolated = Sandbox.create(settings, kafka.bootstrap_servers, tmp_path)
    yield isolated
    isolated.stop_all()


def test_a_worker_joining_and_one_leaving_lose_and_duplicate_nothing(hub):
    builder = Hub()
    builder.deploy_gatekeeper(hub)
    cast = builder.register_cast("group")
    therapies = [TherapyScenario(builder, cast=cast, patient_hash=f"{i:064x}").full_therapy()
                 for i in range(THERAPIES)]
    # Round-robin across therapies keeps each therapy in order and every partition busy.
    stream = [t[i] for i in range(max(map(len, therapies))) for t in therapies if i < len(t)]
    registrations = builder.registry_log
    records = [(e.coi.encode(), e.raw) for e in stream]
    third = len(records) // 3

    first = hub.start_worker("a")
    hub.send([(e.coi.encode(), e.raw) for e in registrations])
    assert hub.wait_answered(len(registrations), 120, first) == len(registrations)
    hub.send(records[:third])
    second = hub.start_worker("b")  # joins: the group rebalances while records flow
    hub.send(records[third:2 * third])
    hub.wait_answered(len(registrations) + third + third // 2, 300, first)
    hub.kill(first, signal.SIGTERM)  # leaves cleanly: its partitions move to "b"
    hub.send(records[2 * third:])

    # Only "b" is left for the last third: all answered means it took over every partition.
    expected = len(registrations) + len(records)
    assert hub.wait_answered(expected, 300, second) == expected, hub.worker_log("b")
    assert hub.count("rejected") == 0, "a valid event was refused during a rebalance"
    canonical = Counter(decode_envelope(m.value).event_id for m in hub.read_all("events"))
    assert canonical == Counter(e.event_id for e in [*registrations, *stream])
