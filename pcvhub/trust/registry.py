"""Who may sign: actors, their roles and site, and their keys with validity windows; and
which design models designs may name (``ModelRecord``).

Actors and keys are events (ActorRegistered, KeyRotated, KeyRevoked) on the log; this
registry is their fold. A key is valid for an event only when the event's occurred-at
lies inside the key's window ``[valid_from, valid_until)`` and before any revocation:
a key used after revocation fails even if its signature is perfect.

Registrations are themselves signed. The first registrar is a *trust anchor* given to
the registry at construction (its public keys ship with the deployment); everyone else
is known only through events the gatekeeper accepted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pcvhub.schemas.codec import to_us
from pcvhub.schemas.envelope import Envelope
from pcvhub.schemas.policy import registry_event_types
from pcvhub.times import utc_iso
from pcvhub.trust.signing import PublicKeys, Verification, verify_envelope

#: Event types that change the registry (short names): the policy table's registry rows.
REGISTRY_EVENTS = registry_event_types()
#: The chain-of-identity id under which registry events are chained and partitioned.
REGISTRY_COI = "pcvhub:registry"
#: Where a deployment keeps its trust anchor, inside the data folder.
ANCHOR_FILE = "trust-anchor.json"


@dataclass(frozen=True)
class KeyRecord:
    actor_id: str
    key_id: str
    public: PublicKeys
    valid_from_us: int
    valid_until_us: int | None = None
    revoked_at_us: int | None = None
    revocation_reason: str | None = None
    #: the earliest time a revoked key may have been misused (KeyRevoked.compromised_since)
    compromised_since_us: int | None = None

    def problem_at(self, at_us: int) -> tuple[str, str] | None:
        """(code, reason) why this key cannot sign an event that occurred at ``at_us``."""
        if self.revoked_at_us is not None and at_us >= self.revoked_at_us:
            return "KEY_REVOKED", (f"key {self.key_id} of {self.actor_id} was revoked at "
                    f"{utc_iso(self.revoked_at_us)} ({self.revocation_reason}); the event "
                    f"occurred at {utc_iso(at_us)}")
        if at_us < self.valid_from_us:
            return "KEY_NOT_YET_VALID", (f"key {self.key_id} of {self.actor_id} is valid only from "
                    f"{utc_iso(self.valid_from_us)}; the event occurred at {utc_iso(at_us)}")
        if self.valid_until_us is not None and at_us >= self.valid_until_us:
            return "KEY_EXPIRED", (f"key {self.key_id} of {self.actor_id} expired at "
                    f"{utc_iso(self.valid_until_us)}; the event occurred at {utc_iso(at_us)}")
        return None


@dataclass(frozen=True)
class Actor:
    actor_id: str
    display_name: str
    roles: frozenset[str]
    site_id: str


@dataclass(frozen=True)
class ModelRecord:
    """A registered design model: designs may name it from ``valid_from_us`` until it is
    retired, and only with its hash."""

    model_id: str
    version: str
    model_hash: str
    design_service: str
    approved_by: str
    valid_from_us: int
    retired_at_us: int | None = None

    def problem_at(self, model_hash: str, at_us: int) -> str | None:
        """Why a design occurring at ``at_us`` may not name this model with ``model_hash``,
        or None."""
        if model_hash.lower() != self.model_hash:
            return (f"names hash {model_hash[:16]}..., but model {self.model_id} is "
                    f"registered with hash {self.model_hash[:16]}...: the weights or "
                    "container that ran are not the validated ones")
        if at_us < self.valid_from_us:
            return f"occurred before model {self.model_id} was approved for use"
        if self.retired_at_us is not None and at_us >= self.retired_at_us:
            return (f"occurred after model {self.model_id} was retired at "
                    f"{utc_iso(self.retired_at_us)}")
        return None


@dataclass
class KeyRegistry:
    actors: dict[str, Actor] = field(default_factory=dict)
    keys: dict[tuple[str, str], KeyRecord] = field(default_factory=dict)
    #: ids of registry events already folded: the gatekeeper that accepts an event and
    #: the follower that later reads it from the log may both offer it; it applies once.
    applied: set[str] = field(default_factory=set)
    #: the design models designs may name, by model id
    models: dict[str, ModelRecord] = field(default_factory=dict)

    @classmethod
    def with_anchor(cls, actor: Actor, key: KeyRecord) -> KeyRegistry:
        registry = cls()
        registry.actors[actor.actor_id] = actor
        registry.keys[(key.actor_id, key.key_id)] = key
        return registry

    def copy(self) -> KeyRegistry:
        return KeyRegistry(dict(self.actors), dict(self.keys), set(self.applied),
                           dict(self.models))

    # --- reading --------------------------------------------------------------------
    def roles_of(self, actor_id: str) -> frozenset[str]:
        actor = self.actors.get(actor_id)
        return actor.roles if actor is not None else frozenset()

    def site_of(self, actor_id: str) -> str | None:
        actor = self.actors.get(actor_id)
        return actor.site_id if actor is not None else None

    def key_problem(self, actor_id: str, key_id: str, at_us: int) -> tuple[str, str] | None:
        """(code, reason) why this actor's key cannot sign at ``at_us``, or None."""
        key = self.keys.get((actor_id, key_id))
        if key is None:
            return self._unregistered(actor_id, key_id)
        return key.problem_at(at_us)

    def registration_problem(self, actor_id: str, key_id: str, at_us: int
                             ) -> tuple[str, str] | None:
        """Like :meth:`key_problem`, but only what a registration fixes for good: the key is
        registered and valid from before ``at_us``. Revocation and expiry arrive later on
        the registry chain (see ``pcvhub.log.verify`` for who judges them)."""
        key = self.keys.get((actor_id, key_id))
        if key is None:
            return self._unregistered(actor_id, key_id)
        if at_us < key.valid_from_us:
            return key.problem_at(at_us)
        return None

    def _unregistered(self, actor_id: str, key_id: str) -> tuple[str, str]:
        known = sorted(k for a, k in self.keys if a == actor_id)
        return "UNREGISTERED_KEY", (f"key {key_id} is not registered for actor {actor_id}"
                + (f" (registered keys: {', '.join(known)})" if known else
                   " (the actor has no registered key: an unregistered signer)"))

    def verify(self, env: Envelope) -> Verification:
        """R1: key known and valid at occurred-at, and both signatures verify."""
        problem = self.key_problem(env.producer, env.key_id, env.occurred_at_us)
        if problem is not None:
            code, reason = problem
            return Verification((f"event {env.event_id}: {reason}",), code)
        return verify_envelope(env, self.keys[(env.producer, env.key_id)].public)

    # --- the fold ---------------------------------------------------------------------
    def apply(self, event_type: str, payload: Mapping[str, Any]) -> None:
        """Fold one accepted registry event (short type name, decoded payload)."""
        p = payload
        if event_type == "ActorRegistered":
            self.actors[p["actor_id"]] = Actor(p["actor_id"], p["display_name"],
                                               frozenset(p["roles"]), p["site_id"])
            self.keys[(p["actor_id"], p["key_id"])] = KeyRecord(
                p["actor_id"], p["key_id"],
                PublicKeys(p["ed25519_public_key"], p["ml_dsa_65_public_key"]),
                to_us(p["valid_from"]), _opt_us(p.get("valid_until")))
        elif event_type == "KeyRotated":
            old = self.keys.get((p["actor_id"], p["old_key_id"]))
            if old is not None:
                self.keys[(p["actor_id"], p["old_key_id"])] = replace(
                    old, valid_until_us=to_us(p["old_key_valid_until"]))
            self.keys[(p["actor_id"], p["new_key_id"])] = KeyRecord(
                p["actor_id"], p["new_key_id"],
                PublicKeys(p["ed25519_public_key"], p["ml_dsa_65_public_key"]),
                to_us(p["valid_from"]), _opt_us(p.get("valid_until")))
        elif event_type == "KeyRevoked":
            key = self.keys.get((p["actor_id"], p["key_id"]))
            if key is not None:
                self.keys[(p["actor_id"], p["key_id"])] = replace(
                    key, revoked_at_us=to_us(p["revoked_at"]),
                    revocation_reason=str(p["reason"]),
                    compromised_since_us=(None if p.get("compromised_since") is None
                                          else to_us(p["compromised_since"])))
        elif event_type == "ModelRegistered":
            self.models[p["model_id"]] = ModelRecord(
                p["model_id"], p["version"], p["model_hash"].lower(), p["design_service"],
                p["approved_by"], to_us(p["valid_from"]))
        elif event_type == "ModelRetired":
            model = self.models.get(p["model_id"])
            if model is not None:
                self.models[p["model_id"]] = replace(model,
                                                     retired_at_us=to_us(p["retired_at"]))

    def apply_event(self, event_id: str, event_type: str, payload: Mapping[str, Any]) -> bool:
        """Fold an accepted registry event once; False if it was already folded."""
        if event_id in self.applied:
            return False
        self.applied.add(event_id)
        self.apply(event_type, payload)
        return True


