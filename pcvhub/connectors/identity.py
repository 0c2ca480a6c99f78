"""Identity in the hub's own terms: a patient's keyed pseudonym, an outside message's event id.

The hub never holds a medical record number: :class:`Pseudonymiser` turns it into the
``patient_hash`` every PatientEnrolled carries (HMAC-SHA-256 under a key kept in the
encrypted key store), and every connector of a deployment loads the same key, so an MRN
enrolled over HL7 is found again over FHIR. :func:`deterministic_event_id` gives the
event id an outside message always maps to, so a message sent twice is written once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pcvhub.trust.issuer import now_us
from pcvhub.trust.keys import KeyStore, KeyStoreError
from pcvhub.trust.signing import EventSigner

__all__ = ["EVENT_ID_NAMESPACE", "PSEUDONYM_ACTOR", "Pseudonymiser", "deterministic_event_id"]

log = logging.getLogger(__name__)

#: The key-store actor whose key material derives the patient pseudonym key (never signs).
PSEUDONYM_ACTOR = "hub-pseudonymiser"
#: Namespace of deterministic event ids (uuid5) derived from a sender's message id.
EVENT_ID_NAMESPACE = uuid.UUID("0d4c6f0e-5a7b-4e65-9b8e-3c1f2a6d7e90")


def deterministic_event_id(*parts: str) -> str:
    """An event id that the same outside message always maps to (uuid5 of its parts).

    A sender that repeats a message gets the same event id, so even if the connector's
    own duplicate check were bypassed the gatekeeper's R8 would refuse the copy.
    """
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "\x1f".join(parts)))


@dataclass(frozen=True)
class Pseudonymiser:
    """``patient_hash``: lowercase hex HMAC-SHA-256 of the MRN under the hub's key.

    The key is derived (HKDF, its own label) from the secret of the key-store entry of
    :data:`PSEUDONYM_ACTOR`, so it is encrypted at rest, unlocked with the same
    passphrase and rotated the same way as every other key; ``key_id`` goes into
    PatientEnrolled.pseudonym_key_id. Every connector of a deployment loads the same key,
    so an MRN enrolled over HL7 is found again over FHIR.
    """

    key_id: str
    _key: bytes = field(repr=False)

    @classmethod
    def from_signer(cls, signer: EventSigner) -> Pseudonymiser:
        seed, _ = signer.keys.seeds()
        key = HKDF(hashes.SHA256(), 32, salt=None,
                   info=b"pcvhub/patient-pseudonym/v1").derive(seed)
        return cls(signer.key_id, key)

    @classmethod
    def load(cls, store: KeyStore, create: bool = False) -> Pseudonymiser:
        """The newest pseudonym key; with ``create``, make the first one if there is none."""
        try:
            return cls.from_signer(store.latest(PSEUDONYM_ACTOR))
        except KeyStoreError:
            if not create:
                raise
        log.warning("no pseudonymisation key in %s: creating %s", store.root, PSEUDONYM_ACTOR)
        return cls.from_signer(store.create(PSEUDONYM_ACTOR, str(now_us())))

    def patient_hash(self, mrn: str) -> str:
        return hmac.new(self._key, mrn.strip().encode(), hashlib.sha256).hexdigest()
