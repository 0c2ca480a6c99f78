"""The gatekeeper as a Faust worker (`pcvhub worker`), effectively-once without Faust's EOS.

Faust's ``exactly_once`` guarantee has open duplicate bugs upstream, so this worker does
not use it. Instead the outputs are the checkpoint:

1. Every ingress record is answered by exactly one primary record (canonical or
   rejected) in the *same partition number*, carrying the ingress position in a header.
2. Before it judges the first record of a partition, the worker folds that partition of
   the canonical, rejected and alerts topics into a ``PartitionLedger``: the therapies'
   case state, the ingress positions already answered and the alert ids already raised.
   The log is the truth; the ledger is rebuilt from it, never trusted from memory.
3. Records redelivered after a crash (Faust commits offsets after the fact) are found
   in the ledger and skipped; a genuinely repeated event id at a new position is refused
   by R8 as a duplicate.
4. Alerts are awaited before the primary record is sent: if the worker dies between the
   two, the replay raises the same deterministic alert id, which the ledger drops.
5. Within one partition, the canonical topic is written by one idempotent producer, so
   what reached it is a prefix of what was sent: the hash chain on the log never skips.
6. On revocation the producer is flushed and the partition's ledger dropped; the next
   owner rebuilds it from the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import faust
from confluent_kafka import Consumer, TopicPartition

from pcvhub.config import Settings
from pcvhub.streams.event import SourcePosition
from pcvhub.streams.gatekeeper import Gatekeeper, Output, PartitionLedger
from pcvhub.topics import SOURCE_HEADER, TOPICS, TopicRole, topic_name

log = logging.getLogger(__name__)


def _source_of(headers: Iterable[tuple[str, bytes]] | None) -> SourcePosition | None:
    for name, value in headers or ():
        if name == SOURCE_HEADER:
            return SourcePosition.from_header(value)
    return None


def read_partition(settings: Settings, topic: str, partition: int) -> list[Any]:
    """Every record of one partition, from the beginning to the current end."""
    consumer = Consumer(settings.librdkafka(**{
        "group.id": "pcvhub-gatekeeper-ledger",  # never commits: only assign() is used
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
    }))
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high <= low:
            return []
        consumer.assign([TopicPartition(topic, partition, low)])
        records: list[Any] = []
        while True:
            batch = consumer.consume(1000, timeout=1.0)
            for msg in batch:
                if msg.error():
                    if msg.error().code() == -191:  # _PARTITION_EOF
                        return records
                    raise RuntimeError(f"reading {topic}[{partition}]: {msg.error().str()}")
                records.append(msg)
                if msg.offset() >= high - 1:
                    return records
    finally:
        consumer.close()


def rebuild_ledger(settings: Settings, gatekeeper: Gatekeeper, partition: int) -> PartitionLedger:
    """Fold partition ``partition`` of the outputs into a fresh ledger."""
    prefix = settings.topic_prefix
    ledger = PartitionLedger(partition)
    for msg in read_partition(settings, topic_name("events", prefix), partition):
        gatekeeper.replay_accepted(msg.value(), _source_of(msg.headers()), ledger)
    for msg in read_partition(settings, topic_name("rejected", prefix), partition):
        gatekeeper.replay_rejected(_source_of(msg.headers()), ledger)
    for msg in read_partition(settings, topic_name("alerts", prefix), partition):
        gatekeeper.replay_alert(msg.value(), ledger)
    return ledger


def build_app(settings: Settings, gatekeeper: Gatekeeper, app_id: str = "pcvhub-gatekeeper"
              ) -> faust.App:
    """The Faust app: one agent over every ingress topic, outputs per the module's steps."""
    prefix = settings.topic_prefix
    replication = 1 if "," not in settings.bootstrap_servers else 3
    app = faust.App(
        app_id,
        broker=settings.faust_broker(),
        broker_credentials=settings.faust_security(),
        store="memory://",
        web_enabled=False,
        topic_replication_factor=replication,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Batch output records for a few ms: with no linger each record is its own request
        # and the idempotent producer's in-flight limit caps the worker near 600 records/s.
        producer_linger=0.005,
        broker_commit_interval=1.0,
    )
    ingress_names = [s.name(prefix) for s in TOPICS if s.role is TopicRole.INGRESS]
    ingress = app.topic(*ingress_names, key_serializer="raw", value_serializer="raw")
    sinks = {suffix: app.topic(topic_name(suffix, prefix), key_serializer="raw",
                               value_serializer="raw")
             for suffix in ("events", "rejected", "alerts")}
    ledgers: dict[int, PartitionLedger] = {}
    loop_lock = asyncio.Lock()

    async def ledger_for(partition: int) -> PartitionLedger:
        async with loop_lock:
            if partition not in ledgers:
                loop = asyncio.get_running_loop()
                ledgers[partition] = await loop.run_in_executor(
                    None, rebuild_ledger, settings, gatekeeper, partition)
            return ledgers[partition]

    async def send(output: Output) -> Any:
        return await sinks[output.topic].send(
            key=output.key, value=output.value, partition=output.partition,
            headers=output.headers)

    @app.agent(ingress)
    async def gate(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            source = SourcePosition(msg.topic, msg.partition, msg.offset)
            ledger = await ledger_for(msg.partition)
            if ledger.has_answered(source):
                continue  # redelivered after a crash: already answered on the log
            outputs = gatekeeper.judge(event.value, event.key, source, ledger)
            *alerts, primary = outputs
            for alert in alerts:
                await (await send(alert))  # the alert is on the log before its primary
            await send(primary)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        # Faust has already waited for the agent and flushed the producer (step 6).
        for tp in revoked:
            ledgers.pop(tp.partition, None)

    return app
