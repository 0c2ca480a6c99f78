"""What every connector shares: who it is, how it issues and writes events, whom it serves.

A connector (HL7 v2 / MLLP, FHIR R4, the MES/LIMS file drop, the payer feed) turns an
outside message into pcvhub events. This module is the one way they all do that:

* :class:`Connector` — the connector's identity (its registered actor and the newest key
  of that actor in the encrypted ``KeyStore`` under ``settings.data_dir / "keys"``,
  unlocked with ``PCVHUB_KEY_PASSPHRASE``), the chain heads of the canonical log, the key
  registry folded from the log, the patient index, and its ingress writer. Use it as::

      connector = Connector.open(settings, "site-kyoto01-emr", "hl7", site_id="KYOTO01")
      connector.start()                      # reads its own ingress and the canonical log
      issued = connector.emit([EventRequest("TherapyOrdered", coi, payload)])
      connector.record_refusal(raw, "mllp://127.0.0.1:2575", "HL7", "REQUIRED_FIELD_MISSING",
                               "PID-3 is empty: ...")
      connector.close()

  ``emit`` issues and writes under one lock and returns only once Kafka acknowledged, so
  a positive answer to the caller (ACK AA, HTTP 201, an "accepted" line in a result file)
  always means "durably in the hub". It is blocking: from asyncio call it through
  ``asyncio.to_thread``.

* :class:`Pseudonymiser` — the hub's keyed pseudonym of a medical record number
  (``patient_hash``); :class:`PatientIndex` — (assigning authority, ``patient_hash``) ->
  the therapy's chain-of-identity id.

* :class:`LocalCA`, :class:`CallerCheck`, :func:`issue_token` — authentication of the
  systems that call a connector (mutual TLS for MLLP, signed bearer tokens for HTTP),
  always bound to an actor registered on the log.

Why the patient index and the "already written" set are rebuilt from Kafka, not kept in
a local store: the log is the truth, a second connector instance (or the same one after
a restart, or on a new machine) rebuilds exactly the same state from it, and there is no
extra file to back up, replicate or get out of step. At start the connector reads its
own ingress topic (7 days: what it wrote, accepted or not yet judged) and then follows
the canonical topic forever (every PatientEnrolled accepted from any producer, every
registry event, every chain head).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from pcvhub.config import Settings
from pcvhub.connectors.base import IngressWriter
from pcvhub.log.reader import LogFollower, deployment_verifier, read_verified
from pcvhub.log.verify import CANONICAL, REJECTED, VerifiedRecord
from pcvhub.schemas.codec import decode_payload
from pcvhub.schemas.envelope import Envelope, SignatureMeaning
from pcvhub.topics import partition_for, topic_name, topic_spec
from pcvhub.trust.issuer import EventIssuer, IssuedEvent, now_us
from pcvhub.trust.keys import KeyStore, KeyStoreError, passphrase_from_env
from pcvhub.trust.registry import ANCHOR_FILE, KeyRegistry, load_anchor
from pcvhub.trust.signing import EventSigner

log = logging.getLogger(__name__)

#: The key-store actor whose key material derives the patient pseudonym key (never signs).
PSEUDONYM_ACTOR = "hub-pseudonymiser"
#: CoI under which refusals whose therapy is unknown are keyed (as the gatekeeper does).
UNKNOWN_COI = "UNKNOWN"
#: Namespace of deterministic event ids (uuid5) derived from a sender's message id.
EVENT_ID_NAMESPACE = uuid.UUID("0d4c6f0e-5a7b-4e65-9b8e-3c1f2a6d7e90")


def short_type(event_type: str) -> str:
    return event_type.rsplit(".", 1)[-1]


def deterministic_event_id(*parts: str) -> str:
    """An event id that the same outside message always maps to (uuid5 of its parts).

    A sender that repeats a message gets the same event id, so even if the connector's
    own duplicate check were bypassed the gatekeeper's R8 would refuse the copy.
    """
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "\x1f".join(parts)))


# -- pseudonyms ----------------------------------------------------------------------

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


@dataclass(frozen=True)
class EnrolledPatient:
    """What the hub holds about a patient: the pseudonym, never the MRN or the name."""

    coi: str
    site_id: str
    authority: str
    patient_hash: str
    sex: str
    birth_date: dt.date | None
    accepted: bool  # on the canonical log (False: written by us, not judged yet)


class PatientIndex:
    """(MRN assigning authority, patient_hash) -> the therapy's enrolment. Thread-safe.

    Filled from PatientEnrolled events: accepted ones read from the canonical log, and the
    connector's own not yet judged ones (from its ingress topic and from ``emit``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_patient: dict[tuple[str, str], EnrolledPatient] = {}
        self._by_coi: dict[str, EnrolledPatient] = {}

    def observe(self, env: Envelope, payload: dict[str, Any], accepted: bool) -> None:
        """Fold one PatientEnrolled; an accepted enrolment replaces a pending one."""
        patient = EnrolledPatient(
            env.coi, payload["site_id"], payload["mrn_assigning_authority"],
            payload["patient_hash"], str(payload["sex"]), payload.get("birth_date"), accepted)
        key = (patient.authority, patient.patient_hash)
        with self._lock:
            known = self._by_patient.get(key)
            if known is not None and known.accepted and not accepted:
                return  # the log already settled this patient's therapy
            self._by_patient[key] = patient
            self._by_coi[patient.coi] = patient

    def find(self, authority: str, patient_hash: str) -> EnrolledPatient | None:
        with self._lock:
            return self._by_patient.get((authority, patient_hash))

    def therapy(self, coi: str) -> EnrolledPatient | None:
        with self._lock:
            return self._by_coi.get(coi)


