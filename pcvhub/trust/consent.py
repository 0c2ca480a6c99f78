"""The consent facts of one therapy: the patient's bound card keys and every grant.

``ConsentRecord`` folds a therapy's accepted ``PatientCredentialIssued``, ``ConsentGranted``,
``ConsentWitnessed`` and ``ConsentWithdrawn`` events. The gatekeeper's case holds one (R2
and R7 read it); it lives on the trust floor so that any worker reading the log can fold the
same facts without importing the gatekeeper: the vault's restore judges a patient's consent
token with :meth:`ConsentRecord.check_token`, an MPC party counts a therapy only when
:meth:`ConsentRecord.signers` says the patient signed its research consent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pcvhub.schemas.codec import to_us
from pcvhub.schemas.policy import PATIENT_SIGNED_SCOPES
from pcvhub.trust.patient_card import ConsentToken, verify_consent_token
from pcvhub.trust.registry import KeyRegistry
from pcvhub.trust.signing import Verification


class ConsentSigner(StrEnum):
    """Whose signature a consent grant carries (shown beside every consent)."""

    PATIENT = "PATIENT"        # the patient's own card key, bound to this therapy
    WITNESSED = "WITNESSED"    # ConsentWitnessed: a clinician, for a patient who could not sign
    HOSPITAL = "HOSPITAL"      # the hospital's record of a paper form (clinician or connector)


#: who may grant a scope of ``PATIENT_SIGNED_SCOPES`` so that it counts
COUNTS_FOR_PATIENT_SCOPES = frozenset({ConsentSigner.PATIENT, ConsentSigner.WITNESSED})


@dataclass
class ConsentWindow:
    """One grant of a scope: valid from ``granted_at_us`` until it expires or is withdrawn."""

    granted_at_us: int
    expires_at_us: int | None = None
    withdrawn_at_us: int | None = None
    granted_by_event: str = ""
    signed_by: ConsentSigner = ConsentSigner.HOSPITAL

    def covers(self, at_us: int) -> bool:
        return (self.granted_at_us <= at_us
                and (self.expires_at_us is None or at_us < self.expires_at_us)
                and (self.withdrawn_at_us is None or at_us < self.withdrawn_at_us))


@dataclass(frozen=True)
class PatientCredential:
    """A card key a clinician bound to this therapy's patient (PatientCredentialIssued)."""

    patient_actor_id: str
    key_id: str
    card_id: str
    biometric_template_hash: str | None
    issued_at_us: int
    witnessed_by: str
    event_id: str


def _opt_us(value: Any) -> int | None:
    return None if value is None else to_us(value)


@dataclass
class ConsentRecord:
    """The fold of one therapy's consent events (see the module docstring)."""

    consents: dict[str, list[ConsentWindow]] = field(default_factory=dict)
    patient_credentials: dict[str, PatientCredential] = field(default_factory=dict)  # by key

    # -- reading -------------------------------------------------------------------

    def patient_credential(self, actor_id: str, key_id: str) -> PatientCredential | None:
        """The credential binding ``actor_id``'s key ``key_id`` to this therapy's patient."""
        found = self.patient_credentials.get(key_id)
        return found if found is not None and found.patient_actor_id == actor_id else None

    def grants(self, scope: str) -> list[ConsentWindow]:
        """The grants of ``scope`` that count: for a scope of ``PATIENT_SIGNED_SCOPES`` only
        the patient's own or a witnessed one (a grant the hospital recorded under older rules
        stays on the log, but does not let the patient's data leave the treatment)."""
        windows = self.consents.get(scope, [])
        if scope in PATIENT_SIGNED_SCOPES:
            return [w for w in windows if w.signed_by in COUNTS_FOR_PATIENT_SCOPES]
        return list(windows)

    def covers(self, scope: str, at_us: int) -> bool:
        return any(window.covers(at_us) for window in self.grants(scope))

    def signers(self, scope: str, at_us: int) -> frozenset[ConsentSigner]:
        """Who signed the grants of ``scope`` that hold at ``at_us`` (for secondary use that
        counts only the patient's own signature: ``ConsentSigner.PATIENT in ...``)."""
        return frozenset(w.signed_by for w in self.grants(scope) if w.covers(at_us))

    def ended(self, scope: str, at_us: int) -> ConsentWindow | None:
        """The latest grant of ``scope`` that began before ``at_us`` but no longer covers it."""
        ended = [w for w in self.grants(scope)
                 if w.granted_at_us <= at_us and not w.covers(at_us)]
        return max(ended, key=lambda w: w.granted_at_us, default=None)

    def check_token(self, token: ConsentToken, registry: KeyRegistry, scope: str, at_us: int,
                    spent: set[bytes]) -> Verification:
        """Judge the patient's consent ``token`` for a use under ``scope`` at ``at_us``: its
        key is the card bound to this therapy and valid now, the patient's own consent to
        ``scope`` holds, and the token is signed, unexpired and unused (``spent``: the
        nonces of tokens already honoured, which the caller keeps on the log)."""
        if self.patient_credential(token.patient_actor_id, token.key_id) is None:
            return Verification((f"consent token of {token.patient_actor_id} key "
                                 f"{token.key_id} is signed by no card bound to therapy "
                                 f"{token.coi}",), "TOKEN_NOT_THE_PATIENTS")
        problem = registry.key_problem(token.patient_actor_id, token.key_id, at_us)
        if problem is not None:
            return Verification((f"consent token of {token.patient_actor_id}: {problem[1]}",),
                                problem[0])
        if ConsentSigner.PATIENT not in self.signers(scope, at_us):
            return Verification((f"consent token of {token.patient_actor_id} asks for a use "
                                 f"under {scope}, which the patient's own signed consent does "
                                 f"not cover at {at_us} µs",), "CONSENT_MISSING")
        public = registry.keys[(token.patient_actor_id, token.key_id)].public
        return verify_consent_token(token, public, at_us, spent)

    # -- folding -------------------------------------------------------------------

    def fold(self, event_type: str, payload: Mapping[str, Any], event_id: str,
             occurred_at_us: int, producer: str, key_id: str) -> None:
        """Fold one accepted therapy event; other event types leave the record unchanged."""
        p = payload
        if event_type == "PatientCredentialIssued":
            self.patient_credentials[p["key_id"]] = PatientCredential(
                p["patient_actor_id"], p["key_id"], p["card_id"],
                p.get("biometric_template_hash"), occurred_at_us, producer, event_id)
        elif event_type in ("ConsentGranted", "ConsentWitnessed"):
            if event_type == "ConsentWitnessed":
                signer = ConsentSigner.WITNESSED
            elif self.patient_credential(producer, key_id) is not None:
                signer = ConsentSigner.PATIENT
            else:
                signer = ConsentSigner.HOSPITAL
            self.consents.setdefault(p["scope"], []).append(ConsentWindow(
                occurred_at_us, _opt_us(p.get("expires_at")), None, event_id, signer))
        elif event_type == "ConsentWithdrawn":
            for window in self.consents.get(p["scope"], ()):
                if window.withdrawn_at_us is None and window.granted_at_us <= occurred_at_us:
                    window.withdrawn_at_us = occurred_at_us
