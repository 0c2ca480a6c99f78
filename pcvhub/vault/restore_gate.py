"""Whether a restore may happen: the patient's fresh token, judged against the log.

A restore of a therapy's genome needs a consent token the patient's card signed
(:meth:`pcvhub.trust.patient_card.PatientCard.consent_token`) for this therapy, this
purpose and this requester, unexpired and never used before. :class:`VaultRecord` folds a
therapy's accepted events (the consent facts through :class:`~pcvhub.trust.consent.ConsentRecord`,
every ``GenomeStored`` and the nonce of every ``GenomeRestored``), and :func:`judge_restore`
answers with a :class:`~pcvhub.trust.signing.Verification` whose code says what to do:
``TOKEN_OTHER_THERAPY``, ``TOKEN_WRONG_PURPOSE``, ``TOKEN_OTHER_REQUESTER``, ``NOTHING_STORED``,
then those of :meth:`~pcvhub.trust.consent.ConsentRecord.check_token` (``TOKEN_NOT_THE_PATIENTS``,
``CONSENT_MISSING``, ``TOKEN_SPENT``, ``TOKEN_EXPIRED``, ``SIGNATURE_INVALID``, a key problem).

The token is judged before any share is fetched; the ``GenomeRestored`` event it leads to
carries the whole token, so the next judge sees its nonce spent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pcvhub.schemas.codec import to_us
from pcvhub.schemas.envelope import HybridSignature
from pcvhub.schemas.policy import ConsentScope
from pcvhub.trust.consent import ConsentRecord
from pcvhub.trust.patient_card import ConsentToken
from pcvhub.trust.registry import KeyRegistry
from pcvhub.trust.signing import Verification


@dataclass
class VaultRecord:
    """What the vault needs to know of one therapy, folded from its accepted events."""

    consent: ConsentRecord = field(default_factory=ConsentRecord)
    stored: list[dict[str, Any]] = field(default_factory=list)  # GenomeStored payloads
    spent: set[bytes] = field(default_factory=set)  # nonces of tokens already honoured

    def fold(self, event_type: str, payload: Mapping[str, Any], event_id: str,
             occurred_at_us: int, producer: str, key_id: str) -> None:
        self.consent.fold(event_type, payload, event_id, occurred_at_us, producer, key_id)
        if event_type == "GenomeStored":
            self.stored.append(dict(payload))
        elif event_type == "GenomeRestored":
            self.spent.add(bytes.fromhex(payload["token_nonce"]))

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.stored[-1] if self.stored else None


def judge_restore(record: VaultRecord, registry: KeyRegistry, token: ConsentToken, coi: str,
                  purpose: str, requester: str, at_us: int) -> Verification:
    """May ``requester`` restore therapy ``coi``'s genome for ``purpose`` at ``at_us``?"""
    if token.coi != coi:
        return Verification((f"the consent token is for therapy {token.coi}, not {coi}",),
                            "TOKEN_OTHER_THERAPY")
    if token.purpose != purpose:
        return Verification((f"the consent token allows {token.purpose!r}, the restore is for "
                             f"{purpose!r}: ask the patient for a token for this purpose",),
                            "TOKEN_WRONG_PURPOSE")
    if token.requester != requester:
        return Verification((f"the consent token lets {token.requester} restore, not "
                             f"{requester}",), "TOKEN_OTHER_REQUESTER")
    if record.latest is None:
        return Verification((f"therapy {coi} has no GenomeStored on the log: nothing to "
                             f"restore",), "NOTHING_STORED")
    return record.consent.check_token(token, registry, ConsentScope.GENOME_STORAGE, at_us,
                                      record.spent)


def genome_restored_payload(stored: Mapping[str, Any], token: ConsentToken, content_size: int,
                            sites_used: Sequence[str], bad_shares: Sequence[str]
                            ) -> dict[str, Any]:
    """The ``GenomeRestored`` payload: the token whole, the root, who served shares."""
    return {
        "root_hash": stored["root_hash"], "content_size": content_size,
        "purpose": token.purpose, "requester": token.requester,
        "patient_actor_id": token.patient_actor_id, "patient_key_id": token.key_id,
        "token_nonce": token.nonce.hex(), "token_expires_at": token.expires_at_us,
        "token_ed25519_signature": token.signature.ed25519,
        "token_ml_dsa_65_signature": token.signature.ml_dsa_65,
        "sites_used": list(sites_used), "bad_shares": list(bad_shares),
    }


def token_from_restore(coi: str, payload: Mapping[str, Any]) -> ConsentToken:
    """The token a ``GenomeRestored`` event carries, to check it again from the log."""
    return ConsentToken(coi, payload["patient_actor_id"], payload["patient_key_id"],
                        payload["purpose"], payload["requester"],
                        to_us(payload["token_expires_at"]),
                        bytes.fromhex(payload["token_nonce"]),
                        HybridSignature(bytes(payload["token_ed25519_signature"]),
                                        bytes(payload["token_ml_dsa_65_signature"])))


def token_to_json(token: ConsentToken) -> str:
    """A token as the patient's wallet hands it over (a file, a QR code's text)."""
    return json.dumps({
        "coi": token.coi, "patient_actor_id": token.patient_actor_id, "key_id": token.key_id,
        "purpose": token.purpose, "requester": token.requester,
        "expires_at_us": token.expires_at_us, "nonce": token.nonce.hex(),
        "ed25519_signature": base64.b64encode(token.signature.ed25519).decode(),
        "ml_dsa_65_signature": base64.b64encode(token.signature.ml_dsa_65).decode()})


def token_from_json(text: str) -> ConsentToken:
    d = json.loads(text)
    return ConsentToken(d["coi"], d["patient_actor_id"], d["key_id"], d["purpose"],
                        d["requester"], int(d["expires_at_us"]), bytes.fromhex(d["nonce"]),
                        HybridSignature(base64.b64decode(d["ed25519_signature"]),
                                        base64.b64decode(d["ml_dsa_65_signature"])))
