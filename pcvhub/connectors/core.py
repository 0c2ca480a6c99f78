"""The connector core: one connector's identity, its view of the log, and how it writes.

A connector (HL7 v2 / MLLP, FHIR R4, the MES/LIMS file drop, the payer feed) turns an
outside message into pcvhub events. :class:`Connector` is the one way they all do that:
the connector's identity (its registered actor and the newest key of that actor in the
encrypted ``KeyStore`` under ``settings.data_dir / "keys"``, unlocked with
``PCVHUB_KEY_PASSPHRASE``), the chain heads of the canonical log, the key registry
folded from the log, the patient index, the bedside checks, and its ingress writer::

    connector = Connector.open(settings, "site-kyoto01-emr", "hl7", site_id="KYOTO01")
    connector.start()                      # reads its own ingress and the canonical log
    issued = connector.emit([EventRequest("TherapyOrdered", coi, payload)])
    connector.record_refusal(raw, "mllp://127.0.0.1:2575", Outcome.refuse(
        "HL7", "HL7_REQUIRED_FIELD_MISSING", "PID-3 is empty: ..."))
    connector.close()

``emit`` returns only once Kafka acknowledged the caller's events, so a positive answer
to the caller (ACK AA, HTTP 201, an "accepted" line in a result file) always means
"durably in the hub". It is blocking: from asyncio call it in a thread (``asyncio.to_thread``,
or threads of one's own when many calls wait at once, as the MLLP listener does).
Concurrent calls are written by group commit: one hybrid signature over the Merkle root
of everything queued and one Kafka flush, instead of one of each per call. What became
of an input is one :class:`~.outcome.Outcome`: ``wait_verdict`` returns the gatekeeper's
(after ``expect``), ``record_refusal`` writes the connector's own refusal to the rejected
topic.

Why the patient index and the "already written" set are rebuilt from Kafka, not kept in
a local store: the log is the truth, a second connector instance (or the same one after
a restart, or on a new machine) rebuilds exactly the same state from it, and there is no
extra file to back up, replicate or get out of step. At start the connector reads its
own ingress topic (7 days: what it wrote, accepted or not yet judged) and then follows
the canonical topic forever (every PatientEnrolled accepted from any producer, every
registry event, every chain head), through the one log reader (:mod:`pcvhub.log`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pcvhub.config import Settings
from pcvhub.connectors.bedside import BedsideChecks
from pcvhub.connectors.identity import Pseudonymiser
from pcvhub.connectors.outcome import Outcome
from pcvhub.connectors.patients import PatientIndex
from pcvhub.connectors.writer import IngressWriteError, IngressWriter
from pcvhub.log.reader import LogFollower, deployment_verifier, read_verified
from pcvhub.log.verify import CANONICAL, REJECTED, VerifiedRecord
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import decode_payload
from pcvhub.schemas.envelope import Envelope, SignatureMeaning
from pcvhub.streams.timebounds import HOUR_US, TIME_BOUNDS, TimeBounds
from pcvhub.topics import connector_principal, partition_for, topic_name, topic_spec
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.issuer import EventIssuer, IssuedEvent, now_us
from pcvhub.trust.keys import KeyStore, passphrase_from_env
from pcvhub.trust.registry import ANCHOR_FILE, KeyRegistry, load_anchor
from pcvhub.trust.signing import EventSigner

__all__ = ["UNKNOWN_COI", "Connector", "EventRequest", "therapy_log"]

log = logging.getLogger(__name__)

#: CoI under which refusals whose therapy is unknown are keyed (as the gatekeeper does).
UNKNOWN_COI = "UNKNOWN"

#: Most events one group commit signs and writes together. Bounds what one ML-DSA
#: signature covers (inclusion paths of 8 hashes at most) and what one Kafka flush waits
#: for; beyond it the signature's cost is already spread thin.
MAX_GROUP_EVENTS = 256


@dataclass(frozen=True)
class EventRequest:
    """One event a connector wants to issue (short type name, CoI, payload, options)."""

    event_type: str
    coi: str
    payload: dict[str, Any]
    occurred_at_us: int | None = None
    event_id: str | None = None  # deterministic id from the outside message, if any
    meaning: SignatureMeaning = SignatureMeaning.AUTHORED
    #: why it is entered late, if the source says; otherwise ``late_entry_reason`` decides
    late_entry: str | None = None


def late_entry_reason(request: EventRequest, producer: str, bounds: TimeBounds, at_us: int
                      ) -> str | None:
    """The late-entry reason a connector signs with an event that occurred further back than
    the deployment's late-entry bound (R1 refuses it unflagged): the source's own reason if
    it gave one, else the connector's, which is true of every such record: it enters now
    what the source system recorded then (an interface backlog, a logger uploaded after the
    trip). None for a contemporaneous record."""
    if request.late_entry is not None:
        return request.late_entry
    bound = bounds.late_entry_after_us
    if bound is None or request.occurred_at_us is None or at_us - request.occurred_at_us <= bound:
        return None
    hours = (at_us - request.occurred_at_us) / HOUR_US
    return (f"entered by connector {producer} {hours:.0f} h after it occurred, from the "
            f"source system's record ({request.event_type})")


@dataclass(frozen=True)
class _InFlight:
    """An event this connector wrote whose acceptance the log has not shown yet."""

    event_id: str
    prev_hash: bytes
    digest: bytes


@dataclass
class _Pending:
    """One call's drafts waiting in the group-commit queue, then what became of them."""

    drafts: list[Envelope]
    chained: bool  # on its therapy's chain (events); a refusal is not
    issued: list[IssuedEvent] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


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
        # the principal of this source: the broker lets it write only its ingress topic
        settings = settings.as_principal(connector_principal(source))
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
        # The group-commit queue (``_commit_in_group``) and whether a commit is under way.
        self._queue: deque[_Pending] = deque()
        self._queue_turn = threading.Condition()
        self._committing = False
        # Verdicts someone waits for (``expect`` / ``wait_verdict``): refusals of those ids.
        self._awaited: set[str] = set()
        self._refused: dict[str, Outcome] = {}
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
                self._refused[refused] = Outcome.refuse(payload["rule"], payload["reason_code"],
                                                        payload["reason"])
                self._verdict.notify_all()

    def expect(self, event_id: str) -> None:
        """Say that a verdict on ``event_id`` will be awaited (call before sending it)."""
        with self._verdict:
            self._awaited.add(event_id)

    def wait_verdict(self, event_id: str, timeout: float) -> Outcome:
        """The gatekeeper's answer to ``event_id``: accepted (on the canonical log), refused
        (with its rule, code and reason), or pending if none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.is_accepted(event_id):
                    return Outcome.accept()
                with self._verdict:
                    refusal = self._refused.get(event_id)
                    if refusal is not None:
                        return refusal
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return Outcome.pending(
                            f"written to the hub; the gatekeeper's verdict did not arrive "
                            f"within {timeout:.0f} s: it will be on the canonical or the "
                            "rejected topic")
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

        Concurrent calls are written together (see :meth:`_commit_in_group`); each call
        still returns only once Kafka acknowledged its own events, in the order given.

        Raises ``IngressWriteError`` (nothing is acknowledged then: answer negatively) or
        ``SchemaValidationError`` from the codec (a payload that does not fit its schema;
        raised before anything is written, and only to the caller whose payload it is).
        """
        if not self._started:
            raise RuntimeError("Connector.start() must run before emit()")
        if not requests:
            return []
        with self._lock:
            waiting = [self._in_flight[r.coi][-1].event_id for r in requests
                       if self._in_flight.get(r.coi)]
        if waiting and self.settle_s > 0:
            # Give the gatekeeper a moment: chaining onto a confirmed head is safer.
            self._heads.wait_read(waiting, self.settle_s)
        # Validated and encoded here, in the caller's thread: a payload that does not fit
        # its schema fails this caller alone, never the group it would have joined.
        bounds, now = TIME_BOUNDS[self.settings.time_bounds], now_us()
        drafts = [self.issuer.draft(r.event_type, r.coi, r.payload,
                                    occurred_at_us=r.occurred_at_us, meaning=r.meaning,
                                    event_id=r.event_id, prev_hash=b"",
                                    late_entry=late_entry_reason(r, self.issuer.producer,
                                                                 bounds, now))
                  for r in requests]
        return self._commit_in_group(_Pending(drafts, chained=True))

    def record_refusal(self, original: bytes, endpoint: str, refusal: Outcome, *,
                       coi: str | None = None, event_type: str | None = None,
                       event_id: str | None = None) -> IssuedEvent:
        """Write an ``EventRejected`` signed by this connector to its ingress topic; the
        gatekeeper relays it to ``rejected`` unchanged (only the gatekeeper writes there).

        :param original: the exact bytes received (a frame, a request body, a file row).
        :param endpoint: where they came in, e.g. ``mllp://127.0.0.1:2575`` or
            ``http://127.0.0.1:8080/Condition``; goes into ``source_topic``.
        :param refusal: its ``rule`` (which check refused them, e.g. ``HL7``, ``FHIR``,
            ``AUTH``), ``code`` and ``reason`` (the sentence for a person:
            segment/field/element and what to do) go on the log.

        The refusal did not come from a Kafka record, so ``source_partition`` and
        ``source_offset`` are -1. Like the gatekeeper's refusals it is not chained. It is
        written in the same group commit as concurrent ``emit`` calls.
        """
        payload = {
            "rejected_event_id": event_id, "rejected_event_type": event_type,
            "source_topic": endpoint, "source_partition": -1, "source_offset": -1,
            "rule": refusal.rule, "reason_code": refusal.code, "reason": refusal.reason,
            "original": bytes(original),
        }
        draft = self.issuer.draft("EventRejected", coi or UNKNOWN_COI, payload, prev_hash=b"")
        [issued] = self._commit_in_group(_Pending([draft], chained=False))
        log.warning("refused input on %s: %s %s", endpoint, refusal.code, refusal.reason)
        return issued

    # -- group commit -------------------------------------------------------------------

    def _commit_in_group(self, pending: _Pending) -> list[IssuedEvent]:
        """Queue ``pending`` and return its issued events once a group commit wrote them.

        Group commit: every caller queues its drafts and waits. Whenever no commit is
        under way, the caller at the head of the queue becomes the committer: it takes
        everything queued (up to ``MAX_GROUP_EVENTS``), pays one hybrid signature and one
        Kafka flush for all of it, and wakes each caller with its own events or error.
        While that group flushes the next one accumulates, so the group size follows the
        load with no waiting timer: an uncontended call commits alone, at once.

        The committer is a waiting caller rather than a thread of the connector's own: a
        hand-over to another thread would cost every lone call two thread switches, and a
        connector that is never started or closed (one per fuzzing example) leaks none.
        """
        with self._queue_turn:
            self._queue.append(pending)
            while not pending.done and (self._committing or self._queue[0] is not pending):
                self._queue_turn.wait()
            if not pending.done:
                self._committing = True
                group = self._take_group()
        if not pending.done:
            try:
                self._commit(group)
            finally:
                with self._queue_turn:
                    self._committing = False
                    self._queue_turn.notify_all()
        if pending.error is not None:
            if isinstance(pending.error, IngressWriteError):
                # a fresh one per caller: one exception raised in several threads at once
                # would collect all their tracebacks
                raise IngressWriteError(str(pending.error)) from pending.error
            raise pending.error
        return pending.issued

    def _take_group(self) -> list[_Pending]:
        """Pop the head of the queue and whatever follows it, up to the group bound (a call
        is never split: its events are written, and fail, together). Under ``_queue_turn``."""
        group = [self._queue.popleft()]
        size = len(group[0].drafts)
        while self._queue and size + len(self._queue[0].drafts) <= MAX_GROUP_EVENTS:
            size += len(self._queue[0].drafts)
            group.append(self._queue.popleft())
        return group

    def _commit(self, group: list[_Pending]) -> None:
        """Chain, sign, write and record one group; every member ends done."""
        try:
            # 1. Under the lock, point each draft at its therapy's chain head: the log's,
            #    our in-flight tail, or the previous draft of the same therapy in this group
            #    (queue order, so per-therapy order is the callers' order). The signing time
            #    is now, not when the caller drafted (R1 holds it against the append time).
            signed_at = now_us()
            with self._lock:
                heads: dict[str, bytes] = {}
                chained: list[Envelope] = []
                for pending in group:
                    for draft in pending.drafts:
                        prev = b""
                        if pending.chained:
                            prev = heads[draft.coi] if draft.coi in heads \
                                else self._prev_hash(draft.coi)
                        linked = replace(draft, prev_hash=prev, signed_at_us=signed_at)
                        if pending.chained:
                            heads[draft.coi] = chain_digest(linked)
                        chained.append(linked)
            # 2. One hybrid signature for the whole group, over the Merkle root of its
            #    events (each carries its inclusion path); a lone event keeps its own.
            issued = self.issuer.issue_group(chained)
            # 3. Produce all and flush once. Kafka acknowledges the group or fails it: then
            #    every caller of the group answers negatively and its sender resends; event
            #    ids derive from the outside message, so what did land is applied once (R8).
            self._writer.write(issued)
            # 4. What is written is ours: the "already written" set, the in-flight chains
            #    the next group chains onto, the patient index (as the log will show it).
            with self._lock:
                at = 0
                for pending in group:
                    pending.issued = issued[at:at + len(pending.drafts)]
                    at += len(pending.drafts)
                    if pending.chained:
                        self._record_written(pending.issued)
        except BaseException as exc:  # each caller raises it; none is left waiting
            for pending in group:
                pending.error = exc
        # 5. Wake every caller of the group with its own events (or the group's error).
        with self._queue_turn:
            for pending in group:
                pending.done = True
            self._queue_turn.notify_all()

    def _record_written(self, issued: Sequence[IssuedEvent]) -> None:
        """Note events now on our ingress topic (under ``_lock``)."""
        for event in issued:
            env = event.envelope
            self._written.add(env.event_id)
            chain = self._in_flight.setdefault(env.coi, [])
            if chain and chain[-1].digest != env.prev_hash:
                chain.clear()
            chain.append(_InFlight(env.event_id, env.prev_hash, event.digest))
            if load_catalog().short_name(env.event_type) == "PatientEnrolled":
                _, payload = decode_payload(env.schema_fingerprint, env.payload)
                self.patients.observe(env, payload, accepted=False)


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