#: Order codes (HL7 OBR-4.1, FHIR ServiceRequest.code) -> TherapyOrdered.therapy_type
THERAPIES = {
    "PCV-MRNA": "individualized-neoantigen-mRNA",
    "PCV-PEPTIDE": "individualized-neoantigen-peptide",
    "PCV-DC": "individualized-neoantigen-dendritic-cell",
}


class BedsideChecks:
    """The latest bedside identity check (IdentityVerified, BEDSIDE, MATCH) per dose.

    A DoseAdministered must name the check done right before it; the scanner at the
    bedside records that check on its own, so the connector learns it from the log.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], str] = {}

    def observe(self, env: Envelope, kind: str, payload: dict[str, Any] | None) -> None:
        if kind != "IdentityVerified" or payload is None:
            return
        if payload["step"] == "BEDSIDE" and payload["result"] == "MATCH" and payload["dose_id"]:
            with self._lock:
                self._latest[(env.coi, payload["dose_id"])] = env.event_id

    def latest(self, coi: str, dose_id: str) -> str | None:
        with self._lock:
            return self._latest.get((coi, dose_id))


# -- issuing and writing ---------------------------------------------------------------

@dataclass(frozen=True)
class EventRequest:
    """One event a connector wants to issue (short type name, CoI, payload, options)."""

    event_type: str
    coi: str
    payload: dict[str, Any]
    occurred_at_us: int | None = None
    event_id: str | None = None  # deterministic id from the outside message, if any
    meaning: SignatureMeaning = SignatureMeaning.AUTHORED


@dataclass(frozen=True)
class Refusal:
    """The gatekeeper's refusal of one event, as read from the rejected topic."""

    rule: str
    reason_code: str
    reason: str


@dataclass(frozen=True)
class _InFlight:
    """An event this connector wrote whose acceptance the log has not shown yet."""

    event_id: str
    prev_hash: bytes
    digest: bytes


