"""Deadlines fire for therapies nobody writes to: the gatekeeper's timer sweep.

Given twenty therapies whose samples were collected and that then stall (no design, no
further event of any kind, on any partition), when the deployment's simulation clock
moves past the sample-to-design deadline, then each therapy's TAT alert is on the alerts
topic within a minute, raised by the sweep (``pcvhub-sweep`` header, no ingress source);
and a worker SIGKILLed as the sweep's alerts start to appear, then restarted, raises
none of them twice.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import timedelta

import pytest

from pcvhub.clock import SimulationClock
from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.streams.gatekeeper import SWEEP_HEADER
from pcvhub.streams.sandbox import Sandbox
from pcvhub.streams.timers import DEFAULT_POLICY
from pcvhub.topics import SEAL_HEADER
from pcvhub.trust.seal import Seal, SealVerdict

from ..unit.therapy_builder import DAY_US, Hub, TherapyScenario

pytestmark = pytest.mark.kafka

STALLED = 20


@pytest.fixture
def hub(kafka, settings, tmp_path):
    isolated = Sandbox.create(settings, kafka.bootstrap_servers, tmp_path)
    yield isolated
    isolated.stop_all()


def tat_alerts(hub: Sandbox) -> list[tuple[dict, dict[str, bytes]]]:
    found = []
    for record in hub.read_all("alerts"):
        env = decode_envelope(record.value)
        _, payload = decode_payload(env.schema_fingerprint, env.payload, env.event_type)
        if payload["code"] == "TAT_SAMPLE_TO_DESIGN":
            found.append((payload, dict(record.headers)))
    return found


def test_stalled_therapies_alert_on_the_clock_once_each_across_a_kill(hub) -> None:
    builder = Hub()
    builder.deploy_gatekeeper(hub)
    cast = builder.register_cast("t")
    therapies = [TherapyScenario(builder, cast=cast, patient_hash=f"{i:02x}" * 32)
                 for i in range(STALLED)]
    events = [e for t in therapies for e in t.run_until("collect")]
    worker = hub.start_worker()
    registrations = [(e.coi.encode(), e.raw) for e in builder.registry_log]
    hub.send(registrations)  # registered before anything they sign is judged
    assert hub.wait_answered(len(registrations), 120, worker) == len(registrations)
    sent = [*registrations, *((e.coi.encode(), e.raw) for e in events)]
    hub.send(sent[len(registrations):])
    assert hub.wait_answered(len(sent), 180, worker) == len(sent), hub.worker_log()
    refused = [decode_payload(env.schema_fingerprint, env.payload)[1]
               for env in (decode_envelope(r.value) for r in hub.read_all("rejected"))]
    assert refused == [], [(p["reason_code"], p["reason"]) for p in refused[:3]]
    time.sleep(3)  # a few sweeps at event time: nothing is due yet
    assert tat_alerts(hub) == []

    # The clock moves a day past the deadline; nothing else happens.
    collected = max(e.occurred_at_us for e in events)
    deadline = collected + DEFAULT_POLICY.sample_to_design // timedelta(microseconds=1)
    SimulationClock(hub.settings.data_dir).set(deadline + DAY_US)
    moved = time.monotonic()
    while not tat_alerts(hub):
        assert time.monotonic() - moved < 60, f"no alert within a minute:\n{hub.worker_log()}"
        time.sleep(0.1)
    hub.kill(worker, signal.SIGKILL)  # as the sweep's alerts start to land
    worker = hub.start_worker()
    while len({p["alert_id"] for p, _ in tat_alerts(hub)}) < STALLED:
        assert time.monotonic() - moved < 180, f"alerts missing:\n{hub.worker_log()}"
        time.sleep(0.5)
    time.sleep(3)  # more sweeps by the restarted worker: still nothing twice
    alerts = tat_alerts(hub)
    assert max(Counter(p["alert_id"] for p, _ in alerts).values()) == 1
    assert {p["subject_event_id"].split("/")[0] for p, _ in alerts} == {
        t.coi for t in therapies}
    assert all(SWEEP_HEADER in headers and SEAL_HEADER in headers
               and Seal.decode(headers[SEAL_HEADER]).verdict is SealVerdict.ALERT
               and Seal.decode(headers[SEAL_HEADER]).source is None for _, headers in alerts)
    assert {p["severity"] for p, _ in alerts} == {"WARNING"}
    hub.kill(worker, signal.SIGKILL)
