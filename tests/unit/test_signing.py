"""Hybrid signatures, batches, key windows: every tamper fails with a reason naming it."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pcvhub.ids import new_coi
from pcvhub.schemas.codec import DecodeError, decode_envelope, encode_envelope
from pcvhub.schemas.envelope import MerkleProof
from pcvhub.trust import merkle
from pcvhub.trust.canonical import chain_digest, signing_bytes
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.registry import Actor, KeyRecord, KeyRegistry
from pcvhub.trust.signing import EventSigner, HybridKeyPair

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
DAY = 86_400_000_000


@pytest.fixture(scope="module")
def signer() -> EventSigner:
    return EventSigner("site-1-emr", "site-1-emr-k1", HybridKeyPair.generate())


@pytest.fixture(scope="module")
def registry(signer) -> KeyRegistry:
    return KeyRegistry.with_anchor(
        Actor(signer.producer, "Site 1 EMR", frozenset({"HOSPITAL_IT"}), "site-1"),
        KeyRecord(signer.producer, signer.key_id, signer.keys.public, T0, T0 + 365 * DAY))


def _issue(signer, coi=None, at=T0 + DAY):
    return EventIssuer(signer).issue(
        "ConsentGranted", coi or new_coi("S1"),
        {"scope": "TREATMENT", "consent_document_ref": "DocumentReference/1", "expires_at": None},
        occurred_at_us=at)


def test_a_signed_event_verifies(signer, registry):
    issued = _issue(signer)
    assert registry.verify(decode_envelope(issued.wire)).ok


def test_flipping_any_single_byte_of_the_wire_fails_with_a_reason(signer, registry):
    """Every byte of the envelope (header, fields, payload, both signatures) is covered."""
    wire = _issue(signer).wire
    undetected, reasons = [], set()
    for i in range(len(wire)):
        tampered = bytearray(wire)
        tampered[i] ^= 0x01
        try:
            env = decode_envelope(bytes(tampered))
        except DecodeError as exc:
            reasons.add(exc.where)
            continue
        outcome = registry.verify(env)
        if outcome.ok:
            undetected.append(i)
        for failure in outcome.failures:
            assert env.event_id in failure  # says which event
            reasons.add(failure.split(": ", 1)[-1].split(" signature")[0])
    assert undetected == []
    # Both halves are seen failing on their own (flips inside one signature) and the key
    # lookup names the key when key_id or producer is altered.
    joined = " | ".join(sorted(reasons))
    assert "Ed25519" in joined and "ML-DSA-65" in joined
    assert any("is not registered" in r for r in reasons), joined


@pytest.mark.parametrize("field, value", [
    ("coi", "X"), ("occurred_at_us", T0 + 2 * DAY), ("meaning", "APPROVED"),
    ("prev_hash", b"\x00" * 32), ("payload", b"\x00"), ("event_type", "pcvhub.events.DoseExpired"),
])
def test_changed_field_fails_both_signatures(signer, registry, field, value):
    env = decode_envelope(_issue(signer).wire)
    if field == "meaning":
        from pcvhub.schemas.envelope import SignatureMeaning
        value = SignatureMeaning(value)
    outcome = registry.verify(replace(env, **{field: value}))
    assert not outcome.ok
    assert any("Ed25519" in f for f in outcome.failures)
    assert any("ML-DSA-65" in f for f in outcome.failures)


def test_one_half_alone_is_not_enough(signer, registry):
    env = decode_envelope(_issue(signer).wire)
    other = HybridKeyPair.generate().sign(signing_bytes(env))
    mixed = replace(env, signature=replace(env.signature, ml_dsa_65=other.ml_dsa_65))
    outcome = registry.verify(mixed)
    assert [("ML-DSA-65" in f) for f in outcome.failures] == [True]
    assert outcome.code == "SIGNATURE_INVALID"


def test_unsigned_event_fails(signer, registry):
    env = replace(decode_envelope(_issue(signer).wire), signature=None)
    assert "carries no signature" in str(registry.verify(env))


def test_key_window_and_revocation(signer, registry):
    before = decode_envelope(_issue(signer, at=T0 - 1).wire)
    after = decode_envelope(_issue(signer, at=T0 + 366 * DAY).wire)
    assert "valid only from" in str(registry.verify(before))
    assert "expired at" in str(registry.verify(after))
    revoked = registry.copy()
    revoked.apply("KeyRevoked", {"actor_id": signer.producer, "key_id": signer.key_id,
                                 "revoked_at": T0 + 10 * DAY, "reason": "COMPROMISED"})
    early = decode_envelope(_issue(signer, at=T0 + 9 * DAY).wire)
    late = decode_envelope(_issue(signer, at=T0 + 11 * DAY).wire)
    assert revoked.verify(early).ok
    assert "was revoked" in str(revoked.verify(late))
    assert revoked.verify(late).code == "KEY_REVOKED"
    assert registry.verify(before).code == "KEY_NOT_YET_VALID"
    assert registry.verify(after).code == "KEY_EXPIRED"
    assert "COMPROMISED" in str(revoked.verify(late))


def test_unregistered_signer_is_named(registry):
    stranger = EventSigner("someone", "someone-k9", HybridKeyPair.generate())
    outcome = registry.verify(decode_envelope(_issue(stranger).wire))
    assert "unregistered signer" in str(outcome)
    assert outcome.code == "UNREGISTERED_KEY"


def test_rotation_moves_validity_to_the_new_key(signer, registry):
    fresh = HybridKeyPair.generate()
    rotated = registry.copy()
    rotated.apply("KeyRotated", {
        "actor_id": signer.producer, "old_key_id": signer.key_id, "new_key_id": "k2",
        "ed25519_public_key": fresh.public.ed25519, "ml_dsa_65_public_key": fresh.public.ml_dsa_65,
        "valid_from": T0 + 20 * DAY, "valid_until": None, "old_key_valid_until": T0 + 21 * DAY})
    new_signer = EventSigner(signer.producer, "k2", fresh)
    assert rotated.verify(decode_envelope(_issue(new_signer, at=T0 + 22 * DAY).wire)).ok
    assert "expired" in str(rotated.verify(decode_envelope(_issue(signer, at=T0 + 22 * DAY).wire)))


def _batch(signer, n):
    issuer = EventIssuer(signer)
    coi = new_coi("S1")
    drafts = [issuer.chain(issuer.draft(
        "QcResultRecorded", coi,
        {"batch_id": "B1", "test": f"test-{i}", "specification": "<= 10 EU/mL", "value": str(i),
         "unit": None, "result": "PASS"}, occurred_at_us=T0 + DAY + i)) for i in range(n)]
    return [decode_envelope(e.wire) for e in issuer.issue_batch(drafts)]


def test_batch_events_verify_and_chain(signer, registry):
    events = _batch(signer, 13)
    assert all(registry.verify(e).ok for e in events)
    assert len({e.signature for e in events}) == 1  # one hybrid signature for the batch
    for prev, nxt in zip(events, events[1:], strict=False):
        assert nxt.prev_hash == chain_digest(prev)


def test_batch_event_with_wrong_inclusion_path_fails(signer, registry):
    events = _batch(signer, 5)
    proof = events[2].batch_proof
    wrong_sibling = replace(events[2], batch_proof=replace(
        proof, path=(b"\x00" * 32, *proof.path[1:])))
    wrong_index = replace(events[2], batch_proof=replace(proof, leaf_index=3))
    moved = replace(events[2], payload=events[3].payload)  # altered event, genuine proof
    for env in (wrong_sibling, wrong_index, moved):
        outcome = registry.verify(env)
        assert "inclusion path" in str(outcome), outcome


def test_merkle_paths_verify_for_every_size_and_index():
    rng = random.Random(9162)
    for size in range(1, 40):
        leaves = [rng.randbytes(20) for _ in range(size)]
        root, paths = merkle.tree(leaves)
        for i, leaf in enumerate(leaves):
            assert merkle.root_from_path(leaf, i, size, paths[i]) == root
            if size > 1:
                assert merkle.root_from_path(leaf, (i + 1) % size, size, paths[i]) != root
        assert merkle.root_from_path(leaves[0], size, size, paths[0]) is None


def test_merkle_hashing_matches_rfc9162_definition():
    a, b, c = b"a", b"b", b"c"
    la, lb, lc = (merkle.leaf_hash(x) for x in (a, b, c))
    assert merkle.tree([a])[0] == la
    assert merkle.tree([a, b, c])[0] == merkle.node_hash(merkle.node_hash(la, lb), lc)


def test_proof_of_a_one_event_batch_is_empty_and_still_verifies(signer, registry):
    [only] = _batch(signer, 1)
    assert only.batch_proof == MerkleProof(0, 1, (), only.batch_proof.root)
    assert registry.verify(only).ok
    assert encode_envelope(only)  # encodes with an empty path


def test_a_group_of_one_keeps_its_own_signature_and_a_larger_group_shares_one(signer,
                                                                             registry):
    """What a connector's group commit signs: a lone event as ``issue`` would, more with one
    signature over their Merkle root."""
    issuer = EventIssuer(signer)
    payload = {"scope": "TREATMENT", "consent_document_ref": "DocumentReference/1",
               "expires_at": None}
    lone = issuer.draft("ConsentGranted", new_coi("S1"), payload, occurred_at_us=T0 + DAY)
    [alone] = [decode_envelope(e.wire) for e in issuer.issue_group([lone])]
    assert alone.batch_proof is None and registry.verify(alone).ok
    drafts = [issuer.draft("ConsentGranted", new_coi("S1"), payload, occurred_at_us=T0 + DAY)
              for _ in range(3)]
    group = [decode_envelope(e.wire) for e in issuer.issue_group(drafts)]
    assert [e.batch_proof.tree_size for e in group] == [3, 3, 3]
    assert len({e.signature for e in group}) == 1
    assert all(registry.verify(e).ok for e in group)


def test_one_pass_tree_gives_the_rfc9162_paths():
    """`tree` builds every path in one pass; each must equal the definition's PATH(m, D[n])."""
    rng = random.Random(5)
    for size in (1, 2, 3, 5, 8, 13, 64, 100):
        leaves = [rng.randbytes(8) for _ in range(size)]
        hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
        root, paths = merkle.tree(leaves)
        assert root == merkle.root_of(hashes)
        assert paths == [merkle.inclusion_path(hashes, i) for i in range(size)]
