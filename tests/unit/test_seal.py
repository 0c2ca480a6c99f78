"""The gatekeeper's seal, tried as an attacker with broker access would.

Given a gatekeeper that judged and sealed a therapy's events (in batches, as one send step
of its agent seals what it writes), the one log reader admits each sealed record and takes
the ingress position from the seal. An attacker can read every record and header and write
any bytes to any topic, but holds no gatekeeper key: an unsealed record, a seal moved to
another record, to another place or between batches, a flipped path, a root the signature
does not cover, a seal by another actor's key, a header pointing at a head the seals
topic does not hold or at a forged one, each is quarantined with its reason, and the
honest records after it are admitted.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from pcvhub.log.verify import LogVerifier, Quarantined, RawRecord, VerifiedRecord
from pcvhub.streams.event import SourcePosition
from pcvhub.streams.gatekeeper import Gatekeeper, Output, PartitionLedger
from pcvhub.streams.rules import default_rules
from pcvhub.streams.timebounds import SIMULATION
from pcvhub.topics import SEAL_HEADER, partition_for
from pcvhub.trust import merkle
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.registry import REGISTRY_COI
from pcvhub.trust.seal import (
    Seal,
    SealBook,
    SealedFacts,
    SealError,
    SealHead,
    SealVerdict,
    seal_batch,
)
from pcvhub.trust.signing import EventSigner

from .sealing import gatekeeper_signer
from .therapy_builder import Hub, TherapyScenario

PARTITIONS = 6
REGISTRY_PARTITION = partition_for(REGISTRY_COI.encode(), PARTITIONS)
INGRESS = "pcvhub.ingress.direct"
APPENDED_US = 1_767_225_600_123_000


class Gated:
    """A gatekeeper writing its outputs to an in-memory log, one sealed batch per step."""

    def __init__(self) -> None:
        self.hub = Hub()
        self.signer = gatekeeper_signer()
        self.hub.register_gatekeeper(self.signer)
        self.scenario = TherapyScenario(self.hub)
        registry = Hub(registrar=self.hub.registrar).registry
        rules = default_rules(registry, bounds=SIMULATION)
        self.gatekeeper = Gatekeeper(rules, EventIssuer(self.signer),
                                     registry)
        self.ledgers = {p: PartitionLedger(p) for p in range(PARTITIONS)}
        self.ingress: dict[int, int] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.records: list[RawRecord] = []
        self.seals = SealBook()  # the seals topic: the attacker may append to it too
        self.verifier = LogVerifier(Hub(registrar=self.hub.registrar).registry,
                                    REGISTRY_PARTITION, seals=self.seals, reader="test")

    def step(self, wires: list[tuple[bytes, bytes]]) -> list[RawRecord]:
        """One send step: judge every ingress record, seal all outputs together, write."""
        outputs: list[Output] = []
        for key, wire in wires:
            partition = partition_for(key, PARTITIONS)
            offset = self.ingress.get(partition, 0)
            self.ingress[partition] = offset + 1
            source = SourcePosition(INGRESS, partition, offset, APPENDED_US + offset)
            outputs += self.gatekeeper.judge(wire, key, source, self.ledgers[partition])
        batch = self.gatekeeper.seal(outputs)
        written = [self.write(o) for o in batch.at(self.seals.append(batch.head))]
        self.records += written
        return written

    def write(self, output: Output) -> RawRecord:
        offset = self.offsets.get((output.topic, output.partition), 0)
        self.offsets[(output.topic, output.partition)] = offset + 1
        return RawRecord.at(output.topic, output.partition, offset, output.key, output.value,
                            output.seal)


@pytest.fixture
def gated() -> Gated:
    """The registry chain in one step, then the therapy's first events in one step."""
    world = Gated()
    world.step([(e.coi.encode(), e.raw) for e in world.hub.registry_log])
    world.step([(e.coi.encode(), e.raw) for e in world.scenario.run_until("collect")])
    return world


def seal_of(record: RawRecord) -> Seal:
    header = record.header(SEAL_HEADER)
    assert header is not None
    return Seal.decode(header)


def head_of(gated: Gated, seal: Seal) -> SealHead:
    value = gated.seals(seal.head_offset)
    assert value is not None
    return SealHead.decode(value)


def pointing_at(gated: Gated, seal: Seal, head: SealHead | bytes) -> bytes:
    """The attacker appends ``head`` to the seals topic and points ``seal`` at it."""
    return replace(seal, head_offset=gated.seals.append(head)).encode()


