"""Issue 4's kill test: 20,000 valid events and a few hundred invalid ones stream in while
the worker is SIGKILLed twice and restarted. Afterwards every valid event id is on the
canonical topic exactly once, every invalid one on the rejected topic exactly once with
its reason, and nothing else is there."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter

import pytest

from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.streams.sandbox import Sandbox
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.signing import EventSigner, HybridKeyPair

from ..unit.therapy_builder import T0_US, Hub, TherapyScenario

pytestmark = pytest.mark.kafka

VALID_TARGET = 20_000
INVALID_EACH = 100  # garbage, unregistered signer, duplicate: 300 invalid in all


@pytest.fixture
def hub(kafka, settings, tmp_path):
    isolated = Sandbox.create(settings, kafka.bootstrap_servers, tmp_path)
    yield isolated
    isolated.stop_all()


def _cohort(builder: Hub) -> list:
    """Therapies sharing one cast, interleaved as they would arrive from many sites."""
    cast = builder.register_cast("cohort")
    therapies = []
    total = 0
    while total < VALID_TARGET:
        events = TherapyScenario(builder, cast=cast,
                                 patient_hash=f"{len(therapies):064x}").full_therapy()
        therapies.append(events)
        total += len(events)
    rng = random.Random(4)
    stream, cursors = [], [0] * len(therapies)
    live = list(range(len(therapies)))
    while live:
        i = rng.choice(live)
        stream.append(therapies[i][cursors[i]])
        cursors[i] += 1
        if cursors[i] == len(therapies[i]):
            live.remove(i)
    return stream


def test_sigkill_twice_loses_and_duplicates_nothing(hub):
    builder = Hub()
    builder.deploy_gatekeeper(hub)
    valid = _cohort(builder)
    registrations = builder.registry_log

    rng = random.Random(7)
    stranger = EventIssuer(EventSigner("stranger", "stranger-k1", HybridKeyPair.generate()))
    invalid: dict[bytes, str] = {}  # wire -> expected reason code
    for n in range(INVALID_EACH):
        invalid[f"\xc3\x01garbage {n}".encode("latin-1")] = "MALFORMED"
        victim = rng.choice(valid)
        forged = stranger.issue("ConsentWithdrawn", victim.coi, {
            "scope": "RESEARCH", "consent_document_ref": f"DocumentReference/{n}",
            "reason": None, "granted_event_id": None}, occurred_at_us=T0_US + n)
        invalid[forged.wire] = "UNREGISTERED_KEY"
    duplicates = rng.sample(valid, INVALID_EACH)
    invalid_records = [(b"PCV-GARBAGE", w) if c == "MALFORMED" else
                       (decode_envelope(w).coi.encode(), w) for w, c in invalid.items()]
    rng.shuffle(invalid_records)

    worker = hub.start_worker()
    hub.send([(e.coi.encode(), e.raw) for e in registrations])
    assert hub.wait_answered(len(registrations), 120, worker) == len(registrations), \
        hub.worker_log()

    # Valid events first (in chunks, with the invalid ones mixed in), duplicates last so
    # that their originals are already accepted.
    records = [(e.coi.encode(), e.raw) for e in valid]
    chunks = [records[i:i + 1000] for i in range(0, len(records), 1000)]
    for i, bad in enumerate(invalid_records):
        chunks[i % len(chunks)].append(bad)
    sender_done = threading.Event()

    def send_all() -> None:
        for chunk in chunks:
            hub.send(chunk)
            time.sleep(0.5)
        sender_done.set()

    sender = threading.Thread(target=send_all)
    sender.start()
    expected = len(registrations) + len(valid) + len(invalid_records)
    for kill_at in (expected // 3, 2 * expected // 3):
        hub.wait_answered(kill_at, 300, worker)
        hub.kill(worker, signal.SIGKILL)
        worker = hub.start_worker()
    sender.join()
    hub.send([(e.coi.encode(), e.raw) for e in duplicates])
    expected += len(duplicates)
    assert hub.wait_answered(expected, 600, worker) == expected, hub.worker_log()

    canonical = Counter(decode_envelope(m.value).event_id for m in hub.read_all("events"))
    wanted = Counter(e.event_id for e in [*registrations, *valid])
    assert canonical == wanted  # every valid id exactly once, nothing else

    refused: Counter = Counter()
    for msg in hub.read_all("rejected"):
        env = decode_envelope(msg.value)
        _, p = decode_payload(env.schema_fingerprint, env.payload, env.event_type)
        refused[(p["original"], p["reason_code"])] += 1
    wanted_refusals = Counter({(w, c): 1 for w, c in invalid.items()})
    wanted_refusals.update((e.raw, "DUPLICATE_EVENT") for e in duplicates)
    assert refused == wanted_refusals
