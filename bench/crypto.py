"""Signing and verifying cost per event, alone and in batches.

Baseline: the raw ML-DSA-65 verify rate of ``cryptography`` on a fixed message, measured
in the same run. Ratios above 1 are faster than one raw ML-DSA-65 verification.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import mldsa

from bench.report import Figure, median_rate
from pcvhub.ids import new_coi
from pcvhub.trust import signing
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.signing import EventSigner, HybridKeyPair, verify_envelope

EVENTS = 200
BATCH = 100


def _drafts(issuer: EventIssuer, n: int):
    coi = new_coi("bench")
    payload = {"batch_id": "B1", "test": "endotoxin", "specification": "<= 10 EU/mL",
               "value": "2.1", "unit": "EU/mL", "result": "PASS"}
    return [issuer.chain(issuer.draft("QcResultRecorded", coi, payload)) for _ in range(n)]


def run(quick: bool = False) -> list[Figure]:
    n = EVENTS // 4 if quick else EVENTS
    keys = HybridKeyPair.generate()
    issuer = EventIssuer(EventSigner("bench-qc", "bench-qc-k1", keys))
    raw_key = mldsa.MLDSA65PrivateKey.generate()
    message = b"x" * 200
    raw_sig = raw_key.sign(message)
    raw_pub = raw_key.public_key()

    def raw_verify() -> int:
        for _ in range(n):
            raw_pub.verify(raw_sig, message)
        return n

    baseline = median_rate(raw_verify)
    drafts = _drafts(issuer, n)
    single = [issuer.signer.seal(d) for d in drafts]
    batched = issuer.signer.seal_batch(drafts[:BATCH])

    def sign_each() -> int:
        for d in drafts:
            issuer.signer.seal(d)
        return len(drafts)

    def sign_batched() -> int:
        for start in range(0, len(drafts), BATCH):
            issuer.signer.seal_batch(drafts[start:start + BATCH])
        return len(drafts)

    def verify_each() -> int:
        signing.forget_checks()  # each round pays for every signature
        for env in single:
            assert verify_envelope(env, keys.public).ok
        return len(single)

    def verify_batched() -> int:
        # A fresh cache each round, so the root is verified once per batch, as a worker would.
        signing.forget_checks()
        for env in batched:
            assert verify_envelope(env, keys.public).ok
        return len(batched)

    base_name = "raw ML-DSA-65 verify"

    def figure(name: str, operation) -> Figure:
        return Figure("signatures", name, median_rate(operation), "events/s", base_name, baseline)

    return [
        Figure("signatures", base_name, baseline, "verifies/s"),
        figure("hybrid sign, per event", sign_each),
        figure(f"hybrid sign, batches of {BATCH}", sign_batched),
        figure("hybrid verify, per event", verify_each),
        figure(f"hybrid verify, batches of {BATCH}", verify_batched),
    ]
