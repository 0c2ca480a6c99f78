"""Concurrent writes through one connector, on the real broker and a real gatekeeper.

Given a registered connector, when many threads call ``emit`` at once (each on its own
therapy and on therapies they share) and one of them sends a payload its schema refuses,
then every other call is acknowledged, what is on the ingress topic carries valid hybrid
signatures (shared ones with their Merkle inclusion paths), the gatekeeper accepts all of
it with every therapy's chain unbroken and each caller's events in its order, and only
the caller with the bad payload gets an error (its own, from the codec).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest

from pcvhub.connectors.core import Connector, EventRequest
from pcvhub.connectors.outcome import Outcome
from pcvhub.demo.cohort import AUTHORITY
from pcvhub.ids import new_coi
from pcvhub.schemas.codec import SchemaValidationError
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.issuer import IssuedEvent
from pcvhub.trust.signing import verify_envelope

from ..unit.test_hl7_messages import SITE
from .test_serve_deployment import deployment  # noqa: F401  (a fixture)

pytestmark = pytest.mark.kafka

CALLERS = 8
CALLS_EACH = 20
SHARED_THERAPIES = 3


def enrolment(connector: Connector, coi: str) -> EventRequest:
    payload = {"patient_hash": connector.pseudonymiser.patient_hash(f"MRN-{uuid.uuid4().hex}"),
               "site_id": SITE, "mrn_assigning_authority": AUTHORITY, "birth_date": None,
               "sex": "FEMALE", "therapy_type": "individualized-neoantigen-mRNA",
               "pseudonym_key_id": connector.pseudonymiser.key_id, "trial_id": None}
    return EventRequest("PatientEnrolled", coi, payload)


def diagnosis(coi: str, stage: Any = "IIIB") -> EventRequest:
    return EventRequest("DiagnosisRecorded", coi, {
        "icd10_code": "C43.5", "icdo3_morphology": "8720/3", "icdo3_topography": "C44.5",
        "stage": stage, "hla_type": ["HLA-A*02:01"]})


def test_concurrent_emits_are_group_committed_accepted_and_errors_stay_their_callers(
        deployment):  # noqa: F811
    connector = deployment.connector("hl7", settle_s=0)  # chain onto in-flight heads
    shared = [new_coi(SITE, 2026) for _ in range(SHARED_THERAPIES)]
    connector.emit([enrolment(connector, coi) for coi in shared])
    own = [new_coi(SITE, 2026) for _ in range(CALLERS)]
    sent: dict[int, list[IssuedEvent]] = defaultdict(list)
    acknowledged_calls: dict[int, int] = defaultdict(int)
    failures: dict[int, BaseException] = {}
    refused_input: list[IssuedEvent] = []
    invalid_caller, invalid_call = 3, 7
    start = threading.Barrier(CALLERS + 1)

    def caller(index: int) -> None:
        start.wait()
        for call in range(CALLS_EACH):
            if call == 0:
                requests = [enrolment(connector, own[index])]
            elif call % 5 == 0:  # two events of two therapies in one call
                requests = [diagnosis(own[index]), diagnosis(shared[index % SHARED_THERAPIES])]
            elif call % 2:
                requests = [diagnosis(shared[(index + call) % SHARED_THERAPIES])]
            else:
                requests = [diagnosis(own[index])]
            if (index, call) == (invalid_caller, invalid_call):
                requests = [diagnosis(own[index], stage=3)]  # "stage" is a string
            try:
                issued = connector.emit(requests)
            except SchemaValidationError as exc:
                failures[index] = exc
                continue
            assert [(e.envelope.coi, e.envelope.event_type.rsplit(".", 1)[-1])
                    for e in issued] == [(r.coi, r.event_type) for r in requests]
            sent[index].extend(issued)
            acknowledged_calls[index] += 1

    def refuser() -> None:
        start.wait()
        for n in range(3):
            refused_input.append(connector.record_refusal(
                f"MSH|broken-{n}".encode(), "mllp://127.0.0.1:0",
                Outcome.refuse("HL7", "HL7_SEGMENT_SEQUENCE_ERROR", "no PID segment")))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    threads.append(threading.Thread(target=refuser))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    # only the caller with the bad payload got an error, and it is the codec's, naming it
    assert list(failures) == [invalid_caller]
    assert "stage" in str(failures[invalid_caller])
    assert acknowledged_calls == {i: CALLS_EACH - (i == invalid_caller) for i in range(CALLERS)}
    issued = [event for events in sent.values() for event in events]
    assert len(refused_input) == 3

    # on the ingress topic, each with signatures that verify; concurrent calls were signed
    # together: one signature over a Merkle root, the event's inclusion path leading to it
    ours = {e.envelope.event_id for e in issued + refused_input}
    ingress = {env.event_id: env for env, _, _ in deployment.records("ingress.hl7")
               if env.event_id in ours}
    assert set(ingress) == ours
    keys = connector.signer.keys.public
    assert all(verify_envelope(env, keys).ok for env in ingress.values())
    batches = defaultdict(list)
    for env in ingress.values():
        if env.batch_proof is not None:
            batches[env.batch_proof.root].append(env)
    assert any(len(members) > 1 for members in batches.values()), "no two calls shared a group"
    for members in batches.values():
        assert {m.batch_proof.tree_size for m in members} == {len(members)}
        assert len({m.signature for m in members}) == 1
    assert all(ingress[e.envelope.event_id].prev_hash == b"" for e in refused_input)

    # the gatekeeper accepted every event; each therapy's chain is unbroken, in the order
    # each caller sent its own events
    missing = connector.wait_accepted([e.envelope.event_id for e in issued], 180)
    assert not missing, deployment.hub.worker_log()
    canonical = defaultdict(list)
    for env, _, _ in deployment.records("events"):
        if env.coi in set(shared) | set(own):
            canonical[env.coi].append(env)
    for coi, chain in canonical.items():
        assert chain[0].prev_hash == b""
        for before, after in zip(chain, chain[1:], strict=False):
            assert after.prev_hash == chain_digest(before), f"chain of {coi} broken"
    for index in range(CALLERS):
        mine = [e.envelope.event_id for e in sent[index] if e.envelope.coi == own[index]]
        assert [env.event_id for env in canonical[own[index]]] == mine
    assert sum(len(chain) for chain in canonical.values()) == len(issued) + SHARED_THERAPIES
    relayed: set[str] = set()
    deadline = time.monotonic() + 120
    while len(relayed) < len(refused_input) and time.monotonic() < deadline:
        relayed = {env.event_id for env, _, _ in deployment.records("rejected")} & {
            e.envelope.event_id for e in refused_input}
        time.sleep(0.5)
    assert len(relayed) == len(refused_input), deployment.hub.worker_log()