def _opt_us(value: datetime | int | None) -> int | None:
    return None if value is None else to_us(value)


# --- payloads of the registry events (the one place they are built) ---------------------

def registration_payload(actor: Actor, key_id: str, public: PublicKeys, valid_from_us: int,
                         valid_until_us: int | None = None) -> dict[str, Any]:
    """ActorRegistered: an actor, its roles and site, and its first key."""
    return {"actor_id": actor.actor_id, "display_name": actor.display_name,
            "roles": sorted(actor.roles), "site_id": actor.site_id, "key_id": key_id,
            "ed25519_public_key": public.ed25519, "ml_dsa_65_public_key": public.ml_dsa_65,
            "valid_from": valid_from_us, "valid_until": valid_until_us}


def rotation_payload(actor_id: str, old_key_id: str, new_key_id: str, public: PublicKeys,
                     at_us: int, overlap_us: int = 0) -> dict[str, Any]:
    """KeyRotated: the new key is valid from ``at_us``; the old one ``overlap_us`` longer."""
    return {"actor_id": actor_id, "old_key_id": old_key_id, "new_key_id": new_key_id,
            "ed25519_public_key": public.ed25519, "ml_dsa_65_public_key": public.ml_dsa_65,
            "valid_from": at_us, "valid_until": None, "old_key_valid_until": at_us + overlap_us}


