"""Admit or quarantine one record read back from a topic (no Kafka here).

``LogVerifier.admit(record)`` decodes the record and checks, in this order:

1. **Decoding**: the envelope and its payload are readable Avro (else ``MALFORMED``).
2. **Where it stands**: a canonical record is keyed by its chain-of-identity id
   (``KEY_NOT_COI``); registry events live on the registry chain and nothing else does
   (``REGISTRY_OFF_CHAIN``); the rejected and alerts topics hold only the gatekeeper's
   record types (``WRONG_TOPIC``).
3. **The signer's key**: registered on the registry chain (or the trust anchor) and valid
   from before the event occurred (``UNREGISTERED_KEY``, ``KEY_NOT_YET_VALID``). For
   registry events the whole window counts, revocation included.
4. **Both signatures** (Ed25519 and ML-DSA-65, or the batch signature and the event's
   inclusion path): ``SIGNATURE_INVALID``, ``BATCH_PATH_INVALID``, ``UNSIGNED``.
5. **Who may write there**: a registry event counts only if a REGISTRAR key known at that
   point of the registry chain signed it (``NOT_REGISTRAR``); refusals are signed by the
   gatekeeper or a connector, alerts by the gatekeeper (``WRONG_SIGNER``).
6. **The gatekeeper's seal** (every output topic: canonical, rejected, alerts): the
   ``pcvhub-seal`` header is there (``UNSEALED``: the record was put on the topic by
   something other than the gatekeeper) and readable; the batch head it names is on the
   seals topic, readable, signed by a key of a GATEKEEPER actor registered before the
   sealing time (checked once per head, then remembered); and the record's inclusion path
   leads from this record (its topic, partition, key and bytes) and the sealed facts to
   the head's root (``SEAL_INVALID``, with the reason). The ingress position the record
   answers comes from the seal, never from an unsigned header. A refusal or alert whose
   seal (batch head and leaf) this reader has already admitted once is a copy someone
   appended again (``SEAL_REPLAYED``): the gatekeeper writes each sealed record once, and
   a canonical copy is caught by its hash chain anyway.
7. **The hash chain** (canonical topic): the record names the chain digest of the last
   admitted record of its therapy (``HASH_CHAIN_BROKEN``).

Given a witnessed ledger checkpoint (``checkpoint``, ``pcvhub.ledger.trusted``), step 4
is skipped for a record off the registry chain whose leaf, recomputed from its bytes,
position and seal, is the checkpoint's leaf at that position (``VerifiedRecord.
by_checkpoint``; counted in ``report.by_checkpoint``); every other step still runs.

Only then does it fold: the therapy's chain head moves, and a registry event goes into
the key registry. A record that fails is **quarantined**: returned as ``Quarantined``
with its position and reason, counted in ``report``, logged, and never folded.

Why revocation and expiry count only on the registry chain: the registry chain and a
therapy's chain live in different partitions, and Kafka orders nothing across
partitions. Whether a later revocation had been read before an event would depend on how
a reader's fetches interleaved, so two readers of the same log would disagree. The
gatekeeper judged the key's whole window when it accepted the event (R1), and the audit
view shows each key's standing as the registry stands now.

The registry chain lives in one partition of the canonical topic. A record of another
partition (or topic) may be read before the registration of its signer's key; the
verifier then reads the registry partition ahead to its current end (``lookahead``) and
asks again. What it read ahead it answers from memory when the main stream reaches it.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pcvhub.ledger.leaf import MAX_SEAL_SIZE, LedgerLeaf
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import DecodeError, decode_envelope, decode_payload
from pcvhub.schemas.envelope import Envelope
from pcvhub.schemas.policy import policy_of, types_on
from pcvhub.streams.event import InboundEvent, SourcePosition
from pcvhub.topics import SEAL_HEADER, TopicRole
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.checks import PendingChecks, SignatureChecks
from pcvhub.trust.registry import REGISTRY_COI, REGISTRY_EVENTS, KeyRegistry
from pcvhub.trust.seal import (
    Seal,
    SealError,
    SealHead,
    SealSource,
    head_problem,
    seal_problem,
)
from pcvhub.trust.signing import verify_envelope

log = logging.getLogger(__name__)

CANONICAL = "events"
REJECTED = "rejected"
ALERTS = "alerts"
SEALS = "seals"
REGISTRAR = "REGISTRAR"
GATEKEEPER = "GATEKEEPER"
#: the topics only the gatekeeper writes: nothing stands there unsealed
OUTPUT_TOPICS = (CANONICAL, REJECTED, ALERTS)

#: The gatekeeper's side topics: which event types stand on each, and which roles sign
#: them there, are the ``topic`` and ``roles`` columns of the policy table.
SIDE_TOPICS: dict[str, TopicRole] = {REJECTED: TopicRole.REJECTED, ALERTS: TopicRole.ALERTS}

#: How many quarantined records a report keeps whole (the rest are counted only).
REPORT_SAMPLES = 20
#: How many verified batch heads a verifier remembers: a batch's records stand close
#: together on each partition, so a small window spares nearly every second verification
HEADS_REMEMBERED = 4096


@dataclass(frozen=True, order=True)
class LogPosition:
    """Where a record stands: topic suffix of the topic table, partition, offset."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class RawRecord:
    """A record as Kafka returned it: nothing about it is believed yet."""

    position: LogPosition
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def topic(self) -> str:
        return self.position.topic

    @property
    def partition(self) -> int:
        return self.position.partition

    @property
    def offset(self) -> int:
        return self.position.offset

    @classmethod
    def at(cls, topic: str, partition: int, offset: int, key: bytes | None,
           value: bytes | None, seal: bytes | None = None) -> RawRecord:
        """A record at a position, with the gatekeeper's seal header if given."""
        headers = () if seal is None else ((SEAL_HEADER, seal),)
        return cls(LogPosition(topic, partition, offset), key, value, headers)


