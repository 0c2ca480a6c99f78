"""The patient's own key: a card (or wallet app) the patient holds, never the hub.

At enrolment the patient receives a card that makes its own hybrid key pair (the one
signature scheme of ``pcvhub.trust.signing``); the hub sees only the public half. The
registrar registers it as an actor with the single role PATIENT (``ActorRegistered``, on
the registry chain, which carries no pseudonym of the patient), and a clinician of the
treating site binds it to the therapy's patient by signing ``PatientCredentialIssued``
(meaning VERIFIED) on the therapy chain, having handed the card over in person. A lost
card is a ``KeyRevoked`` (reason CARD_LOST); its replacement a ``KeyRotated`` plus a new
witnessed ``PatientCredentialIssued`` (reason REISSUE_AFTER_LOSS).

What the card does for the patient:

- signs the patient's own events (consents, withdrawals) through an ``EventIssuer``;
- answers a fresh bedside challenge (``BedsideChallenge``) bound to therapy, dose and
  administration, after its PIN or after matching the live biometric against the template
  enrolled on it (match-on-card: the template never leaves the card, only its hash is
  known to the hub);
- signs a one-use consent token (``ConsentToken``) naming purpose, requester, expiry and a
  nonce, for a later use such as a vault restore.

On disk (the demo's "wallet"), a card is a folder outside the hub's key store: ``card.json``
(its public facts) and the private key sealed under the patient's PIN in the same
encrypted format as every other key (``pcvhub.trust.keys.KeyStore``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Container, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcvhub.schemas.codec import to_us
from pcvhub.schemas.envelope import HybridSignature
from pcvhub.trust.canonical import bedside_challenge_bytes, consent_token_bytes
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.keys import KeyStore
from pcvhub.trust.registry import Actor
from pcvhub.trust.signing import (
    EventSigner,
    HybridKeyPair,
    PublicKeys,
    Verification,
    verify_detached,
)

PATIENT_ROLE = "PATIENT"
#: A bedside challenge must be answered within this long before the check is recorded.
CHALLENGE_TTL_US = 5 * 60 * 1_000_000
CHALLENGE_MIN_BYTES, CHALLENGE_MAX_BYTES = 16, 64


def template_hash(template: bytes) -> str:
    """The hash of a biometric template, as the card and the hub know it."""
    return hashlib.sha256(template).hexdigest()


class BiometricMismatch(ValueError):
    """The live biometric does not match the template enrolled on the card: it does not
    sign (a card never signs for someone else)."""


class WalletError(RuntimeError):
    """A wallet folder is missing, incomplete, or does not open with the PIN given."""


@dataclass(frozen=True)
class BedsideChallenge:
    """What the bedside device asks the card to sign before a dose is given."""

    coi: str
    dose_id: str
    administration_id: str
    nonce: bytes
    issued_at_us: int

    @classmethod
    def fresh(cls, coi: str, dose_id: str, administration_id: str,
              issued_at_us: int) -> BedsideChallenge:
        return cls(coi, dose_id, administration_id, secrets.token_bytes(32), issued_at_us)


def witnessed_proof(challenge: BedsideChallenge, reason: str) -> dict[str, Any]:
    """The named fallback when the card cannot be used (the patient is unconscious, the
    card is not at hand): a clinician witnessed the identity by other means and says how."""
    if not reason.strip():
        raise ValueError("a witnessed bedside check needs the reason the card could not be "
                         "used and how identity was established instead")
    return {"kind": "WITNESSED_NO_CARD", "challenge": challenge.nonce,
            "challenge_issued_at": challenge.issued_at_us,
            "administration_id": challenge.administration_id, "patient_actor_id": None,
            "key_id": None, "biometric_template_hash": None, "ed25519_signature": None,
            "ml_dsa_65_signature": None, "witness_reason": reason}


def proof_bytes(coi: str, dose_id: str, proof: Mapping[str, Any]) -> bytes:
    """The bytes a card signed for ``proof`` (an ``IdentityVerified.patient_proof``)."""
    return bedside_challenge_bytes(
        coi, proof["patient_actor_id"] or "", proof["key_id"] or "", dose_id,
        proof["administration_id"], proof["challenge"], to_us(proof["challenge_issued_at"]),
        proof.get("biometric_template_hash"))


def verify_bedside_answer(coi: str, dose_id: str, proof: Mapping[str, Any],
                          keys: PublicKeys) -> Verification:
    """Do the card signatures in ``proof`` verify with ``keys`` over this therapy's and this
    dose's challenge? (Whose key it is, and whether the challenge is fresh and unused, is
    the gatekeeper's business: R5.)"""
    ed, pq = proof.get("ed25519_signature"), proof.get("ml_dsa_65_signature")
    what = (f"the card answer of {proof.get('patient_actor_id')} key {proof.get('key_id')} "
            f"for dose {dose_id} administration {proof.get('administration_id')}")
    if not ed or not pq:
        return Verification((f"{what} carries no signature (both halves are required)",),
                            "UNSIGNED")
    return verify_detached(proof_bytes(coi, dose_id, proof), HybridSignature(ed, pq), keys,
                           what)