def revocation_payload(actor_id: str, key_id: str, at_us: int, reason: str) -> dict[str, Any]:
    return {"actor_id": actor_id, "key_id": key_id, "revoked_at": at_us, "reason": reason}


# --- the trust anchor: the registrar every deployment starts from -----------------------

def write_anchor(path: Path, actor: Actor, key: KeyRecord) -> None:
    """Store the registrar's public keys; ship this file with every hub process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "actor_id": actor.actor_id, "display_name": actor.display_name,
        "roles": sorted(actor.roles), "site_id": actor.site_id, "key_id": key.key_id,
        "ed25519": key.public.ed25519.hex(), "ml_dsa_65": key.public.ml_dsa_65.hex(),
        "valid_from_us": key.valid_from_us}, indent=1))


def load_anchor(path: Path) -> KeyRegistry:
    """A registry that knows only the registrar of the anchor file."""
    if not path.exists():
        raise FileNotFoundError(f"no trust anchor at {path}: create the registrar with "
                                "`pcvhub keys new hub-registrar --role REGISTRAR --anchor`")
    a = json.loads(path.read_text())
    actor = Actor(a["actor_id"], a["display_name"], frozenset(a["roles"]), a["site_id"])
    return KeyRegistry.with_anchor(actor, KeyRecord(
        a["actor_id"], a["key_id"],
        PublicKeys(bytes.fromhex(a["ed25519"]), bytes.fromhex(a["ml_dsa_65"])),
        a["valid_from_us"]))


def anchor_ledger(path: Path, origin: str, vkey: str, mldsa_vkey: str,
                  archive_key: bytes | None = None) -> None:
    """Name the transparency ledger's verifier keys in the anchor (its ``ledger`` entry):
    whoever holds the anchor can then check the ledger's checkpoints (``pcvhub audit
    verify``), as it checks the registrar's signatures, and its daily archive seals (the
    public archive key, hex). Readers of the registrar ignore it."""
    anchor = json.loads(path.read_text())
    anchor["ledger"] = {"origin": origin, "vkey": vkey, "mldsa_vkey": mldsa_vkey}
    if archive_key is not None:
        anchor["ledger"]["archive_key"] = archive_key.hex()
    path.write_text(json.dumps(anchor, indent=1))
