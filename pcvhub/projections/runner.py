"""The projection runner (`pcvhub project`) and the rebuild (`pcvhub projections rebuild`).

The runner reads the canonical, rejected and alerts topics with one confluent-kafka
consumer and writes a DuckDB file, one transaction per batch:

1. On start it opens the file (creating its tables if new), reads the next offset of
   every partition from the file's ``offsets`` table, and the folds and registry keys
   the file already holds. Consumer-group commits are never used: ``assign`` only, so the
   file alone says where the projection stands.
2. It seeks every partition to the stored offset (the beginning if none).
3. Each batch (up to ``batch_size`` records) is projected in memory, then its rows, the
   folds it moved and its new offsets are committed in one DuckDB transaction
   (``ProjectionStore.write``). Only then does the runner's memory move on.
4. Killed at any point, it restarts from the last committed offsets: what the killed
   process had read but not committed is read again; what it had committed is not.

A rebuild is the same loop into a fresh file, stopped once every partition has reached
the end it had when the rebuild started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.partitioner import murmur2
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from pcvhub.config import Settings
from pcvhub.projections.projection import Projection
from pcvhub.projections.projector import CANONICAL, TOPIC_ROLES, LogRecord
from pcvhub.projections.store import ProjectionStore
from pcvhub.schemas.codec import DecodeError, decode_envelope
from pcvhub.schemas.envelope import Envelope
from pcvhub.topics import SOURCE_HEADER, topic_name
from pcvhub.trust.registry import ANCHOR_FILE, REGISTRY_COI, KeyRegistry, load_anchor

log = logging.getLogger(__name__)
CONSUMER_GROUP = "pcvhub-projections"  # required by librdkafka; assign() only, never commits
#: the live projection file, inside the data folder
DEFAULT_FILE = Path("projections") / "hub.duckdb"


class ProjectionError(RuntimeError):
    """The runner cannot go on (a topic is missing, Kafka refuses a read)."""


@dataclass
class RunProgress:
    """What a run has done so far; ``behind`` is how many records it still has to read of
    those on the log when it last looked (``None`` while unknown)."""

    records: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)
    behind: int | None = None

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.records / elapsed if elapsed > 0 else 0.0


def partition_of(key: str, partitions: int) -> int:
    """The partition a key lands in with the murmur2 partitioner all pcvhub producers use."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def load_trust_anchor(settings: Settings) -> tuple[KeyRegistry, bool]:
    """The registry of the deployment's trust anchor, or an empty one if there is none."""
    path = settings.data_dir / ANCHOR_FILE
    if path.exists():
        return load_anchor(path), True
    return KeyRegistry(), False


class RegistryLookahead:
    """Reads the registry chain's partition ahead of the main consumer (see
    ``pcvhub.projections.verification``); remembers how far it read, never rereads."""

    def __init__(self, settings: Settings, topic: str, partition: int) -> None:
        self.settings = settings
        self.topic = topic
        self.partition = partition
        self.cursor = 0
        self._consumer: Consumer | None = None

    def __call__(self, from_offset: int) -> Iterator[Envelope]:
        start = max(self.cursor, from_offset)
        consumer = self._consumer or Consumer(self.settings.librdkafka(**{
            "group.id": CONSUMER_GROUP, "enable.auto.commit": False}))
        self._consumer = consumer
        high = consumer.get_watermark_offsets(TopicPartition(self.topic, self.partition),
                                              timeout=10)[1]
        if start >= high:
            return
        consumer.assign([TopicPartition(self.topic, self.partition, start)])
        key = REGISTRY_COI.encode()
        position = start
        deadline = time.monotonic() + 60
        while position < high:
            if time.monotonic() > deadline:
                raise ProjectionError(
                    f"could not read {self.topic}[{self.partition}] from {position} to {high} "
                    "within 60 s while looking for a signer's key registration")
            for msg in consumer.consume(500, timeout=1.0):
                offset, value = msg.offset(), msg.value()
                if msg.error() or offset is None:
                    continue
                position = offset + 1
                if msg.key() == key and isinstance(value, bytes):
                    try:
                        yield decode_envelope(value)
                    except DecodeError:
                        continue  # the main loop records it as unreadable
        self.cursor = high
        # An assigned consumer long-polls its partition, and every watermark query then
        # waits behind a fetch (about half a second each): stay idle between reads.
        consumer.unassign()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


