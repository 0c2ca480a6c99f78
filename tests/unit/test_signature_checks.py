"""Signatures checked across cores ahead of the judgement give the judgement's own answers.

The pool's processes are real (spawned); what they compute must be what an inline check
computes, tampered records included, and a record the pool could not check (its key was
unknown when the batch was looked at) is still checked, inline, when it is judged.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from pcvhub.ids import new_coi
from pcvhub.schemas.codec import decode_envelope
from pcvhub.trust.checks import PARALLEL_FROM, SignatureChecks, batch_checks
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.registry import Actor, KeyRecord, KeyRegistry
from pcvhub.trust.signing import (
    EventSigner,
    HybridKeyPair,
    check_of,
    forget_checks,
    is_remembered,
    signed_message,
)

T0 = 1_767_225_600_000_000
DAY = 86_400_000_000


@pytest.fixture(scope="module")
def signer() -> EventSigner:
    return EventSigner("site-1-emr", "site-1-emr-k1", HybridKeyPair.generate())


@pytest.fixture()
def registry(signer) -> KeyRegistry:
    return KeyRegistry.with_anchor(
        Actor(signer.producer, "Site 1 EMR", frozenset({"HOSPITAL_IT"}), "site-1"),
        KeyRecord(signer.producer, signer.key_id, signer.keys.public, T0, T0 + 365 * DAY))


@pytest.fixture(scope="module")
def pool():
    checks = SignatureChecks(2, start_after=0)
    yield checks
    checks.close()


def _events(signer, n):
    issuer = EventIssuer(signer)
    return [decode_envelope(issuer.issue(
        "ConsentGranted", new_coi("S1"),
        {"scope": "TREATMENT", "consent_document_ref": f"DocumentReference/{i}",
         "expires_at": None}, occurred_at_us=T0 + DAY + i).wire) for i in range(n)]


def _tampered(env):
    """The ML-DSA-65 half of another key's signature over the same bytes."""
    other = HybridKeyPair.generate().sign(signed_message(env) or b"")
    return replace(env, signature=replace(env.signature, ml_dsa_65=other.ml_dsa_65))


def test_the_pools_answers_are_the_inline_answers_tampered_records_included(
        signer, registry, pool):
    envelopes = _events(signer, 40)
    envelopes[7] = _tampered(envelopes[7])
    envelopes[31] = replace(envelopes[31], signature=replace(
        envelopes[31].signature, ed25519=bytes(64)))
    forget_checks()
    inline = [registry.verify(env) for env in envelopes]
    forget_checks()

    done = asyncio.run(pool.ahead(envelopes, registry))

    assert done == 40
    # computed in the pool, before anything was judged here
    assert all(is_remembered(check_of(signed_message(e) or b"", e.signature,
                                      registry.keys[(e.producer, e.key_id)].public))
               for e in envelopes)
    judged = [registry.verify(env) for env in envelopes]
    assert judged == inline
    assert [i for i, v in enumerate(judged) if not v.ok] == [7, 31]
    assert "ML-DSA-65 signature does not verify" in str(judged[7])
    assert "Ed25519 signature does not verify" in str(judged[31])


def test_the_pool_does_not_answer_for_a_key_it_could_not_see(signer, registry, pool):
    newcomer = EventSigner("site-1-lab", "site-1-lab-k1", HybridKeyPair.generate())
    envelopes = _events(signer, 20) + _events(newcomer, 20)
    forget_checks()

    assert asyncio.run(pool.ahead(envelopes, registry)) == 20  # only the registered key's
    # registered later in the same batch: the judgement checks these inline, and fully
    registry.keys[(newcomer.producer, newcomer.key_id)] = KeyRecord(
        newcomer.producer, newcomer.key_id, newcomer.keys.public, T0, T0 + 365 * DAY)
    later = [registry.verify(env) for env in envelopes[20:]]
    assert all(v.ok for v in later)
    forged = _tampered(envelopes[25])
    assert registry.verify(forged).code == "SIGNATURE_INVALID"


def test_small_batches_and_a_pool_of_none_are_checked_inline(signer, registry):
    envelopes = _events(signer, PARALLEL_FROM)
    forget_checks()
    assert asyncio.run(SignatureChecks(0).ahead(envelopes, registry)) == 0
    assert asyncio.run(SignatureChecks(2, start_after=0).ahead(
        envelopes[:PARALLEL_FROM - 1], registry)) == 0
    assert not any(is_remembered(c) for c in batch_checks(envelopes, registry))
    assert len(batch_checks(envelopes, registry)) == PARALLEL_FROM


def test_the_pool_starts_only_once_enough_checks_were_asked_for(signer, registry):
    envelopes = _events(signer, PARALLEL_FROM)
    forget_checks()
    checks = SignatureChecks(2, start_after=2 * PARALLEL_FROM)
    try:
        assert checks.submit(envelopes, registry).collect() == 0  # inline: a short run
        assert checks.submit(envelopes, registry).collect() == PARALLEL_FROM  # now the pool
    finally:
        checks.close()


def test_undecodable_and_unsigned_records_are_left_to_the_judgement(signer, registry):
    envelopes = _events(signer, 3)
    forget_checks()
    unsigned = replace(envelopes[1], signature=None)
    assert len(batch_checks([envelopes[0], None, unsigned, envelopes[2]], registry)) == 2
