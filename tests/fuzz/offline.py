"""A real ``Connector`` that never reaches Kafka, for driving whole connector edges.

Everything a connector does with an input up to the Kafka write is real: it maps, signs
and encodes the events (so a payload the Avro codec refuses fails here as it would in
production), and signs and encodes every refusal it records. Only the two writers are
replaced by ones that keep what they were given. The broker address is the discard port,
so nothing ever talks to the broker another session owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from pcvhub.config import KafkaSecurity, Settings
from pcvhub.connectors.core import Connector
from pcvhub.connectors.identity import Pseudonymiser
from pcvhub.demo.cohort import AUTHORITY
from pcvhub.ids import new_coi
from pcvhub.trust.issuer import EventIssuer, IssuedEvent
from pcvhub.trust.registry import Actor, KeyRecord, KeyRegistry
from pcvhub.trust.signing import EventSigner, HybridKeyPair

SITE = "KYOTO01"
#: the envelope's (full) type name of a connector's refusal
REFUSAL = "pcvhub.events.EventRejected"


class KeptWrites:
    """Stands in for an ``IngressWriter``: keeps the issued events instead of sending."""

    def __init__(self) -> None:
        self.events: list[IssuedEvent] = []

    def write(self, events: Sequence[IssuedEvent], timeout: float = 30.0) -> None:
        self.events.extend(events)

    def close(self) -> None:
        pass


@cache
def _signer(actor_id: str) -> EventSigner:
    """One key pair per actor for the whole run: fresh connectors per example stay cheap."""
    return EventSigner(actor_id, f"{actor_id}-k1", HybridKeyPair.generate())


class OfflineConnector(Connector):
    """A connector of ``SITE`` whose writes are kept; ``caller`` is a registered EMR.

    Cheap enough (a few ms) to make one per example, so that no example sees what an
    earlier one wrote and a failure found once is found again.
    """

    def __init__(self, source: str) -> None:
        signer = _signer(f"{source}-fuzz")
        pseudonyms = Pseudonymiser.from_signer(_signer("hub-pseudonymiser"))
        self.caller = _signer("emr-fuzz")
        registry = KeyRegistry.with_anchor(
            Actor(self.caller.producer, "fuzzing EMR", frozenset({"CONNECTOR"}), SITE),
            KeyRecord(self.caller.producer, self.caller.key_id, self.caller.keys.public, 0))
        # settle_s=0: there is no gatekeeper whose verdict would be worth waiting for.
        # no broker at all (nothing listens on port 9): plain settings, no credentials
        offline = Settings(bootstrap_servers="127.0.0.1:9", security=KafkaSecurity("PLAINTEXT"))
        super().__init__(offline, source, signer, SITE, pseudonyms, registry, settle_s=0)
        # The writer is the only part that talks to Kafka (see Connector.__init__); the
        # connector's refusals travel through it too, to its ingress topic.
        assert hasattr(self, "_writer"), "Connector no longer has _writer: update this fake"
        self._writer.close()
        self._writer = KeptWrites()
        self._started = True  # emit() refuses to run before start(), which reads Kafka

    @property
    def written(self) -> list[IssuedEvent]:
        return [e for e in self._writer.events if e.envelope.event_type != REFUSAL]

    @property
    def refusals(self) -> list[IssuedEvent]:
        return [e for e in self._writer.events if e.envelope.event_type == REFUSAL]

    def enrol(self, mrn: str, sex: str = "FEMALE") -> str:
        """An accepted enrolment of ``mrn`` at ``AUTHORITY`` in the patient index."""
        coi = new_coi(SITE, 2026)
        payload = {"patient_hash": self.pseudonymiser.patient_hash(mrn), "site_id": SITE,
                   "mrn_assigning_authority": AUTHORITY, "birth_date": None, "sex": sex,
                   "therapy_type": "individualized-neoantigen-mRNA",
                   "pseudonym_key_id": self.pseudonymiser.key_id, "trial_id": None}
        issued = EventIssuer(self.signer).issue("PatientEnrolled", coi, payload)
        self.patients.observe(issued.envelope, payload, accepted=True)
        return coi

    def verify_bedside(self, coi: str, mrn: str, dose_id: str) -> str:
        """A bedside identity check (MATCH) of ``dose_id`` for ``coi``, as read from the log."""
        payload = {"patient_hash": self.pseudonymiser.patient_hash(mrn), "step": "BEDSIDE",
                   "method": "WRISTBAND_BARCODE", "result": "MATCH", "dose_id": dose_id,
                   "sample_id": None}
        issued = EventIssuer(self.signer).issue("IdentityVerified", coi, payload)
        self.bedside.observe(issued.envelope, "IdentityVerified", payload)
        return issued.envelope.event_id
