"""The one Kafka read loop: records in, ``RawRecord`` out, then through a ``LogVerifier``.

Three ways to read, one consumer underneath (``TopicReader``):

- ``read_raw`` / ``read_verified``: a topic (or some partitions) from the beginning to the
  end it had when the call started, e.g. to rebuild a partition's state or check a topic.
- ``LogFollower``: follow topics in a background thread for ever, handing every admitted
  record to a callback in log order per partition; it says when it has caught up with
  what was on the log when it started, and which event ids it has read.
- ``RegistryLookahead``: read the registry partition of the canonical topic ahead of the
  other partitions (a ``LogVerifier`` asks for it when a signer's key is not known yet).
- ``SealLookup``: read the gatekeeper's batch head at an offset of the seals topic (a
  ``LogVerifier`` asks for each head the first time a record names it).

Readers never join consumer groups or commit offsets (``assign`` only): where a reader
stands is its own business (a projection file stores it beside its rows).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from pcvhub.config import Settings
from pcvhub.log.verify import (
    CANONICAL,
    SEALS,
    LogPosition,
    LogVerifier,
    Quarantined,
    RawRecord,
    VerifiedRecord,
)
from pcvhub.topics import READER_GROUP, partition_for, topic_name, topic_spec
from pcvhub.trust.registry import ANCHOR_FILE, REGISTRY_COI, KeyRegistry, load_anchor

log = logging.getLogger(__name__)
#: answers that no retry changes
_REFUSED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}


class LogReadError(RuntimeError):
    """Kafka refuses a read (missing topic, fatal client error, read timed out)."""


def registry_partition() -> int:
    """The canonical partition that holds the registry chain."""
    return partition_for(REGISTRY_COI.encode(), topic_spec(CANONICAL).partitions)


def deployment_verifier(settings: Settings, reader: str, registry: KeyRegistry | None = None
                        ) -> LogVerifier:
    """A verifier for this deployment: the trust anchor's registry (or ``registry``, which
    must itself have started from the anchor), reading the registry chain ahead."""
    if registry is None:
        registry = load_anchor(Path(settings.data_dir) / ANCHOR_FILE)
    return LogVerifier(registry, registry_partition(), lookahead=RegistryLookahead(settings),
                       seals=SealLookup(settings), reader=reader)


class TopicReader:
    """One assign-only consumer over given topic partitions; yields ``RawRecord`` batches.

    :param suffixes: topic suffixes of the topic table (``events``, ``rejected``...).
    :param start: next offset per (suffix, partition); missing ones start at the beginning.
    :param partitions: read only these partition numbers (default: all).
    """

    def __init__(self, settings: Settings, suffixes: Sequence[str], *,
                 start: dict[tuple[str, int], int] | None = None,
                 partitions: Iterable[int] | None = None) -> None:
        self.settings = settings
        self._principal = settings.principal
        self._names = {s: topic_name(s, settings.topic_prefix) for s in suffixes}
        self._suffix = {name: s for s, name in self._names.items()}
        client = settings.librdkafka(**{"group.id": READER_GROUP,
                                        "enable.auto.commit": False})
        self._consumer = Consumer({**client, "auto.offset.reset": "earliest"})
        # Watermarks are asked of a consumer that fetches nothing: the fetching one would
        # answer each query only after its pending long-poll fetch.
        self._watermarks = Consumer(client)
        only = None if partitions is None else set(partitions)
        self.partitions = {s: [p for p in range(self._count(s)) if only is None or p in only]
                           for s in suffixes}
        start = start or {}
        self._consumer.assign([
            TopicPartition(self._names[s], p, start.get((s, p), OFFSET_BEGINNING))
            for s, ps in self.partitions.items() for p in ps])

    def _count(self, suffix: str) -> int:
        name = self._names[suffix]
        metadata = self._watermarks.list_topics(name, timeout=10).topics.get(name)
        refused = metadata is not None and metadata.error is not None and (
            metadata.error.code() in _REFUSED)
        if metadata is not None and refused:
            # Kafka answers the same for a topic that does not exist, so as not to tell
            # an unauthorised principal which topics do
            raise LogReadError(
                f"the broker refused principal {self._principal!r} reading {name} "
                f"({metadata.error.str()}): either the topic does not exist (create the "
                "topics and their ACLs with `pcvhub infra up`, or check PCVHUB_TOPIC_PREFIX) "
                "or the ACL table (`pcvhub infra principals`) does not let it read there")
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise LogReadError(
                f"topic {name} does not exist on {self.settings.bootstrap_servers}; create "
                "the topics with `pcvhub infra up` (or check PCVHUB_TOPIC_PREFIX)")
        return len(metadata.partitions)

    def ends(self) -> dict[tuple[str, int], int]:
        """The next offset to be written, per (suffix, partition), as of now."""
        return {(s, p): self._watermarks.get_watermark_offsets(
                    TopicPartition(self._names[s], p), timeout=10)[1]
                for s, ps in self.partitions.items() for p in ps}

    def fetched(self) -> dict[tuple[str, int], int]:
        """The consumer's next fetch offset per (suffix, partition), where known."""
        return {(self._suffix[tp.topic], tp.partition): tp.offset
                for tp in self._consumer.position(self._consumer.assignment())
                if tp.offset >= 0}

    def poll(self, max_records: int = 1000, timeout: float = 0.5) -> list[RawRecord]:
        """The next records (possibly none); transient client errors are retried by
        librdkafka and only logged, fatal ones raise ``LogReadError``."""
        return [r for r in map(self._raw, self._consumer.consume(max_records, timeout))
                if r is not None]

    def _raw(self, msg: Message) -> RawRecord | None:
        error = msg.error()
        if error is not None:
            if error.fatal():
                raise LogReadError(f"reading {msg.topic()}[{msg.partition()}]: {error.str()}")
            if error.code() in _REFUSED:
                # not transient: waiting would spin for ever on a topic this principal
                # may not read (the ACL table in pcvhub.topics says who may)
                raise LogReadError(
                    f"the broker refused principal {self._principal!r} reading "
                    f"{msg.topic()}: {error.str()}")
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("reading %s[%s]: %s", msg.topic(), msg.partition(), error.str())
            return None
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            return None
        return _as_record(msg, LogPosition(self._suffix[topic], partition, offset))

    def close(self) -> None:
        self._consumer.close()
        self._watermarks.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _as_record(msg: Message, position: LogPosition) -> RawRecord:
    """A consumed message as a ``RawRecord`` at ``position`` (key, value, headers as bytes)."""
    headers = msg.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return RawRecord(position, _bytes(msg.key()), _bytes(msg.value()),
                     tuple((k, _bytes(v) or b"") for k, v in pairs))