class Connector:
    """The shared part of every connector; see the module docstring for its use."""

    def __init__(self, settings: Settings, source: str, signer: EventSigner, site_id: str,
                 pseudonymiser: Pseudonymiser, registry: KeyRegistry,
                 settle_s: float = 2.0) -> None:
        """
        :param source: ingress topic suffix after ``ingress.`` (``hl7``, ``fhir``, ``files``,
            ``payer``).
        :param site_id: the site this connector serves; its actor must be registered there.
        :param settle_s: how long ``emit`` waits for this connector's previous event of the
            same therapy to reach the canonical log before chaining onto it unconfirmed.
        """
        self.settings = settings
        self.source = source
        self.signer = signer
        self.site_id = site_id
        self.pseudonymiser = pseudonymiser
        self.registry = registry
        self.settle_s = settle_s
        self.issuer = EventIssuer(signer)
        self.patients = PatientIndex()
        self.bedside = BedsideChecks()
        self.ingress_topic = topic_name(f"ingress.{source}", settings.topic_prefix)
        self._observers: list[Callable[[VerifiedRecord], None]] = []
        self._writer = IngressWriter(settings, source)
        self._rejected = _RejectedWriter(settings)
        # Everything read back is verified first, with one registry folded from the trust
        # anchor (pcvhub.log): a forged registration or refusal never reaches the folds.
        self.verifier = deployment_verifier(settings, f"connector {source}", registry)
        self._heads = LogFollower(settings, [CANONICAL], self.verifier, self._on_accepted,
                                  name=f"{source}-canonical")
        # Our own events the gatekeeper refused must leave the in-flight chain, or every
        # later event of that therapy would be chained onto a refused one (R3 refuses it).
        self._refusals = LogFollower(settings, [REJECTED], self.verifier, self._on_refused,
                                     name=f"{source}-refusals")
        self._written: set[str] = set()  # event ids on our ingress topic
        self._in_flight: dict[str, list[_InFlight]] = {}  # per CoI, in chain order
        self._lock = threading.Lock()
        # Verdicts someone waits for (``expect`` / ``wait_verdict``): refusals of those ids.
        self._awaited: set[str] = set()
        self._refused: dict[str, Refusal] = {}
        self._verdict = threading.Condition()
        self._started = False

    @classmethod
    def open(cls, settings: Settings, actor_id: str, source: str, *, site_id: str,
             passphrase: bytes | None = None, settle_s: float = 2.0,
             create_pseudonym_key: bool = True) -> Connector:
        """Load the actor's newest key and the trust anchor from the data folder."""
        store = KeyStore(settings.data_dir / "keys", passphrase or passphrase_from_env())
        registry = load_anchor(settings.data_dir / ANCHOR_FILE)
        return cls(settings, source, store.latest(actor_id), site_id,
                   Pseudonymiser.load(store, create=create_pseudonym_key), registry, settle_s)

    @property
    def actor_id(self) -> str:
        return self.signer.producer

    def watch(self, observer: Callable[[VerifiedRecord], None]) -> None:
        """Call ``observer(record)`` for every event of the canonical log, once the log
        reader verified it. Register before ``start``."""
        self._observers.append(observer)

    # -- start and stop -------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> Connector:
        """Read our own ingress topic, then catch up with the canonical log."""
        # Our own ingress topic: what this actor wrote, accepted or not yet judged. What
        # the verifier quarantines (garbage, someone else's bytes) is not ours to judge.
        for outcome in read_verified(self.settings, f"ingress.{self.source}", self.verifier):
            if not isinstance(outcome, VerifiedRecord) or outcome.event.producer != self.actor_id:
                continue
            env = outcome.envelope
            self._written.add(env.event_id)
            self._in_flight.setdefault(env.coi, []).append(
                _InFlight(env.event_id, env.prev_hash, outcome.digest))
            if outcome.event_type == "PatientEnrolled":
                self.patients.observe(env, outcome.payload, accepted=False)
        self._heads.start()
        self._refusals.start()
        if not (self._heads.wait_caught_up(timeout) and self._refusals.wait_caught_up(timeout)):
            self._heads.stop()
            self._refusals.stop()
            raise TimeoutError(f"the canonical log {self.ingress_topic} was not read within "
                               f"{timeout:.0f}s; is Kafka at {self.settings.bootstrap_servers} "
                               "reachable?")
        self._started = True
        self._check_registration()
        return self

    def _check_registration(self) -> None:
        actor = self.registry.actors.get(self.actor_id)
        if actor is None:
            log.warning("connector actor %s is not registered on the log yet: the gatekeeper "
                        "will refuse its events until an ActorRegistered for it is accepted",
                        self.actor_id)
        elif actor.site_id != self.site_id:
            log.warning("connector actor %s is registered at site %s, but serves site %s: "
                        "site-bound events will be refused (R2 WRONG_SITE)",
                        self.actor_id, actor.site_id, self.site_id)

    def close(self) -> None:
        self._heads.stop()
        self._refusals.stop()
        self.verifier.close()
        self._writer.close()
        self._rejected.close()

    def __enter__(self) -> Connector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- following the log ------------------------------------------------------------

    def _on_accepted(self, record: VerifiedRecord) -> None:
        """Runs in the canonical follower's thread for every verified canonical event
        (the verifier has already folded registry events into ``self.registry``)."""
        if record.event_type == "PatientEnrolled":
            self.patients.observe(record.envelope, record.payload, accepted=True)
        elif record.event_type == "IdentityVerified":
            self.bedside.observe(record.envelope, record.event_type, record.payload)
        for observer in self._observers:
            observer(record)

    def _on_refused(self, record: VerifiedRecord) -> None:
        """Runs in the refusals thread: drop a refused event of ours and all chained on it."""
        payload = record.payload
        refused = payload.get("rejected_event_id")
        if refused is None or refused not in self._written:
            return
        with self._lock:
            for chain in self._in_flight.values():
                ids = [link.event_id for link in chain]
                if refused in ids:
                    del chain[ids.index(refused):]
                    break
        # Only now tell a waiter: the chain no longer names the refused event, so what it
        # sends next cannot be chained onto it.
        with self._verdict:
            if refused in self._awaited:
                self._refused[refused] = Refusal(payload["rule"], payload["reason_code"],
                                                 payload["reason"])
                self._verdict.notify_all()

    def expect(self, event_id: str) -> None:
        """Say that a verdict on ``event_id`` will be awaited (call before sending it)."""
        with self._verdict:
            self._awaited.add(event_id)

    def wait_verdict(self, event_id: str, timeout: float) -> Refusal | bool | None:
        """True if accepted, the Refusal if refused, None if no verdict within ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.is_accepted(event_id):
                    return True
                with self._verdict:
                    refusal = self._refused.get(event_id)
                    if refusal is not None:
                        return refusal
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._verdict.wait(min(remaining, 0.05))
        finally:
            with self._verdict:
                self._awaited.discard(event_id)
                self._refused.pop(event_id, None)

    def already_written(self, event_id: str) -> bool:
        """True if this event id is on our ingress topic or on the canonical log."""
        with self._lock:
            if event_id in self._written:
                return True
        return self._heads.has_read(event_id)

    def is_accepted(self, event_id: str) -> bool:
        return self._heads.has_read(event_id)

    def wait_accepted(self, event_ids: Iterable[str], timeout: float) -> set[str]:
        """Wait until each id is on the canonical log; return those still missing."""
        return self._heads.wait_read(event_ids, timeout)

    # -- issuing and writing ------------------------------------------------------------

    def _prev_hash(self, coi: str) -> bytes:
        """The chain head to name: the log's, or the top of our own events still in flight.

        R3 wants the digest of the last *accepted* event of the therapy. When the log's
        head is the base of our in-flight events, or one of them, the next event is chained
        onto the newest of them, so a sender that sends an enrolment and an order back to
        back is not made to wait for the gatekeeper. When someone else wrote in between,
        the log's head wins and our in-flight record is dropped.
        """
        canonical = self.verifier.head(coi)
        chain = self._in_flight.get(coi)
        if not chain:
            return canonical
        digests = [link.digest for link in chain]
        if canonical in digests:
            del chain[: digests.index(canonical) + 1]  # those are accepted now
            return canonical if not chain else chain[-1].digest
        if canonical == chain[0].prev_hash:
            return chain[-1].digest
        chain.clear()
        return canonical

    def emit(self, requests: Sequence[EventRequest]) -> list[IssuedEvent]:
        """Issue, sign and durably write events; return them once Kafka acknowledged.

        Raises ``IngressWriteError`` (nothing is acknowledged then: answer negatively) or
        ``SchemaValidationError`` from the codec (a payload that does not fit its schema).
        """
        if not self._started:
            raise RuntimeError("Connector.start() must run before emit()")
        with self._lock:
            waiting = [self._in_flight[r.coi][-1].event_id for r in requests
                       if self._in_flight.get(r.coi)]
        if waiting and self.settle_s > 0:
            # Give the gatekeeper a moment: chaining onto a confirmed head is safer.
            self._heads.wait_read(waiting, self.settle_s)
        with self._lock:
            issued: list[IssuedEvent] = []
            heads: dict[str, bytes] = {}
            for r in requests:
                prev = heads[r.coi] if r.coi in heads else self._prev_hash(r.coi)
                event = self.issuer.issue(r.event_type, r.coi, r.payload,
                                          occurred_at_us=r.occurred_at_us, prev_hash=prev,
                                          meaning=r.meaning, event_id=r.event_id)
                heads[r.coi] = event.digest
                issued.append(event)
            self._writer.write(issued)
            for event in issued:
                env = event.envelope
                self._written.add(env.event_id)
                chain = self._in_flight.setdefault(env.coi, [])
                if chain and chain[-1].digest != env.prev_hash:
                    chain.clear()
                chain.append(_InFlight(env.event_id, env.prev_hash, event.digest))
                if short_type(env.event_type) == "PatientEnrolled":
                    _, payload = decode_payload(env.schema_fingerprint, env.payload)
                    self.patients.observe(env, payload, accepted=False)
        return issued

    def record_refusal(self, original: bytes, endpoint: str, rule: str, reason_code: str,
                       reason: str, *, coi: str | None = None, event_type: str | None = None,
                       event_id: str | None = None) -> IssuedEvent:
        """Write an ``EventRejected`` signed by this connector to the rejected topic.

        :param original: the exact bytes received (a frame, a request body, a file row).
        :param endpoint: where they came in, e.g. ``mllp://127.0.0.1:2575`` or
            ``http://127.0.0.1:8080/Condition``; goes into ``source_topic``.
        :param rule: which check refused them, e.g. ``HL7``, ``FHIR``, ``AUTH``.
        :param reason: the sentence for a person: segment/field/element and what to do.

        The refusal did not come from a Kafka record, so ``source_partition`` and
        ``source_offset`` are -1. Like the gatekeeper's refusals it is not chained.
        """
        payload = {
            "rejected_event_id": event_id, "rejected_event_type": event_type,
            "source_topic": endpoint, "source_partition": -1, "source_offset": -1,
            "rule": rule, "reason_code": reason_code, "reason": reason,
            "original": bytes(original),
        }
        with self._lock:
            issued = self.issuer.issue("EventRejected", coi or UNKNOWN_COI, payload,
                                       prev_hash=b"")
            self._rejected.write([issued])
        log.warning("refused input on %s: %s %s", endpoint, reason_code, reason)
        return issued


class _RejectedWriter(IngressWriter):
    """The ingress writer's durable send, aimed at the rejected topic instead."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "direct")
        self.topic = topic_name("rejected", settings.topic_prefix)


