"""Records on the gatekeeper's output topics as it writes them: sealed (for tests that
build a log in memory, or put one on a broker as the admin, instead of running a
gatekeeper worker)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from pcvhub.log.verify import SEALS, RawRecord
from pcvhub.topics import SEAL_HEADER, partition_for, topic_name, topic_spec
from pcvhub.trust.seal import SealBook, SealedFacts, SealHead, SealVerdict, seal_batch
from pcvhub.trust.signing import EventSigner, HybridKeyPair

VERDICT_ON = {"events": SealVerdict.ACCEPTED, "rejected": SealVerdict.REJECTED,
              "alerts": SealVerdict.ALERT}
INGRESS = "pcvhub.ingress.direct"
SEALED_AT_US = 1_767_225_600_000_000  # 2026-01-01: after every test key's valid-from
#: the seals topic of the logs tests build in memory (verifiers read it: ``seals=SEAL_BOOK``)
SEAL_BOOK = SealBook()


class SealSink(Protocol):
    def append(self, head: SealHead) -> int: ...


class KafkaSeals:
    """The seals topic of a real broker, written through ``producer`` (the admin's, in
    tests that put a log there the way the gatekeeper writes it)."""

    def __init__(self, producer: Any, topic_prefix: str) -> None:
        self.producer = producer
        self.topic = topic_name(SEALS, topic_prefix)

    def append(self, head: SealHead) -> int:
        offsets: list[int] = []
        self.producer.produce(self.topic, key=head.signer.encode(), value=head.encode(),
                              partition=0, on_delivery=lambda err, msg: offsets.append(
                                  -1 if err else msg.offset()))
        assert self.producer.flush(30) == 0 and offsets and offsets[0] >= 0, offsets
        return offsets[0]


def gatekeeper_signer() -> EventSigner:
    return EventSigner("hub-gatekeeper", "hub-gatekeeper-k1", HybridKeyPair.generate())


def sealed(signer: EventSigner, records: Sequence[RawRecord], *,
           sealed_at_us: int = SEALED_AT_US, book: SealSink = SEAL_BOOK) -> list[RawRecord]:
    """``records`` sealed in one batch (its head appended to ``book``), each as the answer
    to the ingress record at its own partition and offset of ``INGRESS`` (records off the
    output topics pass unchanged)."""
    outputs = [r for r in records if r.topic in VERDICT_ON]
    if not outputs:
        return list(records)
    facts = [SealedFacts(r.topic, r.partition, r.key, r.value or b"", VERDICT_ON[r.topic],
                         INGRESS, r.partition, r.offset) for r in outputs]
    batch = seal_batch(signer, facts, sealed_at_us)
    seals = dict(zip((r.position for r in outputs), batch.seals(book.append(batch.head)),
                     strict=True))
    return [r if r.position not in seals else
            replace(r, headers=(*r.headers, (SEAL_HEADER, seals[r.position].encode())))
            for r in records]


class SealedWriter:
    """Writes records to a broker's output topics as the gatekeeper does: sealed in
    batches (the head first, on the seals topic), each record to the partition of its key.
    For tests and benchmarks that load a log as the admin instead of running a worker.

    ``write`` buffers; ``flush`` seals what is buffered and waits for Kafka to have it all.
    Each record answers its own made-up position of ``INGRESS`` (a counter per partition).
    """

    def __init__(self, producer: Any, topic_prefix: str, signer: EventSigner, *,
                 batch: int = 500) -> None:
        self.producer, self.prefix, self.signer, self.batch = producer, topic_prefix, signer, batch
        self.seals = KafkaSeals(producer, topic_prefix)
        self._pending: list[RawRecord] = []
        self._ingress: dict[int, int] = {}

    def write(self, suffix: str, key: bytes, value: bytes) -> None:
        partition = partition_for(key, topic_spec(suffix).partitions)
        offset = self._ingress.get(partition, 0)
        self._ingress[partition] = offset + 1
        self._pending.append(RawRecord.at(suffix, partition, offset, key, value))
        if len(self._pending) >= self.batch:
            self._seal()

    def _seal(self) -> None:
        drafts, self._pending = self._pending, []
        if not drafts:
            return
        for record in sealed(self.signer, drafts, book=self.seals):
            while True:
                try:
                    self.producer.produce(topic_name(record.topic, self.prefix),
                                          key=record.key, value=record.value,
                                          partition=record.partition,
                                          headers=list(record.headers))
                    break
                except BufferError:  # the local queue is full: let the broker catch up
                    self.producer.poll(0.1)
            self.producer.poll(0)

    def flush(self, timeout: float = 120) -> None:
        self._seal()
        if self.producer.flush(timeout):
            raise RuntimeError(f"sealed records not acknowledged within {timeout:.0f} s")