def read_raw(settings: Settings, suffix: str, partitions: Iterable[int] | None = None,
             timeout: float = 120.0) -> Iterator[RawRecord]:
    """Every record of ``suffix`` (those partitions) from the beginning to the end it had
    when the call started, in offset order per partition."""
    with TopicReader(settings, [suffix], partitions=partitions) as reader:
        behind = {tp: end for tp, end in reader.ends().items() if end > 0}
        deadline = time.monotonic() + timeout
        while behind:
            if time.monotonic() > deadline:
                raise LogReadError(f"could not read {suffix} to its end within {timeout:.0f}s "
                                   f"(still behind on partitions {sorted(p for _, p in behind)})")
            for record in reader.poll():
                yield record
                tp = (record.position.topic, record.position.partition)
                if tp in behind and record.position.offset >= behind[tp] - 1:
                    del behind[tp]


def read_verified(settings: Settings, suffix: str, verifier: LogVerifier,
                  partitions: Iterable[int] | None = None
                  ) -> Iterator[VerifiedRecord | Quarantined]:
    """``read_raw`` through ``verifier``: what it admitted or quarantined, in log order."""
    for record in read_raw(settings, suffix, partitions):
        yield verifier.admit(record)


class RegistryLookahead:
    """Reads the registry partition of the canonical topic from an offset to its current
    end (see ``pcvhub.log.verify``). Idle between reads: an assigned consumer would
    long-poll, and every watermark query would then wait behind a fetch."""

    def __init__(self, settings: Settings, timeout: float = 60.0) -> None:
        self.settings = settings
        self.topic = topic_name(CANONICAL, settings.topic_prefix)
        self.partition = registry_partition()
        self.timeout = timeout
        self._consumer: Consumer | None = None

    def __call__(self, from_offset: int) -> Iterator[RawRecord]:
        if self._consumer is None:
            self._consumer = Consumer(self.settings.librdkafka(**{
                "group.id": READER_GROUP, "enable.auto.commit": False}))
        consumer = self._consumer
        tp = TopicPartition(self.topic, self.partition)
        high = consumer.get_watermark_offsets(tp, timeout=10)[1]
        if from_offset >= high:
            return
        consumer.assign([TopicPartition(self.topic, self.partition, from_offset)])
        position, deadline = from_offset, time.monotonic() + self.timeout
        try:
            while position < high:
                if time.monotonic() > deadline:
                    raise LogReadError(
                        f"could not read {self.topic}[{self.partition}] from {position} to "
                        f"{high} within {self.timeout:.0f}s while looking for a signer's key")
                for msg in consumer.consume(500, timeout=1.0):
                    offset = msg.offset()
                    if msg.error() or offset is None:
                        continue
                    position = offset + 1
                    yield _as_record(msg, LogPosition(CANONICAL, self.partition, offset))
        finally:
            consumer.unassign()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class SealLookup:
    """The value of the seals topic's record at an offset (``pcvhub.trust.seal``), read on
    demand and kept for a while: a batch's records, and the next batches', name heads that
    stand together, so one fetch serves many. Idle between reads, like the lookahead."""

    #: how many heads it keeps (each ~3.5 KB)
    KEPT = 2048
    #: how long a head the watermark does not show yet is waited for: the gatekeeper has
    #: Kafka's acknowledgement of a head before it sends a record naming it, but a reader
    #: may ask a broker whose high watermark has not moved yet
    SETTLE_SECONDS = 3.0

    def __init__(self, settings: Settings, timeout: float = 60.0) -> None:
        self.settings = settings
        self.topic = topic_name(SEALS, settings.topic_prefix)
        self.timeout = timeout
        self._kept: OrderedDict[int, bytes] = OrderedDict()
        self._consumer: Consumer | None = None

    def __call__(self, offset: int) -> bytes | None:
        value = self._kept.get(offset)
        if value is not None:
            self._kept.move_to_end(offset)
            return value
        if offset < 0:
            return None
        if self._consumer is None:
            self._consumer = Consumer(self.settings.librdkafka(**{
                "group.id": READER_GROUP, "enable.auto.commit": False}))
        consumer, tp = self._consumer, TopicPartition(self.topic, 0)
        settle = time.monotonic() + self.SETTLE_SECONDS
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        while offset >= high and time.monotonic() < settle:
            time.sleep(0.1)
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
        if not low <= offset < high:
            return None
        consumer.assign([TopicPartition(self.topic, 0, offset)])
        deadline = time.monotonic() + self.timeout
        try:
            while offset not in self._kept:
                if time.monotonic() > deadline:
                    raise LogReadError(f"could not read {self.topic}[0]@{offset} within "
                                       f"{self.timeout:.0f}s (a batch head a record names)")
                for msg in consumer.consume(500, timeout=1.0):
                    at = msg.offset()
                    if msg.error() or at is None:
                        continue
                    self._kept[at] = _bytes(msg.value()) or b""
                    self._kept.move_to_end(at)
                while len(self._kept) > self.KEPT:  # a consume is far below KEPT: the
                    # head asked for, read in this consume, is never the one dropped
                    self._kept.popitem(last=False)
        finally:
            consumer.unassign()
        return self._kept.get(offset)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class LogFollower:
    """Follows topics in a thread; every admitted record goes to ``on_record``.

    :param suffixes: topics to follow (suffixes of the topic table), from the beginning.
    :param verifier: admits or quarantines each record (it may be shared between
        followers of one deployment).
    :param on_record: called in the follower thread, in log order per partition, with
        each admitted record; quarantined records go to ``on_quarantine`` if given (they
        are always counted in ``verifier.report`` and logged).
    :param partitions: follow only these partition numbers (default: all).
    :param keys: verify and deliver only records with these keys (default: all). The
        gatekeeper's registry follower reads only the registry chain: the therapies that
        share its partition are not its business, and verifying them cost it a sixth of
        the canonical log a second time. A record with another key is passed over
        unread, never folded (its chain is not one this follower checks).

    A callback that raises is logged with the record's position and the follower goes
    on: one bad record (or one bug in a fold) never stops a connector reading the log.
    """

    def __init__(self, settings: Settings, suffixes: Sequence[str], verifier: LogVerifier,
                 on_record: Callable[[VerifiedRecord], None] | None = None, *,
                 on_quarantine: Callable[[Quarantined], None] | None = None,
                 partitions: Iterable[int] | None = None, keys: Iterable[bytes] | None = None,
                 name: str = "log-follower") -> None:
        self.settings = settings
        self.suffixes = list(suffixes)
        self.verifier = verifier
        self.name = name
        self._on_record = on_record
        self._on_quarantine = on_quarantine
        self._partitions = None if partitions is None else list(partitions)
        self._keys = None if keys is None else frozenset(keys)
        self._seen: set[str] = set()
        self._caught_up = threading.Event()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def start(self) -> LogFollower:
        self._thread = threading.Thread(target=self._follow, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> LogFollower:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _follow(self) -> None:
        try:
            with TopicReader(self.settings, self.suffixes, partitions=self._partitions) as reader:
                behind = {tp: end for tp, end in reader.ends().items() if end > 0}
                if not behind:
                    self._caught_up.set()
                while not self._stop.is_set():
                    records = reader.poll(500, timeout=0.2)
                    for record in records:
                        if self._keys is None or record.key in self._keys:
                            self._deliver(self.verifier.admit(record))
                        tp = (record.position.topic, record.position.partition)
                        if tp in behind and record.position.offset >= behind[tp] - 1:
                            del behind[tp]
                            if not behind:
                                self._caught_up.set()
                    if records:
                        with self._changed:
                            self._changed.notify_all()
        except BaseException as exc:  # noqa: BLE001 - reported to waiters, then logged
            self._failure = exc
            log.exception("%s stopped following %s", self.name, ", ".join(self.suffixes))
            with self._changed:
                self._changed.notify_all()

    def _deliver(self, outcome: VerifiedRecord | Quarantined) -> None:
        try:
            if isinstance(outcome, VerifiedRecord):
                if self._on_record is not None:
                    self._on_record(outcome)
                with self._changed:
                    self._seen.add(outcome.event_id)
            elif self._on_quarantine is not None:
                self._on_quarantine(outcome)
        except Exception:  # noqa: BLE001 - see the class doc
            log.exception("%s: folding %s failed; following on", self.name, outcome.position)

    # -- what it has read -------------------------------------------------------------------

    def wait_caught_up(self, timeout: float) -> bool:
        """Block until everything on the log when the follower started has been read."""
        deadline = time.monotonic() + timeout
        while not self._caught_up.wait(min(0.2, max(deadline - time.monotonic(), 0))):
            if self._failure is not None or time.monotonic() >= deadline:
                return False
        return True

    def has_read(self, event_id: str) -> bool:
        """True once an admitted record of this event id has been folded."""
        with self._changed:
            return event_id in self._seen

    def wait_read(self, event_ids: Iterable[str], timeout: float) -> set[str]:
        """Wait until each id has been read (admitted); return those still missing."""
        wanted = set(event_ids)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                missing = wanted - self._seen
                remaining = deadline - time.monotonic()
                if not missing or remaining <= 0 or self._failure is not None:
                    return missing
                self._changed.wait(remaining)
