"""Put one event on a chain that no connector owns, and know it was accepted.

The registry chain (``pcvhub keys new|rotate|revoke --publish``: ``publish_registry_event``)
and a study's chain (``pcvhub mpc request|approve``, the runs a study coordinator records)
are written by people and services outside the therapies' connectors; each event goes
through ``publish_chain_event``:

1. **Read the chain**: follow the chain's partition of the canonical log through the one
   log reader until caught up; the verifier's head of the chain is the digest of the last
   event admitted there (a forged record never moves it). An event of the chain sent
   earlier and not yet judged (the gatekeeper's own registration, sent before the first
   worker ran) is waited for first, so the new one links after it.
2. **Link and sign**: issue the event with that head as ``prev_hash`` (R3).
3. **Write** it to ``ingress.direct`` and wait for Kafka's acknowledgement.
4. **Wait for the verdict**: the event on the canonical log (accepted) or an
   ``EventRejected`` naming it (refused, with the gatekeeper's reason). Only an accepted
   event is "published"; anything else raises ``RegistryPublishError``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pcvhub.config import Settings
from pcvhub.connectors.writer import IngressWriter
from pcvhub.log.reader import LogFollower, deployment_verifier, registry_partition
from pcvhub.log.verify import CANONICAL, REJECTED, VerifiedRecord
from pcvhub.schemas.policy import meaning_for
from pcvhub.topics import connector_principal, partition_for, topic_spec
from pcvhub.trust.issuer import EventIssuer, IssuedEvent
from pcvhub.trust.registry import REGISTRY_COI
from pcvhub.trust.signing import EventSigner


class RegistryPublishError(RuntimeError):
    """The event was refused, or no verdict came in time."""


def publish_registry_event(settings: Settings, registrar: EventSigner, event_type: str,
                           payload: Mapping[str, Any], timeout: float = 60.0,
                           wait: bool = True) -> IssuedEvent:
    """Link ``event_type`` onto the registry chain's head, send it, return it once the
    gatekeeper accepted it (see the module doc for the steps). ``wait=False`` returns
    once Kafka holds it, not yet judged: the gatekeeper's own registration is sent
    before the first worker starts."""
    return publish_chain_event(settings, registrar, REGISTRY_COI, event_type, payload,
                               timeout=timeout, wait=wait)


def publish_chain_event(settings: Settings, signer: EventSigner, coi: str, event_type: str,
                        payload: Mapping[str, Any], timeout: float = 60.0,
                        wait: bool = True) -> IssuedEvent:
    """Link ``event_type`` onto the head of chain ``coi``, signed by ``signer``, send it,
    return it once the gatekeeper accepted it (``wait=False``: once Kafka holds it)."""
    return publish_chain_events(settings, signer, coi, [(event_type, payload)],
                                timeout=timeout, wait=wait)[0]


def publish_chain_events(settings: Settings, signer: EventSigner, coi: str,
                         events: Sequence[tuple[str, Mapping[str, Any]]],
                         timeout: float = 60.0, wait: bool = True) -> list[IssuedEvent]:
    """Several events onto chain ``coi``, each linked onto the one before, with one read
    of the chain; returned once every one is accepted (the first refusal raises)."""
    # these events reach the hub through ingress.direct, as its connector principal
    settings = settings.as_principal(connector_principal("direct"))
    verifier = deployment_verifier(settings, "registrar" if coi == REGISTRY_COI
                                   else f"publisher of {coi}")
    refusals: dict[str, dict[str, Any]] = {}
    sent: dict[str, bytes] = {}  # registry events on ingress.direct, in order -> digest

    def on_refusal(record: VerifiedRecord) -> None:
        refusals[str(record.payload.get("rejected_event_id"))] = record.payload

    def on_sent(record: VerifiedRecord) -> None:
        if record.coi == coi:
            sent[record.event_id] = record.digest

    # A chain's events and their refusals are keyed by its id: one partition each.
    partition = [registry_partition() if coi == REGISTRY_COI
                 else partition_for(coi.encode(), topic_spec(CANONICAL).partitions)]
    canonical = LogFollower(settings, [CANONICAL], verifier, partitions=partition,
                            name="registrar-canonical")
    rejected = LogFollower(settings, [REJECTED], verifier, on_refusal, partitions=partition,
                           name="registrar-refusals")
    ingress = LogFollower(settings, ["ingress.direct"], verifier, on_sent, partitions=partition,
                          name="registrar-ingress")

    def unanswered(event_ids: list[str]) -> list[str]:
        return [i for i in event_ids if not canonical.has_read(i) and i not in refusals]

    def wait_answered(event_ids: list[str]) -> list[str]:
        deadline = time.monotonic() + timeout
        while (waiting := unanswered(event_ids)) and time.monotonic() < deadline:
            canonical.wait_read(waiting, 0.2)
        return unanswered(event_ids)

    writer = IngressWriter(settings, "direct")
    followers = (canonical, rejected, ingress)
    try:
        # -- 1. read the chain, and what is still on its way to it --
        for follower in followers:
            follower.start()
        if not all(f.wait_caught_up(timeout) for f in followers):
            raise RegistryPublishError(f"chain {coi} was not read within {timeout:.0f}s;"
                                       f" is Kafka at {settings.bootstrap_servers} reachable?")
        in_flight = unanswered(list(sent))
        if in_flight and wait and (still := wait_answered(in_flight)):
            raise RegistryPublishError(
                f"event {still[-1]} of {coi} sent earlier has no verdict after {timeout:.0f}s, "
                "and a new one must link onto it or onto its predecessor: start the "
                "gatekeeper (`pcvhub worker`), then publish again")
        head = verifier.head(coi)
        if not wait and in_flight:
            head = sent[in_flight[-1]]  # not yet judged: link onto it, as it will be
        # -- 2. link and sign --
        issuer = EventIssuer(signer)
        issued: list[IssuedEvent] = []
        for event_type, payload in events:
            issued.append(issuer.issue(event_type, coi, dict(payload), prev_hash=head,
                                       meaning=meaning_for(event_type)))
            head = issued[-1].digest
        # -- 3. write --
        writer.write(issued)
        if not wait:
            return issued
        # -- 4. wait for the verdicts --
        event_ids = [e.envelope.event_id for e in issued]
        if wait_answered(event_ids):
            raise RegistryPublishError(f"no verdict on {events[0][0]} "
                                       f"{event_ids[0]} within {timeout:.0f}s: is the "
                                       "gatekeeper (`pcvhub worker`) running?")
        for (kind, _), event_id in zip(events, event_ids, strict=True):
            if event_id in refusals:
                p = refusals[event_id]
                raise RegistryPublishError(
                    f"the gatekeeper refused {kind} {event_id}: {p['rule']} "
                    f"{p['reason_code']}: {p['reason']}")
        return issued
    finally:
        for follower in followers:
            follower.stop()
        writer.close()
        verifier.close()