@dataclass(frozen=True)
class ConsentToken:
    """The patient's one-use permission for ``requester`` to use their data for ``purpose``
    until ``expires_at_us`` (for example a restore of their genome from the vault)."""

    coi: str
    patient_actor_id: str
    key_id: str
    purpose: str
    requester: str
    expires_at_us: int
    nonce: bytes
    signature: HybridSignature

    def signed_bytes(self) -> bytes:
        return consent_token_bytes(self.coi, self.patient_actor_id, self.key_id, self.purpose,
                                   self.requester, self.expires_at_us, self.nonce)


def verify_consent_token(token: ConsentToken, keys: PublicKeys, at_us: int,
                         spent: Container[bytes]) -> Verification:
    """The token's own checks: signed by ``keys`` (the patient key bound to the therapy),
    not expired at ``at_us``, and its nonce not ``spent`` (one use only). The caller checks
    that the key is this therapy's patient's and that the consent scope holds on the log."""
    what = (f"consent token of {token.patient_actor_id} for {token.purpose} by "
            f"{token.requester}")
    if token.nonce in spent:
        return Verification((f"{what} was already used (nonce {token.nonce.hex()[:16]})",),
                            "TOKEN_SPENT")
    if at_us >= token.expires_at_us:
        return Verification((f"{what} expired at {token.expires_at_us} µs",), "TOKEN_EXPIRED")
    return verify_detached(token.signed_bytes(), token.signature, keys, what)


