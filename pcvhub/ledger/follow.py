"""``pcvhub ledger run``: follow the gatekeeper's outputs into the transparency log.

The ledger reads the canonical, rejected and alerts topics with the one log reader
(``LogFollower``: every record decoded and verified from the trust anchor) and appends
each admitted record as a leaf (``LedgerLeaf``: chain digest, position, seal), in the
order it reads them. It signs a checkpoint every ``every`` leaves or ``seconds`` seconds,
whichever comes first, and hands each to ``publish``.

Restarting reads the topics from the beginning again (the verifier must rebuild every
therapy's chain head anyway). A record at a position the log already holds is not
appended twice: its leaf is compared with the logged one instead, so the ledger names a
record that changed on the broker since it was logged, one that is now quarantined, and
(once caught up) one that is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from pcvhub.config import Settings
from pcvhub.ledger.archive import DailyArchive
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import TransparencyLog
from pcvhub.ledger.note import LogKeys, VerifiedCheckpoint, verify_checkpoint
from pcvhub.log.reader import LogFollower, deployment_verifier
from pcvhub.log.verify import ALERTS, CANONICAL, REJECTED, Quarantined, VerifiedRecord
from pcvhub.topics import READER_GROUP, topic_name

log = logging.getLogger(__name__)

#: what the ledger logs: everything the gatekeeper writes
SOURCES = (CANONICAL, REJECTED, ALERTS)
Position = tuple[str, int, int]


def leaf_of(record: VerifiedRecord) -> LedgerLeaf:
    """The leaf of an admitted record: its chain digest, where it is, and the gatekeeper's
    seal (verified by the log reader; every record of the outputs carries one), so a leaf
    proves "accepted by the gatekeeper", not merely "present on the log"."""
    position = record.position
    seal = record.seal.encode() if record.seal is not None else b""
    return LedgerLeaf(record.digest, position.topic, position.partition, position.offset,
                      seal)


class CheckpointTopic:
    """Publishes each checkpoint on the ledger's own topic, keyed by the origin.

    The note is its own proof (both lines verify offline), so a reader of the topic needs
    no trust in the broker. Each send is awaited (one round trip per checkpoint, not per
    record), so a checkpoint announced is a checkpoint on the topic; one that fails is
    logged and the next supersedes it (the file is the commit point, not the topic).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = topic_name("ledger", settings.topic_prefix)
        self._producer = Producer(settings.producer(**{"linger.ms": 0}))

    def catch_up(self, latest: VerifiedCheckpoint, keys: LogKeys) -> bool:
        """Publish ``latest`` (the checkpoint a restarted ledger resumed from) unless the
        topic's last checkpoint is of this log and at least as large; True if published.

        The file is written before the topic (the commit point comes first), so a ledger
        killed between the two leaves the topic one checkpoint behind its file. The empty
        tree ``init`` signs is never announced (a topic holds only checkpoints of records).
        It goes as the file holds it: with the cosignatures attached before the kill, if
        any."""
        if latest.checkpoint.size == 0:
            return False
        consumer = Consumer(self.settings.librdkafka(**{"group.id": READER_GROUP,
                                                        "enable.auto.commit": False}))
        try:
            high = consumer.get_watermark_offsets(TopicPartition(self.topic, 0),
                                                  timeout=10)[1]
            last = None
            if high > 0:
                consumer.assign([TopicPartition(self.topic, 0, high - 1)])
                deadline = time.monotonic() + 10
                while last is None and time.monotonic() < deadline:
                    msg = consumer.poll(0.5)
                    if msg is not None and not msg.error():
                        last = msg.value() or b""
        finally:
            consumer.close()
        if last is not None:
            try:
                published = verify_checkpoint(last, keys.ed25519_vkey, keys.ml_dsa_44_vkey)
                if published.checkpoint.size >= latest.checkpoint.size:
                    return False
            except LedgerError:
                pass  # not this log's: ours goes on top
        self(latest)
        return True

    def __call__(self, signed: VerifiedCheckpoint) -> None:
        self._producer.produce(self.topic, key=signed.checkpoint.origin.encode(),
                               value=signed.note, on_delivery=self._delivered)
        self._producer.flush(10)

    @staticmethod
    def _delivered(error: object, _message: object) -> None:
        if error is not None:
            log.warning("ledger: publishing a checkpoint failed: %s", error)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)