def with_seal(record: RawRecord, seal: bytes | None) -> RawRecord:
    kept = tuple(h for h in record.headers if h[0] != SEAL_HEADER)
    return replace(record, headers=kept if seal is None else (*kept, (SEAL_HEADER, seal)))


def quarantined(verifier: LogVerifier, record: RawRecord) -> Quarantined:
    outcome = verifier.admit(record)
    assert isinstance(outcome, Quarantined), outcome
    return outcome


def test_every_output_is_sealed_and_admitted_with_the_ingress_position_from_its_seal(
        gated: Gated) -> None:
    outcomes = gated.verifier.admit_all(gated.records)
    assert all(isinstance(o, VerifiedRecord) for o in outcomes), outcomes
    therapy = [o for o in outcomes if isinstance(o, VerifiedRecord)
               and o.coi == gated.scenario.coi]
    assert therapy and all(o.seal is not None and o.seal.verdict is SealVerdict.ACCEPTED
                           for o in therapy)
    heads = {o.seal.head_offset for o in therapy if o.seal is not None}
    assert len(heads) == 1, "one send step, one batch head"
    assert all(o.seal is not None and o.seal.head is not None
               and o.seal.head.signer == gated.signer.producer for o in therapy)
    # the therapy's ingress records follow one another in its partition (the registry
    # chain's records stand before them if its CoI shares that partition)
    first = therapy[0].event.source
    assert first is not None
    for number, outcome in enumerate(therapy):
        source = outcome.event.source
        assert source is not None and source.topic == INGRESS
        assert source.offset == first.offset + number
        assert source.appended_at_us == APPENDED_US + source.offset


def sealed_refusal(gated: Gated) -> RawRecord:
    """Every record so far admitted, then the gatekeeper's sealed refusal of a record
    that names a previous hash its chain never had."""
    gated.verifier.admit_all(gated.records)
    forged = gated.scenario.actors["nurse"].issuer.issue(
        "ConsentWithdrawn", gated.scenario.coi, {
            "scope": "RESEARCH", "consent_document_ref": "DocumentReference/9",
            "reason": None, "granted_event_id": None}, prev_hash=b"\x07" * 32)
    [refusal] = gated.step([(forged.key, forged.wire)])
    return refusal


def test_a_refusal_is_sealed_as_refused_and_names_the_ingress_record(gated: Gated) -> None:
    refusal = sealed_refusal(gated)
    outcome = gated.verifier.admit(refusal)
    assert isinstance(outcome, VerifiedRecord) and outcome.seal is not None
    assert outcome.seal.verdict is SealVerdict.REJECTED
    assert outcome.event.source is not None
    assert outcome.event.source.offset == outcome.payload["source_offset"]


def test_a_refusal_appended_again_is_named_a_replay(gated: Gated) -> None:
    """An attacker copies a sealed refusal, headers and all, to a later offset: its seal
    verifies (it covers the record's bytes, not its offset) but was admitted already."""
    refusal = sealed_refusal(gated)
    assert isinstance(gated.verifier.admit(refusal), VerifiedRecord)
    # the same record read again (a follower's re-read) is the same record, no replay
    assert isinstance(gated.verifier.admit(refusal), VerifiedRecord)
    copy = replace(refusal, position=replace(refusal.position, offset=refusal.offset + 5))
    outcome = quarantined(gated.verifier, copy)
    assert outcome.code == "SEAL_REPLAYED"
    assert str(refusal.position) in outcome.reason and "appended again" in outcome.reason


def test_a_record_without_a_seal_is_not_accepted_by_the_gatekeeper(gated: Gated) -> None:
    *honest, last = gated.records
    gated.verifier.admit_all(honest)
    outcome = quarantined(gated.verifier, with_seal(last, None))
    assert outcome.code == "UNSEALED"
    assert "not accepted by the gatekeeper" in outcome.reason
    # nothing of it was folded: the sealed original still links onto the chain
    assert isinstance(gated.verifier.admit(replace(last, position=replace(
        last.position, offset=last.offset + 1))), VerifiedRecord)


