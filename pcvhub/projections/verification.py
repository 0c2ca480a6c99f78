"""Re-verifying signatures on the way into the projections, independently of the gatekeeper.

The gatekeeper already checked every event it accepted (R1), so why check again? Because
the audit view answers "is this chain authentic" for people who need not trust the
gatekeeper: a record written to the canonical topic by anything else than the
gatekeeper (a bug, a forged write by someone with broker access) shows up as not
verified, and a key revoked later, even with a compromise date in the past, marks the
events it signed (the view ``audit_trail`` compares event time with the key's window).

What is checked here is only the cryptography: both signatures (or the batch's
signature and the event's Merkle inclusion path) against the public keys registered for
the signer's key id. That answer never changes once the key is known, so it does not
depend on how partitions interleave and a rebuilt file gets the same answer. Validity
windows and revocations *do* change as the registry chain grows, so they are computed
when the view is queried, not stored.

Public keys come from a :class:`KeyRegistry` folded from the registry chain
(``pcvhub:registry``) on the canonical topic, starting from the deployment's trust anchor
(``<data_dir>/trust-anchor.json``) whose registrar signs that chain. A registry event is
folded only if it verifies. Without an anchor file the registrar cannot be checked:
registry events are then marked NO_TRUST_ANCHOR and folded on the gatekeeper's word.

The registry chain lives in one partition; an event of another partition may be read
before the registration of its key. The gatekeeper accepted the event only after that
registration was on the log, so :class:`SignatureCheck` then reads the registry
partition ahead (``catch_up``) to find it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pcvhub.schemas.envelope import Envelope
from pcvhub.trust.registry import REGISTRY_COI, REGISTRY_EVENTS, KeyRegistry
from pcvhub.trust.signing import verify_envelope

VERIFIED = "VERIFIED"
UNREGISTERED_KEY = "UNREGISTERED_KEY"
NO_TRUST_ANCHOR = "NO_TRUST_ANCHOR"
#: outcomes under which a registry event is folded into the key material
FOLDABLE = frozenset({VERIFIED, NO_TRUST_ANCHOR})


def is_registry_event(env: Envelope) -> bool:
    return env.coi == REGISTRY_COI and env.event_type.rsplit(".", 1)[-1] in REGISTRY_EVENTS


class SignatureCheck:
    """Checks envelopes against the public keys of a registry folded from the log.

    :param registry: the trust anchor's registry (or an empty one), already holding the
        registry events projected before (see ``ProjectionStore.fold_registry``).
    :param anchored: whether the registry started from a trust anchor file.
    :param catch_up: returns registry-chain envelopes beyond those folded so far, in log
        order (reads the registry partition ahead); None when there is nothing to read.
    """

    def __init__(self, registry: KeyRegistry, anchored: bool,
                 catch_up: Callable[[], Iterable[Envelope]] | None = None) -> None:
        self.registry = registry
        self.anchored = anchored
        self._catch_up = catch_up
        self._caught_up = False

    def new_batch(self) -> None:
        """Records of a new batch follow: reading ahead may find registrations again."""
        self._caught_up = False

    def check(self, env: Envelope) -> tuple[str, str | None]:
        """(outcome, sentence) for one envelope: VERIFIED and None when both halves hold."""
        key = self.registry.keys.get((env.producer, env.key_id))
        if key is None and self._catch_up is not None and not self._caught_up:
            # Once per batch is enough: the read reaches the registry partition's end as
            # it is now, after the batch was fetched, so it holds every registration that
            # preceded an event of the batch. Unknown keys then cost one read per batch.
            self._caught_up = True
            for ahead in self._catch_up():
                self.fold(ahead, self._check_known(ahead))
            key = self.registry.keys.get((env.producer, env.key_id))
        if key is None:
            return self._unknown(env)
        return self._check_known(env)

    def fold(self, env: Envelope, outcome: tuple[str, str | None]) -> None:
        """Fold a registry event into the key material if its signature holds."""
        if is_registry_event(env) and outcome[0] in FOLDABLE:
            self.registry.observe(env)

    def _check_known(self, env: Envelope) -> tuple[str, str | None]:
        key = self.registry.keys.get((env.producer, env.key_id))
        if key is None:
            return self._unknown(env)
        result = verify_envelope(env, key.public)
        return (VERIFIED, None) if result.ok else (result.code, str(result))

    def _unknown(self, env: Envelope) -> tuple[str, str | None]:
        if not self.anchored and env.coi == REGISTRY_COI:
            return NO_TRUST_ANCHOR, (
                f"event {env.event_id} on the registry chain is signed by {env.producer} key "
                f"{env.key_id}, and without a trust anchor file the registrar's keys are "
                "unknown: install <data_dir>/trust-anchor.json to verify the registry")
        return UNREGISTERED_KEY, (
            f"event {env.event_id} is signed by {env.producer} key {env.key_id}, which is not "
            "registered on the registry chain (nor the trust anchor)")