class ProjectionRunner:
    """Projects this deployment's topics into one DuckDB file.

    :param settings: Kafka and topic prefix; ``data_dir`` holds the trust anchor.
    :param db_path: the projection file (created if missing).
    :param batch_size: records per transaction at most.
    :param poll_timeout: seconds to wait for records before a batch is cut short.
    """

    def __init__(self, settings: Settings, db_path: Path, *, batch_size: int = 2000,
                 poll_timeout: float = 0.5) -> None:
        self.settings = settings
        self.db_path = Path(db_path)
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.topics = {role: topic_name(role, settings.topic_prefix) for role in TOPIC_ROLES}
        self._role = {name: role for role, name in self.topics.items()}

    def run(self, stop: threading.Event | None = None, *, until_end: bool = False,
            on_batch: Callable[[RunProgress], None] | None = None,
            between_batches: Callable[[ProjectionStore], None] | None = None) -> RunProgress:
        """Project until ``stop`` is set (or, with ``until_end``, until the log's end as of
        the start is reached). ``on_batch`` sees the progress after every commit;
        ``between_batches`` may use the open file (e.g. to publish snapshots)."""
        stop = stop or threading.Event()
        client = self.settings.librdkafka(**{"group.id": CONSUMER_GROUP,
                                             "enable.auto.commit": False})
        consumer = Consumer({**client, "auto.offset.reset": "earliest"})
        # Watermarks are asked of a consumer that fetches nothing: the fetching one would
        # answer each query only after its pending long-poll fetch.
        watermarks = Consumer(client)
        lookahead: RegistryLookahead | None = None
        projection: Projection | None = None
        progress = RunProgress()
        try:
            partitions = self._partitions(watermarks)
            registry_partition = partition_of(REGISTRY_COI, partitions[CANONICAL])
            lookahead = RegistryLookahead(self.settings, self.topics[CANONICAL],
                                          registry_partition)
            anchor, anchored = load_trust_anchor(self.settings)
            projection = Projection(self.db_path, self.settings.topic_prefix, anchor, anchored,
                                    registry_partition, lookahead)
            positions = projection.positions
            consumer.assign([
                TopicPartition(self.topics[role], p, positions.get((role, p), OFFSET_BEGINNING))
                for role in TOPIC_ROLES for p in range(partitions[role])])
            ends = self._ends(watermarks, partitions)
            looked_at = time.monotonic()
            progress.behind = self._behind(consumer, ends, positions)
            while not stop.is_set() and not (until_end and progress.behind == 0):
                records = list(self._records(consumer.consume(self.batch_size,
                                                              self.poll_timeout)))
                if records:
                    batch = projection.apply(records)
                    progress.records += batch.records
                    progress.batches += 1
                if not until_end and time.monotonic() - looked_at >= 1.0:
                    ends, looked_at = self._ends(watermarks, partitions), time.monotonic()
                progress.behind = self._behind(consumer, ends, positions)
                if records and on_batch is not None:
                    on_batch(progress)
                if between_batches is not None:
                    between_batches(projection.store)
            return progress
        finally:
            consumer.close()
            watermarks.close()
            if lookahead is not None:
                lookahead.close()
            if projection is not None:
                projection.close()

    # -- Kafka plumbing ---------------------------------------------------------------

    def _partitions(self, consumer: Consumer) -> dict[str, int]:
        found: dict[str, int] = {}
        for role, name in self.topics.items():
            metadata = consumer.list_topics(name, timeout=10).topics.get(name)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise ProjectionError(
                    f"topic {name} ({role}) does not exist on {self.settings.bootstrap_servers};"
                    " create the topics with `pcvhub infra up` (or check PCVHUB_TOPIC_PREFIX)")
            found[role] = len(metadata.partitions)
        return found

    def _ends(self, consumer: Consumer, partitions: dict[str, int]) -> dict[tuple[str, int], int]:
        return {(role, p): consumer.get_watermark_offsets(
                    TopicPartition(self.topics[role], p), timeout=10)[1]
                for role in TOPIC_ROLES for p in range(partitions[role])}

    def _behind(self, consumer: Consumer, ends: dict[tuple[str, int], int],
                positions: dict[tuple[str, int], int]) -> int:
        """Records between what is committed (or, past control records, fetched) and
        ``ends``."""
        fetched = {(self._role[tp.topic], tp.partition): tp.offset
                   for tp in consumer.position(consumer.assignment()) if tp.offset >= 0}
        return sum(max(end - max(positions.get(tp, 0), fetched.get(tp, 0)), 0)
                   for tp, end in ends.items())

    def _records(self, messages: Iterable[Message]) -> Iterator[LogRecord]:
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise ProjectionError(f"reading {msg.topic()}[{msg.partition()}]: "
                                          f"{error.str()}")
                if error.code() != KafkaError._PARTITION_EOF:  # librdkafka retries the rest
                    log.warning("reading %s[%s]: %s", msg.topic(), msg.partition(), error.str())
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is None or partition is None or offset is None:
                raise ProjectionError(f"a record without topic, partition or offset: {msg}")
            headers = msg.headers() or []
            pairs = headers.items() if isinstance(headers, dict) else headers
            source = next((_text(v) for k, v in pairs if k == SOURCE_HEADER), None)
            yield LogRecord(self._role[topic], partition, offset, _bytes(msg.key()),
                            _bytes(msg.value()), source)


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _text(value: str | bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def rebuild(settings: Settings, out: Path, *, batch_size: int = 2000,
            on_batch: Callable[[RunProgress], None] | None = None) -> RunProgress:
    """Replay the log from the start into a fresh file ``out`` (which must not exist),
    up to the end every partition had when the rebuild started."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; a rebuild writes a fresh file: choose a new "
                              "path or remove it first")
    runner = ProjectionRunner(settings, out, batch_size=batch_size)
    return runner.run(until_end=True, on_batch=on_batch)