def test_a_flipped_path_hash_index_ingress_or_verdict_is_named(gated: Gated) -> None:
    *honest, last = gated.records
    gated.verifier.admit_all(honest)
    seal = seal_of(last)
    assert seal.path, "a batch of several records has a path"
    size = head_of(gated, seal).tree_size
    flipped_path = (bytes([seal.path[0][0] ^ 1]) + seal.path[0][1:], *seal.path[1:])
    tampered = {
        "path": replace(seal, path=flipped_path),
        "index": replace(seal, leaf_index=(seal.leaf_index + 1) % size),
        "ingress": replace(seal, source_offset=seal.source_offset + 1),
        "append time": replace(seal, appended_at_us=seal.appended_at_us + 1),
        "verdict": replace(seal, verdict=SealVerdict.ALERT),
    }
    for what, bad in tampered.items():
        outcome = quarantined(gated.verifier, with_seal(last, bad.encode()))
        assert outcome.code == "SEAL_INVALID", (what, outcome)
        assert ("do not lead along the seal's path" in outcome.reason
                or "belongs on alerts" in outcome.reason), (what, outcome)
    assert "belongs on alerts" in quarantined(
        gated.verifier, with_seal(last, tampered["verdict"].encode())).reason
    assert isinstance(gated.verifier.admit(last), VerifiedRecord)


def test_a_head_the_seals_topic_does_not_hold_or_that_is_forged_is_named(
        gated: Gated) -> None:
    """The attacker may write to the seals topic (a superuser can): a head with a flipped
    signature byte, a changed sealing time, a root the signature does not cover, garbage,
    or no head at all; each is named."""
    *honest, last = gated.records
    gated.verifier.admit_all(honest)
    seal = seal_of(last)
    head = head_of(gated, seal)
    flipped_ed = replace(head, signature=replace(
        head.signature, ed25519=bytes([head.signature.ed25519[0] ^ 1])
        + head.signature.ed25519[1:]))
    flipped_pq = replace(head, signature=replace(
        head.signature, ml_dsa_65=head.signature.ml_dsa_65[:-1]
        + bytes([head.signature.ml_dsa_65[-1] ^ 1])))
    cases = {
        "Ed25519": (pointing_at(gated, seal, flipped_ed), "(Ed25519) by hub-gatekeeper"),
        "ML-DSA-65": (pointing_at(gated, seal, flipped_pq), "(ML-DSA-65) by hub-gatekeeper"),
        "sealing time": (pointing_at(gated, seal, replace(
            head, sealed_at_us=head.sealed_at_us + 1)), "does not verify over the sealed"),
        "garbage": (pointing_at(gated, seal, b"\x01 not a head"), "unreadable: the batch head"),
        "missing": (replace(seal, head_offset=10_000).encode(),
                    "which the seals topic does not hold"),
        "negative": (replace(seal, head_offset=-1).encode(), "does not hold"),
    }
    for what, (header, says) in cases.items():
        outcome = quarantined(gated.verifier, with_seal(last, header))
        assert outcome.code == "SEAL_INVALID" and says in outcome.reason, (what, outcome)
    # the honest head, read once, is still good; the record after all this is admitted
    assert isinstance(gated.verifier.admit(last), VerifiedRecord)


def test_a_root_the_signature_does_not_cover_is_named(gated: Gated) -> None:
    """The attacker recomputes a consistent tree over an altered leaf and writes a head
    with the new root and the old signature: path and root agree, the signature does not."""
    *honest, last = gated.records
    gated.verifier.admit_all(honest)
    seal = seal_of(last)
    head = head_of(gated, seal)
    facts = SealedFacts(last.topic, last.partition, last.key, last.value or b"",
                        seal.verdict, seal.source_topic, seal.source_partition,
                        seal.source_offset + 100, seal.appended_at_us)
    siblings = [hashlib.sha256(bytes([i])).digest() for i in range(head.tree_size)]
    leaves = [merkle.leaf_hash(facts.leaf()) if i == seal.leaf_index else siblings[i]
              for i in range(head.tree_size)]
    forged = replace(seal, source_offset=seal.source_offset + 100,
                     path=tuple(merkle.inclusion_path(leaves, seal.leaf_index)))
    header = pointing_at(gated, forged, replace(head, root=merkle.root_of(leaves)))
    outcome = quarantined(gated.verifier, with_seal(last, header))
    assert outcome.code == "SEAL_INVALID" and "does not verify over the sealed root" in \
        outcome.reason