@dataclass(frozen=True)
class VerifiedRecord:
    """A record that passed every check: the decoded event, where it stands, its digest.

    ``seal`` is the gatekeeper's verified seal (None only off the output topics);
    ``event.source`` the ingress position it names (None for an alert of a timer sweep);
    ``by_checkpoint``: its own signature was not checked again because a witnessed ledger
    checkpoint covers its leaf (see the module doc).
    """

    position: LogPosition
    key: bytes | None
    event: InboundEvent
    digest: bytes
    seal: Seal | None = None
    by_checkpoint: bool = False

    @property
    def envelope(self) -> Envelope:
        return self.event.envelope

    @property
    def event_type(self) -> str:
        return self.event.event_type

    @property
    def payload(self) -> dict[str, Any]:
        return self.event.payload

    @property
    def event_id(self) -> str:
        return self.event.event_id

    @property
    def coi(self) -> str:
        return self.event.coi


@dataclass(frozen=True)
class Quarantined:
    """A record that failed a check: never folded, reported with where and why.

    ``envelope``/``event_type`` are what the record claims, when it could be decoded.
    """

    position: LogPosition
    key: bytes | None
    raw: bytes
    code: str
    reason: str
    envelope: Envelope | None = None
    event_type: str | None = None

    def __str__(self) -> str:
        return f"{self.position} {self.code}: {self.reason}"


@dataclass
class QuarantineReport:
    """Counts of what a verifier admitted and quarantined, and the first quarantined."""

    admitted: int = 0
    #: of those admitted, how many on a witnessed checkpoint's word instead of their own
    #: signatures
    by_checkpoint: int = 0
    by_code: Counter[str] = field(default_factory=Counter)
    first: list[Quarantined] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        return sum(self.by_code.values())

    def add(self, outcome: VerifiedRecord | Quarantined) -> None:
        if isinstance(outcome, VerifiedRecord):
            self.admitted += 1
            self.by_checkpoint += outcome.by_checkpoint
            return
        self.by_code[outcome.code] += 1
        if len(self.first) < REPORT_SAMPLES:
            self.first.append(outcome)


#: Reads the registry partition of the canonical topic from an offset to its current end.
RegistryLookahead = Callable[[int], Iterable[RawRecord]]


class CheckpointCover(Protocol):
    """What the verifier asks a witnessed checkpoint (``pcvhub.ledger.trusted``)."""

    def covers(self, topic: str, partition: int, offset: int, leaf: bytes) -> bool: ...


