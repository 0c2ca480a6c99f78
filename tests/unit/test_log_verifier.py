"""The one log reader's verifier, tried as an attacker with broker access would.

The attacker holds the public ``.avsc`` files, can read every topic (so knows every chain
head) and can write any bytes to any topic, but holds no registrar's private key. Each
test writes what such an attacker could and checks that the verifier quarantines it with
the reason, folds nothing of it, and keeps admitting the honest records after it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from pcvhub.log.verify import LogVerifier, Quarantined, RawRecord, VerifiedRecord
from pcvhub.schemas.codec import encode_envelope
from pcvhub.topics import partition_for
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.registry import REGISTRY_COI, Actor, registration_payload
from pcvhub.trust.signing import EventSigner, HybridKeyPair

from .sealing import SEAL_BOOK, gatekeeper_signer, sealed
from .therapy_builder import Hub, TherapyScenario

PARTITIONS = 6
REGISTRY_PARTITION = partition_for(REGISTRY_COI.encode(), PARTITIONS)


class Log:
    """The gatekeeper's output topics in memory: records appended per partition, offsets
    counted, each sealed by the gatekeeper's key as the gatekeeper writes it (the attacks
    below are caught before the seal is looked at; the seal has tests of its own)."""

    def __init__(self, gatekeeper: EventSigner) -> None:
        self.records: list[RawRecord] = []
        self._next: dict[tuple[str, int], int] = {}
        self.gatekeeper = gatekeeper

    def append(self, coi: str, wire: bytes, topic: str = "events",
               key: bytes | None = None) -> RawRecord:
        partition = partition_for(coi.encode(), PARTITIONS)
        offset = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = offset + 1
        (record,) = sealed(self.gatekeeper, [RawRecord.at(
            topic, partition, offset, coi.encode() if key is None else key, wire)])
        self.records.append(record)
        return record

    def registry_from(self, offset: int) -> list[RawRecord]:
        return [r for r in self.records if r.topic == "events"
                and r.partition == REGISTRY_PARTITION and r.offset >= offset]


def anchor_registry(hub: Hub):  # noqa: ANN201 - a fresh KeyRegistry of the anchor only
    registrar = hub.registrar
    fresh = Hub(registrar=registrar)
    return fresh.registry


@pytest.fixture
def world():
    """A hub with its cast registered, that registry chain on the log, and a verifier
    that starts from the trust anchor only."""
    hub = Hub()
    gatekeeper = gatekeeper_signer()
    hub.register_gatekeeper(gatekeeper)
    scenario = TherapyScenario(hub)
    log = Log(gatekeeper)
    for event in hub.registry_log:
        log.append(REGISTRY_COI, event.raw)
    verifier = LogVerifier(anchor_registry(hub), REGISTRY_PARTITION,
                           lookahead=log.registry_from, seals=SEAL_BOOK, reader="test")
    return hub, scenario, log, verifier


def test_the_honest_registry_chain_is_admitted_and_folded_from_the_anchor(world) -> None:
    hub, scenario, log, verifier = world
    outcomes = verifier.admit_all(log.records)
    assert all(isinstance(o, VerifiedRecord) for o in outcomes), outcomes
    assert set(verifier.registry.actors) == set(hub.registry.actors)
    assert verifier.head(REGISTRY_COI) == hub.registry_case.head
    assert (verifier.report.admitted, verifier.report.quarantined) == (len(log.records), 0)


def test_a_self_signed_registration_is_quarantined_and_its_key_signs_nothing(world) -> None:
    hub, scenario, log, verifier = world
    verifier.admit_all(log.records)
    # The attacker makes a key pair, reads the registry head off the log and registers
    # itself as physician and registrar, signed with its own new key.
    mallory = EventSigner("mallory", "mallory-k1", HybridKeyPair.generate())
    forged = EventIssuer(mallory).issue("ActorRegistered", REGISTRY_COI, registration_payload(
        Actor("mallory", "Dr Mallory", frozenset({"PHYSICIAN", "REGISTRAR"}), "KYOTO01"),
        "mallory-k1", mallory.keys.public, hub.clock_us - 10**9),
        occurred_at_us=hub.clock_us + 1, prev_hash=verifier.head(REGISTRY_COI))
    outcome = verifier.admit(log.append(REGISTRY_COI, forged.wire))
    assert isinstance(outcome, Quarantined) and outcome.code == "UNREGISTERED_KEY"
    assert "mallory" not in verifier.registry.actors
    # ... and an event signed with that key is quarantined too.
    stranger_event = EventIssuer(mallory).issue(
        "ConsentWithdrawn", scenario.coi, {"scope": "RESEARCH",
                                           "consent_document_ref": "DocumentReference/9",
                                           "reason": None, "granted_event_id": None},
        occurred_at_us=hub.clock_us + 2, prev_hash=b"")
    second = verifier.admit(log.append(scenario.coi, stranger_event.wire))
    assert isinstance(second, Quarantined) and second.code == "UNREGISTERED_KEY"
    # The honest registrar's next registration still links onto the true head.
    honest = hub.register("pharmacist-2", {"HOSPITAL_PHARMACIST"}, "KYOTO01")
    assert isinstance(verifier.admit(log.append(REGISTRY_COI, hub.registry_log[-1].raw)),
                      VerifiedRecord)
    assert honest.actor_id in verifier.registry.actors
    assert verifier.report.by_code == {"UNREGISTERED_KEY": 2}


def test_a_registration_signed_by_a_registered_non_registrar_is_quarantined(world) -> None:
    hub, scenario, log, verifier = world
    verifier.admit_all(log.records)
    nurse = scenario.actors["nurse"]  # a stolen nurse key: registered, valid, no REGISTRAR
    forged = nurse.issuer.issue("ActorRegistered", REGISTRY_COI, registration_payload(
        Actor(nurse.actor_id, "nurse, promoted by herself", frozenset({"REGISTRAR"}),
              nurse.site), nurse.key_id, nurse.issuer.signer.keys.public, hub.clock_us),
        occurred_at_us=hub.clock_us + 1, prev_hash=verifier.head(REGISTRY_COI))
    outcome = verifier.admit(log.append(REGISTRY_COI, forged.wire))
    assert isinstance(outcome, Quarantined) and outcome.code == "NOT_REGISTRAR"
    assert nurse.actor_id in outcome.reason and "REGISTRAR" in outcome.reason
    assert verifier.registry.roles_of(nurse.actor_id) == frozenset({"NURSE"})


def test_registry_events_off_the_registry_chain_and_others_on_it_are_quarantined(
        world) -> None:
    hub, scenario, log, verifier = world
    verifier.admit_all(log.records)
    off_chain = hub.registrar.issuer.issue("ActorRegistered", scenario.coi, registration_payload(
        Actor("eve", "eve", frozenset({"NURSE"}), "KYOTO01"), "eve-k1",
        HybridKeyPair.generate().public, hub.clock_us), occurred_at_us=hub.clock_us + 1,
        prev_hash=b"")
    outcome = verifier.admit(log.append(scenario.coi, off_chain.wire))
    assert isinstance(outcome, Quarantined) and outcome.code == "REGISTRY_OFF_CHAIN"
    assert "eve" not in verifier.registry.actors


def test_a_replayed_or_reordered_canonical_record_breaks_the_chain(world) -> None:
    hub, scenario, log, verifier = world
    therapy = scenario.full_therapy()
    records = [log.append(e.coi, e.raw) for e in therapy[:5]]
    verifier.admit_all(log.records)
    replayed = verifier.admit(log.append(scenario.coi, records[2].value or b""))
    assert isinstance(replayed, Quarantined) and replayed.code == "HASH_CHAIN_BROKEN"
    # skipping a record: the sixth names the fifth's digest, the seventh does not
    skipped = verifier.admit(log.append(scenario.coi, therapy[6].raw))
    assert isinstance(skipped, Quarantined) and skipped.code == "HASH_CHAIN_BROKEN"
    assert verifier.head(scenario.coi) == chain_digest(therapy[4].envelope)
    assert isinstance(verifier.admit(log.append(scenario.coi, therapy[5].raw)), VerifiedRecord)


def test_an_altered_signature_a_wrong_key_and_garbage_are_quarantined_with_reasons(
        world) -> None:
    hub, scenario, log, verifier = world
    first = scenario.full_therapy()[0]
    verifier.admit_all(log.records)
    sig = first.envelope.signature
    assert sig is not None
    flipped = replace(first.envelope, signature=replace(
        sig, ml_dsa_65=bytes([sig.ml_dsa_65[0] ^ 1]) + sig.ml_dsa_65[1:]))
    bad_sig = verifier.admit(log.append(first.coi, encode_envelope(flipped)))
    assert isinstance(bad_sig, Quarantined) and bad_sig.code == "SIGNATURE_INVALID"
    assert "ML-DSA-65" in bad_sig.reason
    wrong_key = verifier.admit(log.append(first.coi, first.raw, key=b"another-coi"))
    assert isinstance(wrong_key, Quarantined) and wrong_key.code == "KEY_NOT_COI"
    garbage = verifier.admit(log.append(first.coi, b"\xc3\x01 not an envelope"))
    assert isinstance(garbage, Quarantined) and garbage.code == "MALFORMED"
    assert "envelope header" in garbage.reason and garbage.envelope is None
    empty = verifier.admit(log.append(first.coi, b""))
    assert isinstance(empty, Quarantined) and empty.code == "MALFORMED"
    assert isinstance(verifier.admit(log.append(first.coi, first.raw)), VerifiedRecord)
    assert verifier.report.by_code == {"SIGNATURE_INVALID": 1, "KEY_NOT_COI": 1,
                                       "MALFORMED": 2}
    assert [str(q.position) for q in verifier.report.first][:1] == [str(bad_sig.position)]


def test_refusals_and_alerts_only_from_who_may_write_them(world) -> None:
    hub, scenario, log, verifier = world
    gatekeeper = log.gatekeeper  # registered by the world, first of all
    verifier.admit_all(log.records)
    refusal = {"rejected_event_id": None, "rejected_event_type": None, "rule": "R1",
               "reason_code": "UNREGISTERED_KEY", "reason": "forged", "source_topic": "x",
               "source_partition": 0, "source_offset": 7, "original": b"x"}
    honest = EventIssuer(gatekeeper).issue("EventRejected", scenario.coi, refusal,
                                           prev_hash=b"")
    assert isinstance(verifier.admit(log.append(scenario.coi, honest.wire, "rejected")),
                      VerifiedRecord)
    # A nurse's key cannot mark an ingress position answered ...
    nurse = scenario.actors["nurse"]
    by_nurse = nurse.issuer.issue("EventRejected", scenario.coi, refusal, prev_hash=b"")
    outcome = verifier.admit(log.append(scenario.coi, by_nurse.wire, "rejected"))
    assert isinstance(outcome, Quarantined) and outcome.code == "WRONG_SIGNER"
    # ... and an alert does not belong on the rejected topic, nor a refusal on alerts.
    alert = EventIssuer(gatekeeper).issue("AlertRaised", scenario.coi, {
        "alert_id": "a1", "severity": "CRITICAL", "rule": "R6", "code": "X", "message": "m",
        "subject_event_id": "e1", "due_at": None}, prev_hash=b"")
    misplaced = verifier.admit(log.append(scenario.coi, alert.wire, "rejected"))
    assert isinstance(misplaced, Quarantined) and misplaced.code == "WRONG_TOPIC"
    on_alerts = verifier.admit(log.append(scenario.coi, honest.wire, "alerts"))
    assert isinstance(on_alerts, Quarantined) and on_alerts.code == "WRONG_TOPIC"


def test_a_key_registered_in_a_partition_not_read_yet_is_found_by_reading_ahead(
        world) -> None:
    hub, scenario, log, verifier = world
    n = 0
    while partition_for(scenario.coi.encode(), PARTITIONS) == REGISTRY_PARTITION:  # 1 in 6
        n += 1
        scenario = TherapyScenario(hub, cast=scenario.actors, patient_hash=f"{n:02x}" * 32)
    therapy = scenario.full_therapy()
    # a scenario made in the loop registered its patient after the fixture wrote the
    # registry chain: that registration goes on the registry chain too, where only the
    # lookahead finds it
    on_log = sum(r.partition == REGISTRY_PARTITION and r.key == REGISTRY_COI.encode()
                 for r in log.records)
    for event in hub.registry_log[on_log:]:
        log.append(REGISTRY_COI, event.raw)
    events = [log.append(e.coi, e.raw) for e in therapy]
    # the therapy first, the registry partition last: the lookahead finds the signers
    outcomes = verifier.admit_all(events)
    assert all(isinstance(o, VerifiedRecord) for o in outcomes), outcomes[:1]
    registry = verifier.admit_all([r for r in log.records if r.offset < len(hub.registry_log)
                                    and r.partition == REGISTRY_PARTITION
                                    and r.key == REGISTRY_COI.encode()])
    # read ahead already: answered from memory, not judged (and refused) a second time
    assert all(isinstance(o, VerifiedRecord) for o in registry)
    assert verifier.report.quarantined == 0


def test_a_key_revoked_later_still_verifies_what_it_signed_before(world) -> None:
    """Revocation counts where order is defined (the registry chain); what the key signed
    earlier stays admitted, and the audit view shows the key's standing."""
    hub, scenario, log, verifier = world
    therapy = scenario.full_therapy()
    nurse = scenario.actors["nurse"]
    hub.revoke(nurse, at_us=therapy[-1].occurred_at_us + 1)
    log.append(REGISTRY_COI, hub.registry_log[-1].raw)
    verifier.admit_all(log.records)
    outcomes = verifier.admit_all([log.append(e.coi, e.raw) for e in therapy])
    assert all(isinstance(o, VerifiedRecord) for o in outcomes)