def therapy_log(settings: Settings, coi: str) -> list[Envelope]:
    """Every accepted event of one therapy, in chain order, read and verified from its
    partition of the canonical topic (connectors must not depend on the projections).

    A fresh verifier reads the whole partition: the chain can only be checked from its
    start. Costly on a long log; it serves the FHIR history endpoint, not a hot path."""
    partition = partition_for(coi.encode(), topic_spec(CANONICAL).partitions)
    verifier = deployment_verifier(settings, f"history of {coi}")
    try:
        return [o.envelope for o in read_verified(settings, CANONICAL, verifier, [partition])
                if isinstance(o, VerifiedRecord) and o.coi == coi]
    finally:
        verifier.close()


# -- authentication of callers -----------------------------------------------------------

TLS_DIR = "tls"


class LocalCA:
    """The deployment's certificate authority for connector endpoints (``<data_dir>/tls``).

    It signs the listeners' server certificates and the callers' client certificates.
    A client certificate is issued over the caller's *registered* Ed25519 public key with
    the actor id as common name, so the TLS handshake proves possession of the very key
    the log registered; :class:`CallerCheck` then checks that key against the registry.
    The CA's private key is encrypted (PKCS#8) with the key-store passphrase.
    """

    def __init__(self, root: Path, passphrase: bytes) -> None:
        self.root = Path(root)
        self._passphrase = passphrase
        self.cert_path = self.root / "ca.pem"
        self._key_path = self.root / "ca-key.pem"
        if not self.cert_path.exists():
            self._create()
        self._key = serialization.load_pem_private_key(self._key_path.read_bytes(),
                                                       self._passphrase)
        self.certificate = x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    @classmethod
    def open(cls, settings: Settings, passphrase: bytes | None = None) -> LocalCA:
        return cls(settings.data_dir / TLS_DIR, passphrase or passphrase_from_env())

    def _create(self) -> None:
        key = ed25519.Ed25519PrivateKey.generate()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pcvhub"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "pcvhub connector CA")])
        cert = (_builder(name, name, key.public_key(), days=3650)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                             False, False), critical=True)
                .sign(key, None))
        self.root.mkdir(parents=True, exist_ok=True)
        _write_private(self._key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase)))
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        log.warning("created the connector CA %s", self.cert_path)

    def server_files(self, hosts: Sequence[str] = ("127.0.0.1", "localhost")
                     ) -> tuple[Path, Path]:
        """(certificate, encrypted key) of the listeners; issued once, valid one year."""
        cert_path, key_path = self.root / "server.pem", self.root / "server-key.pem"
        if not cert_path.exists():
            key = ed25519.Ed25519PrivateKey.generate()
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
            cert = (_builder(subject, self.certificate.subject, key.public_key(), days=365)
                    .add_extension(x509.SubjectAlternativeName(names), critical=False)
                    .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]),
                                   critical=False)
                    .sign(self._key, None))
            _write_private(key_path, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(self._passphrase)))
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    def issue_client_certificate(self, actor_id: str, ed25519_public: bytes,
                                 days: int = 365) -> bytes:
        """PEM client certificate for a caller's registered Ed25519 public key."""
        public = ed25519.Ed25519PublicKey.from_public_bytes(ed25519_public)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, actor_id)])
        cert = (_builder(subject, self.certificate.subject, public, days=days)
                .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(self._key, None))
        return cert.public_bytes(serialization.Encoding.PEM)

    def server_context(self, require_client_certificate: bool) -> Any:
        """A TLS 1.2+ server context; with client certificates required for MLLP."""
        import ssl

        cert, key = self.server_files()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key, password=self._passphrase)
        if require_client_certificate:
            context.load_verify_locations(self.cert_path)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    @property
    def passphrase(self) -> bytes:
        return self._passphrase