class _Refused(Exception):
    """One failed check, on the way to a ``Quarantined``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class LogVerifier:
    """Decodes and verifies records in log order; the only fold of the registry from a log.

    :param registry: the key registry to verify with and fold into; it starts from the
        deployment's trust anchor (``load_anchor``), never from anything read.
    :param registry_partition: the canonical partition that holds the registry chain.
    :param lookahead: reads that partition ahead (see the module doc); None: never.
    :param heads: chain heads already admitted (a resumed reader), by CoI.
    :param registry_cursor: the registry partition's next offset already folded.
    :param seals: where the gatekeeper's batch heads are read, by offset on the seals
        topic; None: nowhere, so no output record can be admitted.
    :param checks: processes to check a batch's signatures in ahead of admitting it in
        order (``check_ahead``, ``pcvhub.trust.checks``); None: every check inline.
    :param checkpoint: a witnessed ledger checkpoint whose leaves stand for the signatures
        of the records they cover (see the module doc); None: every signature checked.
    :param reader: who reads, for the log lines of quarantined records.

    Thread-safe: one verifier may serve several followers of one deployment (a
    connector follows the canonical and rejected topics with one registry).
    """

    def __init__(self, registry: KeyRegistry, registry_partition: int | None = None, *,
                 lookahead: RegistryLookahead | None = None,
                 heads: dict[str, bytes] | None = None, registry_cursor: int = 0,
                 seals: SealSource | None = None, checks: SignatureChecks | None = None,
                 checkpoint: CheckpointCover | None = None,
                 reader: str = "log reader") -> None:
        self.registry = registry
        self.registry_partition = registry_partition
        self.heads: dict[str, bytes] = dict(heads or {})
        self.report = QuarantineReport()
        self.reader = reader
        self.catalog = load_catalog()
        self._lookahead = lookahead
        self._registry_cursor = registry_cursor
        self._ahead: dict[LogPosition, VerifiedRecord | Quarantined] = {}
        self._reading_ahead = False
        self._seals = seals
        self._verified_heads: OrderedDict[int, SealHead] = OrderedDict()
        # (head offset, leaf index) of every refusal and alert admitted: their replays.
        # Held for the reader's life (a resumed reader starts afresh: see the note in
        # _replayed); refusals and alerts are few beside the canonical records.
        self._side_seals: dict[tuple[int, int], LogPosition] = {}
        self._checks = checks
        self._checkpoint = checkpoint
        # envelopes check_ahead decoded, by position, with the bytes they were decoded from
        self._decoded: dict[LogPosition, tuple[bytes, Envelope]] = {}
        self._lock = threading.RLock()

    # -- the one entry point --------------------------------------------------------------

    def admit(self, record: RawRecord) -> VerifiedRecord | Quarantined:
        """Verify one record (records of one partition in offset order) and fold it."""
        with self._lock:
            outcome = self._ahead.pop(record.position, None)
            if outcome is not None:  # judged while reading the registry chain ahead
                self._decoded.pop(record.position, None)
            else:
                outcome = self._judge(record)
                if self._in_registry_partition(record.position):
                    # judged here: reading ahead must not judge it a second time
                    self._registry_cursor = max(self._registry_cursor,
                                                record.position.offset + 1)
            self.report.add(outcome)
        if isinstance(outcome, Quarantined):
            log.warning("%s: quarantined %s", self.reader, outcome)
        return outcome

    def admit_all(self, records: Iterable[RawRecord]) -> list[VerifiedRecord | Quarantined]:
        records = list(records)
        pending = self.check_ahead(records)
        if pending is not None:
            pending.collect()
        return [self.admit(r) for r in records]

    def check_ahead(self, records: Sequence[RawRecord]) -> PendingChecks | None:
        """Start checking the signatures of records about to be admitted across the pool's
        cores (None without a pool); ``collect()`` the result before admitting them.
        ``admit`` then asks the same questions in order and finds them answered; whatever
        the pool could not check, it checks itself."""
        if self._checks is None:
            return None
        envelopes: list[Envelope | None] = []
        decoded: dict[LogPosition, tuple[bytes, Envelope]] = {}
        for record in records:
            try:
                env = decode_envelope(record.value or b"")
            except DecodeError:
                envelopes.append(None)
                continue
            envelopes.append(env)
            decoded[record.position] = (record.value or b"", env)
        with self._lock:
            self._decoded.update(decoded)
        return self._checks.submit(envelopes, self.registry)

    def close(self) -> None:
        """Close the lookahead's and the seal lookup's consumers, if they have them."""
        for reader in (self._lookahead, self._seals):
            close = getattr(reader, "close", None)
            if close is not None:
                close()

    def head(self, coi: str) -> bytes:
        """Chain digest of the last admitted canonical record of ``coi`` (b"" if none)."""
        with self._lock:
            return self.heads.get(coi, b"")

    # -- the checks ------------------------------------------------------------------------

    def _judge(self, record: RawRecord) -> VerifiedRecord | Quarantined:
        raw = record.value or b""
        envelope: Envelope | None = None
        short: str | None = None
        ahead = self._decoded.pop(record.position, None)
        try:
            try:
                # decoded by check_ahead from these very bytes, or decoded now
                envelope = ahead[1] if ahead is not None and ahead[0] is raw else (
                    decode_envelope(raw))
                full_name, payload = decode_payload(envelope.schema_fingerprint,
                                                    envelope.payload, envelope.event_type)
            except DecodeError as exc:
                raise _Refused("MALFORMED", str(exc)) from None
            short = self.catalog.short_name(full_name)
            event = InboundEvent(envelope, short, payload, raw)
            on_registry = self._placed(record, event)
            digest = chain_digest(envelope)
            # the registry chain is always verified in full: it is what every key comes from
            by_checkpoint = not on_registry and self._covered(record, digest)
            self._signed(event, full_window=on_registry, signature=not by_checkpoint)
            self._signer_may_write(record, event, on_registry)
            seal = self._sealed(record, event, on_registry)
            if seal is not None and seal.source is not None:
                topic, partition, offset = seal.source
                appended = None if seal.appended_at_us < 0 else seal.appended_at_us
                event = replace(event, source=SourcePosition(topic, partition, offset,
                                                             appended))
            if record.position.topic == CANONICAL:
                self._linked(event)
            if seal is not None and record.position.topic in SIDE_TOPICS:
                self._replayed(record, event, seal)
        except _Refused as refused:
            return Quarantined(record.position, record.key, raw, refused.code, refused.reason,
                               envelope, short)
        # -- fold: only what passed every check --
        if seal is not None and record.position.topic in SIDE_TOPICS:
            self._side_seals[(seal.head_offset, seal.leaf_index)] = record.position
        if record.position.topic == CANONICAL:
            self.heads[event.coi] = digest
            if on_registry:
                self.registry.apply_event(event.event_id, short, payload)
        return VerifiedRecord(record.position, record.key, event, digest, seal, by_checkpoint)

    def _replayed(self, record: RawRecord, event: InboundEvent, seal: Seal) -> None:
        """Refuse a refusal or alert whose very seal was admitted before. A reader resumed
        from stored offsets (a projection runner's restart) does not know the seals it
        admitted before it stopped: such a replay shows as a second refusal there."""
        first = self._side_seals.get((seal.head_offset, seal.leaf_index))
        # the same record read again (at the same position) is no replay
        if first is not None and first != record.position:
            raise _Refused("SEAL_REPLAYED",
                           f"{event.event_type} {event.event_id} on {record.position} carries "
                           f"the seal (batch head seals@{seal.head_offset}, leaf "
                           f"{seal.leaf_index}) of the record at {first}: a copy appended "
                           "again by someone with broker access, not a second answer of "
                           "the gatekeeper")

    def _covered(self, record: RawRecord, digest: bytes) -> bool:
        """True if the witnessed checkpoint holds this record's leaf, computed as the
        ledger computes it (chain digest, position, seal). The header's bytes stand for the
        seal as the ledger re-encodes it: ``Seal.decode`` refuses anything but the one
        encoding, so a header the ledger logged is exactly those bytes, and one that does
        not decode matches no leaf (``_sealed`` then names it): no second decode here."""
        if self._checkpoint is None or record.position.topic not in OUTPUT_TOPICS:
            return False
        seal = record.header(SEAL_HEADER)
        if seal is None or len(seal) > MAX_SEAL_SIZE:  # no leaf holds one that large
            return False
        position = record.position
        leaf = LedgerLeaf(digest, position.topic, position.partition, position.offset, seal)
        return self._checkpoint.covers(position.topic, position.partition, position.offset,
                                       leaf.encode())

    def _sealed(self, record: RawRecord, event: InboundEvent, on_registry: bool
                ) -> Seal | None:
        """The record's verified seal (output topics), or ``_Refused`` saying why not."""
        topic = record.position.topic
        if topic not in OUTPUT_TOPICS:
            return None
        what = f"{event.event_type} {event.event_id} on {record.position}"
        header = record.header(SEAL_HEADER)
        if header is None:
            raise _Refused("UNSEALED",
                           f"{what} carries no {SEAL_HEADER} header: it was not written by the "
                           "gatekeeper (which seals everything it writes) but put on the log "
                           "by someone with broker access; not accepted by the gatekeeper")
        try:
            seal = Seal.decode(header)
        except SealError as exc:
            raise _Refused("SEAL_INVALID", f"{what}: its {SEAL_HEADER} header is unreadable: "
                                           f"{exc}") from None
        head = self._head(seal.head_offset, what, event, on_registry)
        wrong = seal_problem(seal, head, topic, record.position.partition, record.key,
                             record.value or b"")
        if wrong is not None:
            raise _Refused("SEAL_INVALID", f"{what}: {wrong}")
        return replace(seal, head=head)

    def _head(self, offset: int, what: str, event: InboundEvent, on_registry: bool
              ) -> SealHead:
        """The verified batch head at ``offset`` of the seals topic, or ``_Refused``."""
        known = self._verified_heads.get(offset)
        if known is not None:
            self._verified_heads.move_to_end(offset)
            return known
        value = None if self._seals is None else self._seals(offset)
        if value is None:
            where = ("the seals topic does not hold" if self._seals is not None else
                     "this reader was given no seals topic to read")
            raise _Refused("SEAL_INVALID",
                           f"{what} names the batch head at seals@{offset}, which {where}: "
                           "nothing attests that the gatekeeper wrote it")
        try:
            head = SealHead.decode(value)
        except SealError as exc:
            raise _Refused("SEAL_INVALID", f"{what}: its batch head at seals@{offset} is "
                                           f"unreadable: {exc}") from None
        registry, provisional = self.registry, False
        if (head.signer, head.key_id) not in registry.keys:
            if on_registry:
                # The gatekeeper's own registration is the first record it seals, with the
                # key that record registers: judge that seal with the record folded in
                # (and do not remember the head: the record may still fail its chain).
                registry, provisional = copy.deepcopy(registry), True
                registry.apply_event(event.event_id, event.event_type, event.payload)
            elif self._read_ahead():
                registry = self.registry
        problem = registry.registration_problem(head.signer, head.key_id, head.sealed_at_us)
        if problem is not None:
            raise _Refused("SEAL_INVALID", f"{what}: its seal's key: {problem[1]}")
        roles = registry.roles_of(head.signer)
        if GATEKEEPER not in roles:
            raise _Refused("SEAL_INVALID",
                           f"{what} is sealed by {head.signer} (roles: "
                           f"{', '.join(sorted(roles)) or 'none'}), not by a GATEKEEPER")
        wrong = head_problem(head, registry.keys[(head.signer, head.key_id)].public)
        if wrong is not None:
            raise _Refused("SEAL_INVALID", f"{what}: its batch head at seals@{offset}: {wrong}")
        if not provisional:
            self._verified_heads[offset] = head
            if len(self._verified_heads) > HEADS_REMEMBERED:
                self._verified_heads.popitem(last=False)
        return head

    def _placed(self, record: RawRecord, event: InboundEvent) -> bool:
        """Check the record stands where its kind may; True if it is a registry event."""
        topic, kind = record.position.topic, event.event_type
        registry_kind, registry_chain = kind in REGISTRY_EVENTS, event.coi == REGISTRY_COI
        if topic == CANONICAL:
            if record.key != event.coi.encode():
                raise _Refused("KEY_NOT_COI",
                               f"record key {record.key!r} is not the event's chain-of-"
                               f"identity id {event.coi}")
            if registry_kind != registry_chain:
                raise _Refused("REGISTRY_OFF_CHAIN",
                               f"event {event.event_id} ({kind}) on chain {event.coi}: "
                               f"registry events, and only they, live on {REGISTRY_COI}")
            return registry_kind
        side = SIDE_TOPICS.get(topic)
        row = policy_of(kind)
        if side is not None and (row is None or row.topic is not side):
            raise _Refused("WRONG_TOPIC", f"event {event.event_id} is a {kind}; {topic} holds "
                                          f"only {', '.join(sorted(types_on(side)))}")
        return False

    def _signed(self, event: InboundEvent, *, full_window: bool, signature: bool = True
                ) -> None:
        """The key's registration, then (unless a checkpoint stands for it) both halves of
        the signature."""
        env = event.envelope
        problem = self._key_problem(env, full_window)
        if problem is not None:
            raise _Refused(*problem)
        if not signature:
            return
        result = verify_envelope(env, self.registry.keys[(env.producer, env.key_id)].public)
        if not result.ok:
            raise _Refused(result.code, str(result))

    def _key_problem(self, env: Envelope, full_window: bool) -> tuple[str, str] | None:
        problem = self._registry_problem(env, full_window)
        if problem is not None and problem[0] == "UNREGISTERED_KEY" and self._read_ahead():
            problem = self._registry_problem(env, full_window)
        return problem

    def _registry_problem(self, env: Envelope, full_window: bool) -> tuple[str, str] | None:
        if full_window:
            problem = self.registry.key_problem(env.producer, env.key_id, env.occurred_at_us)
        else:
            problem = self.registry.registration_problem(env.producer, env.key_id,
                                                         env.occurred_at_us)
        if problem is None:
            return None
        return problem[0], f"event {env.event_id}: {problem[1]}"

    def _signer_may_write(self, record: RawRecord, event: InboundEvent, on_registry: bool
                          ) -> None:
        roles = self.registry.roles_of(event.producer)
        if on_registry and REGISTRAR not in roles:
            raise _Refused("NOT_REGISTRAR",
                           f"registry event {event.event_id} ({event.event_type}) is signed by "
                           f"{event.producer}, who is not a registrar on the registry chain "
                           f"(roles: {', '.join(sorted(roles)) or 'none'}); only a REGISTRAR "
                           "key known at that point of the chain may change the registry")
        row = policy_of(event.event_type)
        if record.position.topic in SIDE_TOPICS and row is not None and not roles & row.roles:
            raise _Refused("WRONG_SIGNER",
                           f"{event.event_type} {event.event_id} on {record.position.topic} is "
                           f"signed by {event.producer} (roles: "
                           f"{', '.join(sorted(roles)) or 'none'}); only "
                           f"{' or '.join(sorted(row.roles))} may write there")

    def _linked(self, event: InboundEvent) -> None:
        head = self.heads.get(event.coi, b"")
        prev = bytes(event.envelope.prev_hash)
        if prev != head:
            raise _Refused("HASH_CHAIN_BROKEN",
                           f"event {event.event_id} ({event.event_type}) names previous hash "
                           f"{prev.hex()[:16] or '(none)'} but the last admitted record of "
                           f"{event.coi} has hash {head.hex()[:16] or '(none: it is new)'}: a "
                           "record is missing, altered, replayed or inserted")

    # -- reading the registry chain ahead ----------------------------------------------------

    def _read_ahead(self) -> bool:
        """Read the registry partition to its current end; True if it held anything new."""
        if self._lookahead is None or self._reading_ahead or self.registry_partition is None:
            return False
        self._reading_ahead = True
        found = False
        try:
            for record in self._lookahead(self._registry_cursor):
                if record.position.offset < self._registry_cursor:
                    continue
                self._registry_cursor = record.position.offset + 1
                if record.key == REGISTRY_COI.encode() and record.position not in self._ahead:
                    self._ahead[record.position] = self._judge(record)
                    found = True
        finally:
            self._reading_ahead = False
        return found

    def _in_registry_partition(self, position: LogPosition) -> bool:
        return position.topic == CANONICAL and position.partition == self.registry_partition