class LedgerFollower:
    """Appends what the gatekeeper wrote to ``log`` and checkpoints it.

    :param every: checkpoint after this many new leaves.
    :param seconds: ... or this long after the first leaf no checkpoint covers yet.
    :param publish: called with each new checkpoint (the file is written regardless).
    :param clock: POSIX seconds, for the checkpoints' ML-DSA-44 timestamps.
    :param archive: seals the latest checkpoint once a day (``ledger.archive``), if given.
    """

    def __init__(self, settings: Settings, log: TransparencyLog, *, every: int = 1000,
                 seconds: float = 5.0,
                 publish: Callable[[VerifiedCheckpoint], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 archive: DailyArchive | None = None) -> None:
        self.settings = settings
        self.log = log
        self.every, self.seconds = every, seconds
        self._publish = publish
        self.archive = archive
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = 0
        self._since: float | None = None
        #: every logged position and its leaf index (rebuilt from the log's own entries)
        self.positions: dict[Position, int] = {}
        for index, entry in enumerate(log.entries(0, log.size)):
            leaf = LedgerLeaf.decode(entry, f"leaf {index}")
            self.positions[(leaf.topic, leaf.partition, leaf.offset)] = index
        self._seen: set[Position] = set()
        #: what the ledger found wrong with the log, one sentence each
        self.discrepancies: list[str] = []

    # -- the follower's callbacks (its thread) ------------------------------------------------

    def on_record(self, record: VerifiedRecord) -> None:
        leaf = leaf_of(record)
        key = (leaf.topic, leaf.partition, leaf.offset)
        with self._lock:
            self._seen.add(key)
            known = self.positions.get(key)
            if known is not None:
                if self.log.entry(known) != leaf.encode():
                    self._discrepancy(f"{leaf.position} is not the record logged as leaf "
                                      f"{known}: it changed on the broker since")
                return
            self.positions[key] = self.log.append(leaf.encode())
            self._pending += 1
            self._since = self._since or time.monotonic()
            if self._pending >= self.every:
                self._checkpoint()

    def on_quarantine(self, record: Quarantined) -> None:
        key = (record.position.topic, record.position.partition, record.position.offset)
        with self._lock:
            self._seen.add(key)
            known = self.positions.get(key)
        if known is not None:
            self._discrepancy(f"{record.position} was logged as leaf {known} but is now "
                              f"quarantined ({record.code}): altered on the broker since")

    def _discrepancy(self, sentence: str) -> None:
        log.error("ledger: %s", sentence)
        self.discrepancies.append(sentence)

    # -- checkpoints ----------------------------------------------------------------------

    def _checkpoint(self) -> VerifiedCheckpoint:
        """1. sign the checkpoint (the file is the commit point); 2. publish it (witnesses
        may cosign it there); 3. once a day, seal the checkpoint as the file now holds it
        with the archive key. A seal takes about a second and holds the lock: once a day,
        the follower waits that long."""
        signed = self.log.checkpoint(int(self._clock()))
        self._pending, self._since = 0, None
        if self._publish is not None:
            self._publish(signed)
        latest = self.log.latest or signed
        if self.archive is not None and self.archive.due(latest):
            sealed = self.archive.seal(latest)
            log.info("ledger: archive seal of checkpoint %d at %d",
                     latest.checkpoint.size, sealed.sealed_at)
        return signed

    def tick(self) -> VerifiedCheckpoint | None:
        """Checkpoint if leaves have waited ``seconds``; return the new checkpoint."""
        with self._lock:
            if self._pending and self._since is not None and (
                    time.monotonic() - self._since >= self.seconds):
                return self._checkpoint()
        return None

    def flush(self) -> VerifiedCheckpoint | None:
        """Checkpoint now whatever no checkpoint covers yet."""
        with self._lock:
            return self._checkpoint() if self._pending else None

    def missing(self) -> list[str]:
        """Logged records not read back in this run (call once caught up)."""
        with self._lock:
            gone = sorted(set(self.positions) - self._seen)
        return [f"{t}[{p}]@{o} was logged as leaf {self.positions[(t, p, o)]} but is no longer "
                "on the log" for t, p, o in gone]

    # -- the process ----------------------------------------------------------------------

    def run(self, stop: threading.Event, on_caught_up: Callable[[], None] | None = None,
            poll: float = 0.2) -> None:
        """Follow until ``stop`` is set; checkpoint what is left, then return."""
        verifier = deployment_verifier(self.settings, "ledger")
        follower = LogFollower(self.settings, SOURCES, verifier, self.on_record,
                               on_quarantine=self.on_quarantine, name="ledger")
        follower.start()
        caught_up = False
        try:
            while not stop.wait(poll):
                self.tick()
                if not caught_up and follower.wait_caught_up(0):
                    caught_up = True
                    for sentence in self.missing():
                        self._discrepancy(sentence)
                    self.flush()
                    if on_caught_up is not None:
                        on_caught_up()
        finally:
            follower.stop()
            verifier.close()
            self.flush()
