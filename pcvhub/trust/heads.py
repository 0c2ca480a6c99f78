"""Chain heads: the digest of the last accepted event of each therapy, read from the log.

R3 makes every event name the chain digest of the previous *accepted* event of its
therapy. A producer that is one of several writers of a therapy (a connector, a partner
system) follows the canonical topic with a ``ChainHeads`` to learn the current head, and
can wait until its own event has been accepted before it issues the next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pcvhub.config import Settings
from pcvhub.schemas.codec import decode_envelope
from pcvhub.schemas.envelope import Envelope
from pcvhub.topics import topic_name
from pcvhub.trust.canonical import chain_digest


class ChainHeads:
    """Follows the canonical topic in a background thread; thread-safe lookups."""

    def __init__(self, settings: Settings,
                 on_accepted: Callable[[Envelope], None] | None = None,
                 partitions: Iterable[int] | None = None, topic: str = "events") -> None:
        """``on_accepted`` is called (in the follower thread, in log order per partition)
        with every envelope read from the topic; ``partitions`` limits the following to
        those partitions (default: all). ``topic`` is a suffix of the topic table: the
        canonical log by default; a producer may follow ``rejected`` the same way to learn
        which of its events were refused."""
        self.settings = settings
        self._only = None if partitions is None else set(partitions)
        self._on_accepted = on_accepted
        self._caught_up = threading.Event()
        self.topic = topic_name(topic, settings.topic_prefix)
        self._heads: dict[str, bytes] = {}
        self._accepted: set[str] = set()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ChainHeads:
        self._thread = threading.Thread(target=self._follow, name="chain-heads", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ChainHeads:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _follow(self) -> None:
        consumer = Consumer(self.settings.librdkafka(**{
            "group.id": "pcvhub-chain-heads",  # assign() only: never joins or commits
            "enable.auto.commit": False,
        }))
        try:
            metadata = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            partitions = sorted(p for p in metadata.partitions
                                if self._only is None or p in self._only)
            # The end of each partition when we started: past it, we have caught up.
            ends = {p: consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                      timeout=10)[1] for p in partitions}
            behind = {p for p, end in ends.items() if end > 0}
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            if not behind:
                self._caught_up.set()
            while not self._stop.is_set():
                batch = consumer.consume(500, timeout=0.2)
                if not batch:
                    continue
                with self._changed:
                    for msg in batch:
                        if msg.error():
                            continue
                        envelope = decode_envelope(msg.value())
                        self._heads[envelope.coi] = chain_digest(envelope)
                        self._accepted.add(envelope.event_id)
                        if self._on_accepted is not None:
                            self._on_accepted(envelope)
                        if msg.partition() in behind and msg.offset() >= ends[msg.partition()] - 1:
                            behind.discard(msg.partition())
                            if not behind:
                                self._caught_up.set()
                    self._changed.notify_all()
        finally:
            consumer.close()

    def wait_caught_up(self, timeout: float) -> bool:
        """Block until everything on the log when we started has been read."""
        return self._caught_up.wait(timeout)

    def head(self, coi: str) -> bytes:
        """Digest of the last accepted event of ``coi`` (b"" if none yet)."""
        with self._changed:
            return self._heads.get(coi, b"")

    def is_accepted(self, event_id: str) -> bool:
        with self._changed:
            return event_id in self._accepted

    def wait_accepted(self, event_ids: Iterable[str], timeout: float) -> set[str]:
        """Wait until every id is on the canonical log; return those still missing."""
        wanted = set(event_ids)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                missing = wanted - self._accepted
                remaining = deadline - time.monotonic()
                if not missing or remaining <= 0:
                    return missing
                self._changed.wait(remaining)