def _builder(subject: x509.Name, issuer: x509.Name, public: Any, days: int
             ) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    tmp.replace(path)


def private_key_pem(signer: EventSigner) -> bytes:
    """The caller's Ed25519 key as unencrypted PKCS#8 PEM, for a TLS client's key file."""
    return signer.keys.ed25519.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


TOKEN_MAX_LIFETIME_S = 300


def issue_token(signer: EventSigner, audience: str, lifetime_s: int = 120) -> str:
    """A bearer token for a connector's HTTP endpoint, signed with the caller's Ed25519 key.

    A JWT (RFC 7519, alg EdDSA) in the manner of SMART Backend Services: ``iss``/``sub``
    the actor id, ``kid`` the registered key id, ``aud`` the endpoint's base URL, a short
    life and a unique ``jti``. No shared secret exists: the hub checks the signature with
    the public key the log registered.
    """
    now = int(time.time())
    claims = {"iss": signer.producer, "sub": signer.producer, "aud": audience, "iat": now,
              "exp": now + lifetime_s, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, signer.keys.ed25519, algorithm="EdDSA",
                      headers={"kid": signer.key_id})


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a registered actor of the connector's site."""

    actor_id: str
    key_id: str
    site_id: str
    roles: frozenset[str]


class CallerRefused(Exception):
    """Authentication failed; ``code`` is machine-readable, the message is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class CallerCheck:
    """Who may call a connector: an actor registered on the log, with a key valid now,
    registered at the connector's site. The registry is the live one the connector folds
    from the canonical log, so a revocation takes effect on the next connection/request.
    """

    def __init__(self, registry: KeyRegistry, site_id: str) -> None:
        self.registry = registry
        self.site_id = site_id

    def _caller(self, actor_id: str, key_id: str) -> Caller:
        actor = self.registry.actors.get(actor_id)
        if actor is None:
            raise CallerRefused("UNREGISTERED_CALLER",
                                f"caller {actor_id} is not a registered actor of this hub; "
                                "have the registrar register it (ActorRegistered) first")
        problem = self.registry.key_problem(actor_id, key_id, now_us())
        if problem is not None:
            raise CallerRefused(problem[0], f"caller {actor_id}: {problem[1]}")
        if actor.site_id != self.site_id:
            raise CallerRefused("WRONG_SITE",
                                f"caller {actor_id} is registered at site {actor.site_id}, but "
                                f"this connector serves site {self.site_id}; send to your own "
                                "site's connector")
        return Caller(actor_id, key_id, actor.site_id, actor.roles)

    def check_certificate(self, der: bytes | None) -> Caller:
        """A TLS client certificate (already verified against the CA by the handshake)."""
        if not der:
            raise CallerRefused("UNAUTHENTICATED", "no TLS client certificate was presented")
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            raise CallerRefused("UNAUTHENTICATED", "the client certificate names no actor (CN)")
        actor_id = str(names[0].value)
        public = cert.public_key()
        if not isinstance(public, ed25519.Ed25519PublicKey):
            raise CallerRefused("UNAUTHENTICATED", f"the certificate of {actor_id} does not "
                                "carry an Ed25519 key registered on the log")
        raw = public.public_bytes_raw()
        for (owner, key_id), record in list(self.registry.keys.items()):
            if owner == actor_id and record.public.ed25519 == raw:
                return self._caller(actor_id, key_id)
        raise CallerRefused("UNREGISTERED_KEY",
                            f"the client certificate of {actor_id} carries a key that is not "
                            f"registered for {actor_id} on the log")

    def check_token(self, authorization: str | None, audience: str) -> Caller:
        """An ``Authorization: Bearer <JWT>`` header made by :func:`issue_token`."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise CallerRefused("UNAUTHENTICATED", "the request carries no "
                                "'Authorization: Bearer <token>' header")
        token = authorization[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise CallerRefused("UNAUTHENTICATED", f"the bearer token is malformed: {exc}"
                                ) from None
        actor_id, key_id = str(unverified.get("iss", "")), str(header.get("kid", ""))
        record = self.registry.keys.get((actor_id, key_id))
        if record is None:
            raise CallerRefused("UNREGISTERED_KEY", f"the bearer token names actor "
                                f"{actor_id or '(none)'} key {key_id or '(none)'}, which the "
                                "log has not registered")
        try:
            claims = jwt.decode(
                token, ed25519.Ed25519PublicKey.from_public_bytes(record.public.ed25519),
                algorithms=["EdDSA"], audience=audience,
                options={"require": ["exp", "iat", "iss", "aud", "jti"]})
        except jwt.PyJWTError as exc:
            raise CallerRefused("UNAUTHENTICATED", f"the bearer token of {actor_id} is not "
                                f"valid for {audience}: {exc}") from None
        if claims["exp"] - claims["iat"] > TOKEN_MAX_LIFETIME_S:
            raise CallerRefused("UNAUTHENTICATED", f"the bearer token of {actor_id} lives "
                                f"longer than {TOKEN_MAX_LIFETIME_S} s; issue short-lived tokens")
        return self._caller(actor_id, key_id)
