"""The registrar as a producer: put one registry event on the registry chain, and know it.

``pcvhub keys new|rotate|revoke --publish`` (and anyone else who changes the registry
from outside the gatekeeper) goes through ``publish_registry_event``:

1. **Read the chain**: follow the registry partition of the canonical log through the one
   log reader until caught up; the verifier's head of ``pcvhub:registry`` is the digest
   of the last registry event a registrar signed (a forged record never moves it).
2. **Link and sign**: issue the event with that head as ``prev_hash`` (R3).
3. **Write** it to ``ingress.direct`` and wait for Kafka's acknowledgement.
4. **Wait for the verdict**: the event on the canonical log (accepted) or an
   ``EventRejected`` naming it (refused, with the gatekeeper's reason). Only an accepted
   event is "published"; anything else raises ``RegistryPublishError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pcvhub.config import Settings
from pcvhub.connectors.writer import IngressWriter
from pcvhub.log.reader import LogFollower, deployment_verifier, registry_partition
from pcvhub.log.verify import CANONICAL, REJECTED, VerifiedRecord
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
    verifier = deployment_verifier(settings, "registrar")
    refusals: dict[str, dict[str, Any]] = {}

    def on_refusal(record: VerifiedRecord) -> None:
        refusals[str(record.payload.get("rejected_event_id"))] = record.payload

    # Registry events and their refusals are keyed by pcvhub:registry: one partition each.
    partition = [registry_partition()]
    canonical = LogFollower(settings, [CANONICAL], verifier, partitions=partition,
                            name="registrar-canonical")
    rejected = LogFollower(settings, [REJECTED], verifier, on_refusal, partitions=partition,
                           name="registrar-refusals")
    writer = IngressWriter(settings, "direct")
    try:
        # -- 1. read the chain --
        canonical.start()
        rejected.start()
        if not (canonical.wait_caught_up(timeout) and rejected.wait_caught_up(timeout)):
            raise RegistryPublishError(f"the registry chain was not read within {timeout:.0f}s;"
                                       f" is Kafka at {settings.bootstrap_servers} reachable?")
        # -- 2. link and sign --
        issued = EventIssuer(registrar).issue(event_type, REGISTRY_COI, dict(payload),
                                              prev_hash=verifier.head(REGISTRY_COI))
        # -- 3. write --
        writer.write([issued])
        if not wait:
            return issued
        # -- 4. wait for the verdict --
        event_id = issued.envelope.event_id
        waited = 0.0
        while waited < timeout:
            if not canonical.wait_read([event_id], 0.2):
                return issued
            if event_id in refusals:
                p = refusals[event_id]
                raise RegistryPublishError(
                    f"the gatekeeper refused {event_type} {event_id}: {p['rule']} "
                    f"{p['reason_code']}: {p['reason']}")
            waited += 0.2
        raise RegistryPublishError(f"no verdict on {event_type} {event_id} within "
                                   f"{timeout:.0f}s: is the gatekeeper (`pcvhub worker`) "
                                   "running?")
    finally:
        canonical.stop()
        rejected.stop()
        writer.close()
        verifier.close()
