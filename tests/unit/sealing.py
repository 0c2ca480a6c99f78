"""Records on the gatekeeper's output topics as it writes them: sealed (for tests that
build a log in memory instead of running a gatekeeper worker)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from pcvhub.log.verify import RawRecord
from pcvhub.topics import SEAL_HEADER
from pcvhub.trust.seal import SealedFacts, SealVerdict, seal_batch
from pcvhub.trust.signing import EventSigner, HybridKeyPair

VERDICT_ON = {"events": SealVerdict.ACCEPTED, "rejected": SealVerdict.REJECTED,
              "alerts": SealVerdict.ALERT}
INGRESS = "pcvhub.ingress.direct"
SEALED_AT_US = 1_767_225_600_000_000  # 2026-01-01: after every test key's valid-from


def gatekeeper_signer() -> EventSigner:
    return EventSigner("hub-gatekeeper", "hub-gatekeeper-k1", HybridKeyPair.generate())


def sealed(signer: EventSigner, records: Sequence[RawRecord], *,
           sealed_at_us: int = SEALED_AT_US) -> list[RawRecord]:
    """``records`` sealed in one batch, each as the answer to the ingress record at its own
    partition and offset of ``INGRESS`` (records off the output topics pass unchanged)."""
    outputs = [r for r in records if r.topic in VERDICT_ON]
    facts = [SealedFacts(r.topic, r.partition, r.key, r.value or b"", VERDICT_ON[r.topic],
                         INGRESS, r.partition, r.offset) for r in outputs]
    seals = dict(zip((r.position for r in outputs),
                     seal_batch(signer, facts, sealed_at_us), strict=True))
    return [r if r.position not in seals else
            replace(r, headers=(*r.headers, (SEAL_HEADER, seals[r.position].encode())))
            for r in records]
