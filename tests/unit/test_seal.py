"""The gatekeeper's seal, tried as an attacker with broker access would.

Given a gatekeeper that judged and sealed a therapy's events (in batches, as one send step
of its agent seals what it writes), the one log reader admits each sealed record and takes
the ingress position from the seal. An attacker can read every record and header and write
any bytes to any topic, but holds no gatekeeper key: an unsealed record, a seal moved to
another record, to another place or between batches, a flipped path, a root the signature
does not cover, a seal by another actor's key, each is quarantined with its reason, and
the honest records after it are admitted.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from pcvhub.log.verify import LogVerifier, Quarantined, RawRecord, VerifiedRecord
from pcvhub.streams.event import SourcePosition
from pcvhub.streams.gatekeeper import Gatekeeper, Output, PartitionLedger
from pcvhub.streams.rules import default_rules
from pcvhub.topics import SEAL_HEADER, partition_for
from pcvhub.trust import merkle
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.registry import REGISTRY_COI
from pcvhub.trust.seal import Seal, SealedFacts, SealError, SealVerdict, seal_batch
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
        self.gatekeeper = Gatekeeper(default_rules(registry), EventIssuer(self.signer),
                                     registry)
        self.ledgers = {p: PartitionLedger(p) for p in range(PARTITIONS)}
        self.ingress: dict[int, int] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.records: list[RawRecord] = []
        self.verifier = LogVerifier(Hub(registrar=self.hub.registrar).registry,
                                    REGISTRY_PARTITION, reader="test")

    def step(self, wires: list[tuple[bytes, bytes]]) -> list[RawRecord]:
        """One send step: judge every ingress record, seal all outputs together, write."""
        outputs: list[Output] = []
        for key, wire in wires:
            partition = partition_for(key, PARTITIONS)
            offset = self.ingress.get(partition, 0)
            self.ingress[partition] = offset + 1
            source = SourcePosition(INGRESS, partition, offset, APPENDED_US + offset)
            outputs += self.gatekeeper.judge(wire, key, source, self.ledgers[partition])
        written = [self.write(o) for o in self.gatekeeper.seal(outputs)]
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
    seals = {o.seal.root for o in therapy if o.seal is not None}
    assert len(seals) == 1, "one send step, one batch signature"
    for number, outcome in enumerate(therapy):
        source = outcome.event.source
        assert source is not None and source.topic == INGRESS
        assert source.offset == number and source.appended_at_us == APPENDED_US + number


def test_a_refusal_is_sealed_as_refused_and_names_the_ingress_record(gated: Gated) -> None:
    gated.verifier.admit_all(gated.records)
    forged = gated.scenario.actors["nurse"].issuer.issue(
        "ConsentWithdrawn", gated.scenario.coi, {
            "scope": "RESEARCH", "consent_document_ref": "DocumentReference/9",
            "reason": None, "granted_event_id": None}, prev_hash=b"\x07" * 32)
    [refusal] = gated.step([(forged.key, forged.wire)])
    outcome = gated.verifier.admit(refusal)
    assert isinstance(outcome, VerifiedRecord) and outcome.seal is not None
    assert outcome.seal.verdict is SealVerdict.REJECTED
    assert outcome.event.source is not None
    assert outcome.event.source.offset == outcome.payload["source_offset"]


def test_a_record_without_a_seal_is_not_accepted_by_the_gatekeeper(gated: Gated) -> None:
    *honest, last = gated.records
    gated.verifier.admit_all(honest)
    outcome = quarantined(gated.verifier, with_seal(last, None))
    assert outcome.code == "UNSEALED"
    assert "not accepted by the gatekeeper" in outcome.reason
    # nothing of it was folded: the sealed original still links onto the chain
    assert isinstance(gated.verifier.admit(replace(last, position=replace(
        last.position, offset=last.offset + 1))), VerifiedRecord)


def test_a_flipped_path_hash_or_root_or_signature_is_named(gated: Gated) -> None:
    *honest, last = gated.records
    gated.verifier.admit_all(honest)
    seal = seal_of(last)
    assert seal.path, "a batch of several records has a path"
    flipped_path = (bytes([seal.path[0][0] ^ 1]) + seal.path[0][1:], *seal.path[1:])
    tampered = {
        "path": replace(seal, path=flipped_path),
        "index": replace(seal, leaf_index=(seal.leaf_index + 1) % seal.tree_size),
        "root": replace(seal, root=bytes(32)),
        "ed25519": replace(seal, signature=replace(
            seal.signature, ed25519=bytes([seal.signature.ed25519[0] ^ 1])
            + seal.signature.ed25519[1:])),
        "time": replace(seal, sealed_at_us=seal.sealed_at_us + 1),
        "ingress": replace(seal, source_offset=seal.source_offset + 1),
        "verdict": replace(seal, verdict=SealVerdict.ALERT),
    }
    for what, bad in tampered.items():
        outcome = quarantined(gated.verifier, with_seal(last, bad.encode()))
        assert outcome.code == "SEAL_INVALID", (what, outcome)
    assert "do not lead along the seal's path" in quarantined(
        gated.verifier, with_seal(last, tampered["path"].encode())).reason
    assert "Ed25519" in quarantined(
        gated.verifier, with_seal(last, tampered["ed25519"].encode())).reason
    assert "belongs on alerts" in quarantined(
        gated.verifier, with_seal(last, tampered["verdict"].encode())).reason
    assert isinstance(gated.verifier.admit(last), VerifiedRecord)


def test_a_root_the_signature_does_not_cover_is_named(gated: Gated) -> None:
    """The attacker recomputes a consistent tree over an altered leaf: path and root
    agree, but the batch signature covers the old root."""
    *honest, last = gated.records
    gated.verifier.admit_all(honest)
    seal = seal_of(last)
    facts = SealedFacts(last.topic, last.partition, last.key, last.value or b"",
                        seal.verdict, seal.source_topic, seal.source_partition,
                        seal.source_offset + 100, seal.appended_at_us)
    siblings = [hashlib.sha256(bytes([i])).digest() for i in range(seal.tree_size)]
    leaves = [merkle.leaf_hash(facts.leaf()) if i == seal.leaf_index else siblings[i]
              for i in range(seal.tree_size)]
    forged = replace(seal, source_offset=seal.source_offset + 100,
                     root=merkle.root_of(leaves),
                     path=tuple(merkle.inclusion_path(leaves, seal.leaf_index)))
    outcome = quarantined(gated.verifier, with_seal(last, forged.encode()))
    assert outcome.code == "SEAL_INVALID" and "does not verify over the sealed root" in \
        outcome.reason


def test_a_seal_moved_to_another_record_place_or_batch_is_named(gated: Gated) -> None:
    registry_step = [r for r in gated.records if r.key == REGISTRY_COI.encode()]
    therapy = [r for r in gated.records if r.key == gated.scenario.coi.encode()]
    gated.verifier.admit_all(registry_step)
    first, second, *_ = therapy
    assert seal_of(registry_step[0]).root != seal_of(first).root, "two batches"
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
        [forged] = seal_batch(signer, [facts], seal.sealed_at_us)
        outcome = quarantined(gated.verifier, with_seal(last, forged.encode()))
        assert outcome.code == "SEAL_INVALID" and says in outcome.reason, outcome


def test_a_seal_header_cut_short_or_padded_is_named_with_the_byte() -> None:
    signer = gatekeeper_signer()
    [seal] = seal_batch(signer, [SealedFacts("events", 0, b"k", b"v", SealVerdict.ACCEPTED,
                                             INGRESS, 0, 1)], 1)
    wire = seal.encode()
    assert Seal.decode(wire) == seal and Seal.decode(wire).encode() == wire  # one form
    with pytest.raises(SealError, match="cut short at byte"):
        Seal.decode(wire[:-1])
    with pytest.raises(SealError, match="follow the seal's end"):
        Seal.decode(wire + b"\x00")
    with pytest.raises(SealError, match="version 2"):
        Seal.decode(b"\x02" + wire[1:])
    with pytest.raises(SealError, match="verdict byte 9"):
        Seal.decode(wire[:1] + b"\x09" + wire[2:])
