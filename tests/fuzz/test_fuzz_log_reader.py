"""The one log reader: whatever an attacker with broker access writes to whatever topic, the
verifier admits or quarantines it, never raises, and no damaged record becomes a fact.

Seeds are a real registry chain and therapy (signed by the demo's builders). Each example
takes one honest record, damages its bytes (or writes it under another key, topic or
header), and feeds it to a verifier that has admitted the honest log so far. Properties:

- ``admit`` returns a ``VerifiedRecord`` or a ``Quarantined`` with a code and a reason;
- a quarantined record moves nothing: chain heads and the registry are as before;
- an admitted one states nothing new: its chain digest (which covers every signed field)
  is that of an honest record, i.e. at most a re-encoding of a fact already signed.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcvhub.demo.therapy import Hub, TherapyScenario
from pcvhub.log.verify import LogVerifier, Quarantined, RawRecord, VerifiedRecord
from pcvhub.topics import SEAL_HEADER, partition_for
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.registry import REGISTRY_COI

from ..unit.sealing import SEAL_BOOK, gatekeeper_signer, sealed
from .mutate import mutated_bytes
from .profiles import bounded, fuzz_settings, label

pytestmark = pytest.mark.fuzz

PARTITIONS = 6
REGISTRY_PARTITION = partition_for(REGISTRY_COI.encode(), PARTITIONS)
TOPICS = ("events", "rejected", "alerts", "ingress.direct")


def _honest_log() -> tuple[Hub, list[RawRecord], set[bytes]]:
    hub = Hub()
    hub.register_gatekeeper(GATEKEEPER)
    scenario = TherapyScenario(hub)
    therapy = scenario.full_therapy()
    offsets: dict[int, int] = {}
    records = []
    for event in [*hub.registry_log, *therapy]:
        partition = partition_for(event.coi.encode(), PARTITIONS)
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        records.append(RawRecord.at("events", partition, offset, event.coi.encode(),
                                    event.raw))
    digests = {chain_digest(e.envelope) for e in [*hub.registry_log, *therapy]}
    return hub, sealed(GATEKEEPER, records), digests


GATEKEEPER = gatekeeper_signer()


HUB, LOG, HONEST_DIGESTS = _honest_log()


def _verifier_after(prefix: int) -> LogVerifier:
    registrar = HUB.registrar
    verifier = LogVerifier(Hub(registrar=registrar).registry, REGISTRY_PARTITION,
                           lookahead=lambda offset: [
                               r for r in LOG if r.partition == REGISTRY_PARTITION
                               and r.offset >= offset], seals=SEAL_BOOK, reader="fuzz")
    for record in LOG[:prefix]:
        assert isinstance(verifier.admit(record), VerifiedRecord)
    return verifier


@st.composite
def damaged_records(draw: st.DrawFn) -> tuple[int, RawRecord]:
    """(how many honest records came before, a damaged record written after them)."""
    at = draw(st.integers(0, len(LOG) - 1))
    honest = LOG[at]
    value = draw(st.one_of(mutated_bytes(honest.value or b""), st.just(honest.value),
                           st.binary(max_size=64)))
    topic = draw(st.sampled_from(TOPICS))
    key = draw(st.sampled_from([honest.key, REGISTRY_COI.encode(), b"", None,
                                b"PCV-OTHER-2026-000000000000X"]))
    seal = honest.header(SEAL_HEADER) or b""
    headers = draw(st.sampled_from([(), ((SEAL_HEADER, seal),),
                                    ((SEAL_HEADER, seal[:-1]),),
                                    ((SEAL_HEADER, b"\xff garbage"),)]))
    position = honest.position.__class__(topic, honest.partition, honest.offset + 10_000)
    return at, RawRecord(position, key, value, headers)


@given(damaged_records())
@fuzz_settings(0.5)
def test_a_damaged_record_is_admitted_only_as_an_honest_fact_or_quarantined(case) -> None:
    before, record = case
    verifier = _verifier_after(before)
    heads, actors = dict(verifier.heads), dict(verifier.registry.actors)
    keys = dict(verifier.registry.keys)
    with bounded(10, "LogVerifier.admit"):
        outcome = verifier.admit(record)
    if isinstance(outcome, Quarantined):
        label(f"quarantined {outcome.code}")
        assert outcome.code and outcome.reason and outcome.position == record.position
        assert verifier.heads == heads
        assert verifier.registry.actors == actors and verifier.registry.keys == keys
    else:
        label(f"admitted on {record.position.topic}")
        assert isinstance(outcome, VerifiedRecord)
        assert outcome.digest in HONEST_DIGESTS