@dataclass(frozen=True)
class PatientCard:
    """A patient's card: its public facts and the key it holds (see the module docstring)."""

    card_id: str
    site_id: str
    signer: EventSigner
    biometric_template_hash: str | None = None

    @classmethod
    def issue(cls, site_id: str, biometric_template: bytes | None = None,
              card_id: str | None = None) -> PatientCard:
        """A new card with a key of its own; the actor id says nothing about the patient.
        The card names no therapy: a clinician binds it to one on that therapy's chain."""
        card_id = card_id or f"CARD-{secrets.token_hex(6).upper()}"
        actor_id = f"patient-{secrets.token_hex(6)}"
        signer = EventSigner(actor_id, f"{actor_id}-k1", HybridKeyPair.generate())
        return cls(card_id, site_id, signer,
                   None if biometric_template is None else template_hash(biometric_template))

    def reissued(self, card_id: str | None = None) -> PatientCard:
        """The replacement of a lost card: same patient actor, a new key (``KeyRotated``)."""
        actor_id = self.patient_actor_id
        signer = EventSigner(actor_id, f"{actor_id}-k{secrets.token_hex(3)}",
                             HybridKeyPair.generate())
        return PatientCard(card_id or f"CARD-{secrets.token_hex(6).upper()}", self.site_id,
                           signer, self.biometric_template_hash)

    @property
    def patient_actor_id(self) -> str:
        return self.signer.producer

    @property
    def key_id(self) -> str:
        return self.signer.key_id

    @property
    def public(self) -> PublicKeys:
        return self.signer.keys.public

    def actor(self) -> Actor:
        """The actor the registrar registers: role PATIENT only, a label, never a name."""
        return Actor(self.patient_actor_id, f"patient card {self.card_id}",
                     frozenset({PATIENT_ROLE}), self.site_id)

    def issuer(self) -> EventIssuer:
        return EventIssuer(self.signer)

    def credential_payload(self, patient_hash: str, reason: str = "ENROLMENT",
                           replaces_key_id: str | None = None) -> dict[str, Any]:
        """What the witnessing clinician signs (``PatientCredentialIssued``)."""
        return {"patient_hash": patient_hash, "patient_actor_id": self.patient_actor_id,
                "key_id": self.key_id, "card_id": self.card_id,
                "biometric_template_hash": self.biometric_template_hash, "reason": reason,
                "replaces_key_id": replaces_key_id}

    # -- at the bedside --------------------------------------------------------------

    def answer(self, challenge: BedsideChallenge,
               live_template: bytes | None = None) -> dict[str, Any]:
        """Sign the challenge (after the PIN, or after a match-on-card of ``live_template``);
        a live biometric that does not match raises ``BiometricMismatch``."""
        if live_template is None:
            return self.sign_challenge(challenge, None)
        if self.biometric_template_hash is None:
            raise BiometricMismatch(f"card {self.card_id} has no enrolled biometric template")
        if template_hash(live_template) != self.biometric_template_hash:
            raise BiometricMismatch(f"the live biometric does not match the template on card "
                                    f"{self.card_id}; the card does not sign")
        return self.sign_challenge(challenge, self.biometric_template_hash)

    def sign_challenge(self, challenge: BedsideChallenge,
                       matched_template_hash: str | None) -> dict[str, Any]:
        """The ``IdentityVerified.patient_proof`` the card returns."""
        proof: dict[str, Any] = {
            "kind": "CARD_SIGNATURE" if matched_template_hash is None
            else "CARD_BIOMETRIC_MATCH",
            "challenge": challenge.nonce, "challenge_issued_at": challenge.issued_at_us,
            "administration_id": challenge.administration_id,
            "patient_actor_id": self.patient_actor_id, "key_id": self.key_id,
            "biometric_template_hash": matched_template_hash, "witness_reason": None}
        signature = self.signer.keys.sign(proof_bytes(challenge.coi, challenge.dose_id, proof))
        proof["ed25519_signature"] = signature.ed25519
        proof["ml_dsa_65_signature"] = signature.ml_dsa_65
        return proof

    # -- later uses (the vault's restore) --------------------------------------------

    def consent_token(self, coi: str, purpose: str, requester: str,
                      expires_at_us: int) -> ConsentToken:
        """Let ``requester`` use the data of therapy ``coi`` once, for ``purpose``."""
        nonce = secrets.token_bytes(32)
        message = consent_token_bytes(coi, self.patient_actor_id, self.key_id, purpose,
                                      requester, expires_at_us, nonce)
        return ConsentToken(coi, self.patient_actor_id, self.key_id, purpose, requester,
                            expires_at_us, nonce, self.signer.keys.sign(message))

    # -- the wallet on disk ----------------------------------------------------------

    def save(self, folder: Path, pin: bytes, created_at: str) -> Path:
        """Write the card to ``folder`` (never the hub's key store): public facts in clear,
        the key sealed under ``pin``."""
        folder.mkdir(parents=True, exist_ok=True)
        KeyStore(folder / "key", pin).store(self.signer, created_at)
        card = folder / "card.json"
        card.write_text(json.dumps({
            "card_id": self.card_id, "site_id": self.site_id,
            "patient_actor_id": self.patient_actor_id, "key_id": self.key_id,
            "biometric_template_hash": self.biometric_template_hash}, indent=1))
        return card

    @classmethod
    def load(cls, folder: Path, pin: bytes) -> PatientCard:
        card = folder / "card.json"
        if not card.exists():
            raise WalletError(f"no patient card in {folder} (expected {card.name})")
        facts = json.loads(card.read_text())
        signer = KeyStore(folder / "key", pin).load(facts["patient_actor_id"], facts["key_id"])
        return cls(facts["card_id"], facts["site_id"], signer, facts["biometric_template_hash"])