def test_a_seal_moved_to_another_record_place_or_batch_is_named(gated: Gated) -> None:
    registry_step = [r for r in gated.records if r.key == REGISTRY_COI.encode()]
    therapy = [r for r in gated.records if r.key == gated.scenario.coi.encode()]
    gated.verifier.admit_all(registry_step)
    first, second, *_ = therapy
    assert seal_of(registry_step[0]).head_offset != seal_of(first).head_offset, "two batches"
    moves = {
        "another record of the batch": with_seal(first, second.header(SEAL_HEADER)),
        "a record of another batch": with_seal(first, registry_step[0].header(SEAL_HEADER)),
        "another partition": replace(first, position=replace(
            first.position, partition=(first.partition + 1) % PARTITIONS)),
        "another topic": replace(first, position=replace(first.position, topic="alerts")),
        "another key": replace(first, key=b"PCV-OTHER"),
    }
    for what, moved in moves.items():
        outcome = gated.verifier.admit(moved)
        assert isinstance(outcome, Quarantined), what
        assert outcome.code in {"SEAL_INVALID", "WRONG_TOPIC", "KEY_NOT_COI"}, (what, outcome)
    for what in ("another record of the batch", "a record of another batch",
                 "another partition"):
        assert gated.verifier.admit(moves[what]).code == "SEAL_INVALID", what
    assert isinstance(gated.verifier.admit(first), VerifiedRecord)


def test_a_seal_by_a_key_that_is_not_a_gatekeepers_is_named(gated: Gated) -> None:
    *honest, last = gated.records
    gated.verifier.admit_all(honest)
    seal = seal_of(last)
    facts = SealedFacts(last.topic, last.partition, last.key, last.value or b"",
                        seal.verdict, seal.source_topic, seal.source_partition,
                        seal.source_offset, seal.appended_at_us)
    nurse = gated.scenario.actors["nurse"].issuer.signer
    stranger = gatekeeper_signer()
    for signer, says in ((nurse, "not by a GATEKEEPER"),
                         (EventSigner(stranger.producer, "hub-gatekeeper-k9", stranger.keys),
                          "not registered")):
        batch = seal_batch(signer, [facts], head_of(gated, seal).sealed_at_us)
        [forged] = batch.seals(gated.seals.append(batch.head))
        outcome = quarantined(gated.verifier, with_seal(last, forged.encode()))
        assert outcome.code == "SEAL_INVALID" and says in outcome.reason, outcome


def test_a_seal_header_or_head_cut_short_or_padded_is_named_with_the_byte() -> None:
    signer = gatekeeper_signer()
    batch = seal_batch(signer, [SealedFacts("events", 0, b"k", b"v", SealVerdict.ACCEPTED,
                                            INGRESS, 0, 1)], 1)
    [seal] = batch.seals(7)
    wire = seal.encode()
    assert Seal.decode(wire) == seal and Seal.decode(wire).encode() == wire  # one form
    with pytest.raises(SealError, match="cut short at byte"):
        Seal.decode(wire[:-1])
    with pytest.raises(SealError, match="follow the end of the seal"):
        Seal.decode(wire + b"\x00")
    with pytest.raises(SealError, match="version 2"):
        Seal.decode(b"\x02" + wire[1:])
    with pytest.raises(SealError, match="verdict byte 9"):
        Seal.decode(wire[:1] + b"\x09" + wire[2:])
    head = batch.head.encode()
    assert SealHead.decode(head) == batch.head and SealHead.decode(head).encode() == head
    with pytest.raises(SealError, match="the batch head is cut short at byte"):
        SealHead.decode(head[:-1])
    with pytest.raises(SealError, match="follow the end of the batch head"):
        SealHead.decode(head + b"\x00")


def test_a_records_seal_costs_bytes_per_tree_level_not_a_signature() -> None:
    """The post-quantum signature stands once per batch on the seals topic; each of 500
    records carries its facts and a path of 9 hashes."""
    signer = gatekeeper_signer()
    batch = seal_batch(signer, [SealedFacts("events", 0, b"k%d" % i, b"v",
                                            SealVerdict.ACCEPTED,
                                            INGRESS, 0, i) for i in range(500)], 1)
    sizes = {len(s.encode()) for s in batch.seals(0)}
    # version, verdict, topic, partition, offset, append time, head offset, index, path
    assert max(sizes) == 1 + 1 + 1 + len(INGRESS) + 4 + 8 + 8 + 8 + 4 + 1 + 9 * 32
    assert len(batch.head.encode()) > 3_309  # the ML-DSA-65 signature, once
