"""The registrar as a producer: put one registry event on the registry chain, and know it.

``pcvhub keys new|rotate|revoke --publish`` (and anyone else who changes the registry
from outside the gatekeeper) goes through ``publish_registry_event``:

1. **Read the chain**: follow the registry partition of the canonical log through the one
   log reader until caught up; the verifier's head of ``pcvhub:registry`` is the digest
   of the last registry event a registrar signed (a forged record never moves it). A
   registry event sent earlier and not yet judged (the gatekeeper's own registration,
   sent before the first worker ran) is waited for first, so the new one links after it.
2. **Link and sign**: issue the event with that head as ``prev_hash`` (R3).
3. **Write** it to ``ingress.direct`` and wait for Kafka's acknowledgement.
4. **Wait for the verdict**: the event on the canonical log (accepted) or an
   ``EventRejected`` naming it (refused, with the gatekeeper's reason). Only an accepted
   event is "published"; anything else raises ``RegistryPublishError``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pcvhub.config import Settings
from pcvhub.connectors.writer import IngressWriter
from pcvhub.log.reader import LogFollower, deployment_verifier, registry_partition
from pcvhub.log.verify import CANONICAL, REJECTED, VerifiedRecord
from pcvhub.topics import connector_principal
from pcvhub.trust.issuer import EventIssuer, IssuedEvent
from pcvhub.trust.registry import REGISTRY_COI
from pcvhub.trust.signing import EventSigner


class RegistryPublishError(RuntimeError):
    """The registry event was refused, or no verdict came in time."""


def publish_registry_event(settings: Settings, registrar: EventSigner, event_type: str,
                           payload: Mapping[str, Any], timeout: float = 60.0,
                           wait: bool = True) -> IssuedEvent:
    """Link ``event_type`` onto the registry chain's head, send it, return it once the
    gatekeeper accepted it (see the module doc for the steps). ``wait=False`` returns
    once Kafka holds it, not yet judged: the gatekeeper's own registration is sent
    before the first worker starts."""
    # registry events reach the hub through ingress.direct, as its connector principal
    settings = settings.as_principal(connector_principal("direct"))
    verifier = deployment_verifier(settings, "registrar")
    refusals: dict[str, dict[str, Any]] = {}
    sent: dict[str, bytes] = {}  # registry events on ingress.direct, in order -> digest

    def on_refusal(record: VerifiedRecord) -> None:
        refusals[str(record.payload.get("rejected_event_id"))] = record.payload

    def on_sent(record: VerifiedRecord) -> None:
        if record.coi == REGISTRY_COI:
            sent[record.event_id] = record.digest

    # Registry events and their refusals are keyed by pcvhub:registry: one partition each.
    partition = [registry_partition()]
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
            raise RegistryPublishError(f"the registry chain was not read within {timeout:.0f}s;"
                                       f" is Kafka at {settings.bootstrap_servers} reachable?")
        in_flight = unanswered(list(sent))
        if in_flight and wait and (still := wait_answered(in_flight)):
            raise RegistryPublishError(
                f"registry event {still[-1]} sent earlier has no verdict after {timeout:.0f}s, "
                "and a new one must link onto it or onto its predecessor: start the "
                "gatekeeper (`pcvhub worker`), then publish again")
        head = verifier.head(REGISTRY_COI)
        if not wait and in_flight:
            head = sent[in_flight[-1]]  # not yet judged: link onto it, as it will be
        # -- 2. link and sign --
        issued = EventIssuer(registrar).issue(event_type, REGISTRY_COI, dict(payload),
                                              prev_hash=head)
        # -- 3. write --
        writer.write([issued])
        if not wait:
            return issued
        # -- 4. wait for the verdict --
        event_id = issued.envelope.event_id
        if wait_answered([event_id]):
            raise RegistryPublishError(f"no verdict on {event_type} {event_id} within "
                                       f"{timeout:.0f}s: is the gatekeeper (`pcvhub worker`) "
                                       "running?")
        if event_id in refusals:
            p = refusals[event_id]
            raise RegistryPublishError(
                f"the gatekeeper refused {event_type} {event_id}: {p['rule']} "
                f"{p['reason_code']}: {p['reason']}")
        return issued
    finally:
        for follower in followers:
            follower.stop()
        writer.close()
        verifier.close()
