"""Issue signed events: the one way producers (connectors, partners, the demo) make an envelope.

An ``EventIssuer`` belongs to one actor and one key. It encodes the payload with the
project's codec, fills the envelope (UUIDv7 id, schema fingerprint, times, previous
chain digest of the same therapy), signs it with the hybrid signer and returns both the
envelope and its wire bytes. It remembers the chain head of every therapy it has issued
for, because R3 requires each event to name the digest of the previous accepted event;
a producer that is not the only writer of a therapy passes ``prev_hash`` explicitly
(for example from the audit projection's chain head).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pcvhub.ids import uuid7
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import encode_envelope, encode_payload
from pcvhub.schemas.envelope import Envelope, LateEntry, SignatureMeaning
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.signing import EventSigner


@dataclass(frozen=True)
class IssuedEvent:
    """An envelope ready to send: ``wire`` is what goes on an ingress topic, keyed by CoI."""

    envelope: Envelope
    wire: bytes

    @property
    def key(self) -> bytes:
        return self.envelope.coi.encode()

    @property
    def digest(self) -> bytes:
        return chain_digest(self.envelope)


def now_us() -> int:
    return time.time_ns() // 1000


class EventIssuer:
    """Makes signed envelopes for one actor; tracks the chain head per therapy it writes."""

    def __init__(self, signer: EventSigner) -> None:
        self.signer = signer
        self.catalog = load_catalog()
        self.heads: dict[str, bytes] = {}

    @property
    def producer(self) -> str:
        return self.signer.producer

    def draft(
        self,
        event_type: str,
        coi: str,
        payload: Mapping[str, Any],
        *,
        occurred_at_us: int | None = None,
        meaning: SignatureMeaning = SignatureMeaning.AUTHORED,
        prev_hash: bytes | None = None,
        event_id: str | None = None,
        late_entry: str | None = None,
    ) -> Envelope:
        """An unsigned envelope; the payload is validated and encoded here.

        ``late_entry``: why the event is recorded only now (it occurred further back than
        the deployment's late-entry bound); signed with the event and shown as late.
        """
        full_name = self.catalog.full_name(event_type)
        fingerprint, body = encode_payload(full_name, dict(payload))
        occurred = now_us() if occurred_at_us is None else occurred_at_us
        return Envelope(
            event_id=event_id or str(uuid7(occurred // 1000)),
            event_type=full_name,
            schema_fingerprint=fingerprint,
            coi=coi,
            occurred_at_us=occurred,
            signed_at_us=now_us(),
            producer=self.signer.producer,
            key_id=self.signer.key_id,
            meaning=meaning,
            prev_hash=self.heads.get(coi, b"") if prev_hash is None else prev_hash,
            payload=body,
            late_entry=None if late_entry is None else LateEntry(late_entry),
        )

    def issue(self, event_type: str, coi: str, payload: Mapping[str, Any], **options: Any
              ) -> IssuedEvent:
        """Draft, sign and encode one event; the chain head of ``coi`` moves to it."""
        return self._sealed(self.draft(event_type, coi, payload, **options))

    def _sealed(self, draft: Envelope) -> IssuedEvent:
        """Sign and encode one draft on its own; its therapy's chain head moves to it."""
        envelope = self.signer.seal(draft)
        issued = IssuedEvent(envelope, encode_envelope(envelope))
        self.heads[envelope.coi] = issued.digest
        return issued

    def issue_batch(self, drafts: Sequence[Envelope]) -> list[IssuedEvent]:
        """Sign many drafts with one hybrid signature over their Merkle root.

        Drafts of the same therapy must already be chained (use :meth:`chain`).
        """
        sealed = self.signer.seal_batch(list(drafts))
        issued = [IssuedEvent(env, encode_envelope(env)) for env in sealed]
        for event in issued:
            self.heads[event.envelope.coi] = event.digest
        return issued

    def chain(self, draft: Envelope) -> Envelope:
        """Point a draft at this issuer's chain head of its therapy and advance the head."""
        linked = replace(draft, prev_hash=self.heads.get(draft.coi, b""))
        self.heads[draft.coi] = chain_digest(linked)
        return linked

    def issue_group(self, drafts: Sequence[Envelope]) -> list[IssuedEvent]:
        """Sign chained drafts written together (a connector's group commit).

        Several share one hybrid signature over their Merkle root (``issue_batch``). A lone
        draft gets its own signature instead: a batch of one would verify too, but would
        carry a root and an empty path for nothing, and an uncontended producer's events
        stay exactly what ``issue`` makes.
        """
        if len(drafts) != 1:
            return self.issue_batch(drafts)
        return [self._sealed(drafts[0])]
