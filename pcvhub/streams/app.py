"""The gatekeeper as a Faust worker (`pcvhub worker`), effectively-once without Faust's EOS.

Faust's ``exactly_once`` guarantee has open duplicate bugs upstream, so this worker does
not use it. Instead the outputs are the checkpoint:

1. Every ingress record is answered by exactly one primary record (canonical or
   rejected) in the *same partition number*, carrying the ingress position in its seal.
2. Before it judges the first record of a partition, the worker folds that partition (and
   every other partition it owns that has none yet, in the same pass) of the canonical,
   rejected and alerts topics into a ``PartitionLedger``: the therapies'
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
7. A timer sweeps every owned partition on processing time (``pcvhub.clock``) and raises
   the alerts of passed deadlines, for therapies that receive no event at all.
8. Everything one send step writes is sealed in one batch (``Gatekeeper.seal``): the agent
   takes what the stream has ready (``take_events``, waiting at most ``SEAL_WAIT_SECONDS``
   for a first record, never for a batch to fill), judges it, seals all its outputs with
   one hybrid signature, writes that signed head to the seals topic and waits for Kafka's
   acknowledgement (a reader never meets a record whose head is not on the log yet), then
   sends the outputs, each naming the head's offset. Under load the batch grows by itself
   with the records that arrive while the last one is signed, so the post-quantum
   signature is paid once per step; an idle gatekeeper seals each record alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust

from pcvhub.config import Settings
from pcvhub.log.reader import deployment_verifier, read_verified
from pcvhub.log.verify import ALERTS, CANONICAL, REJECTED, VerifiedRecord
from pcvhub.schemas.codec import DecodeError
from pcvhub.streams.event import SourcePosition
from pcvhub.streams.gatekeeper import Gatekeeper, Output, PartitionLedger
from pcvhub.topics import TOPICS, TopicRole, topic_name
from pcvhub.trust.checks import SignatureChecks

log = logging.getLogger(__name__)

#: the most ingress records one send step judges and seals together
SEAL_BATCH_MAX = 500
#: how long a send step waits for records to be ready before it seals what it has: well
#: under the producer's linger, so sealing adds no latency a record would notice
SEAL_WAIT_SECONDS = 0.001
#: records whose signatures are checked ahead together (Step 0)
CHECK_CHUNK = 64
#: aiokafka's timestamp type of a record stamped by the broker (LogAppendTime)
_LOG_APPEND_TIME = 1


def rebuild_ledgers(settings: Settings, gatekeeper: Gatekeeper, partitions: list[int]
                    ) -> dict[int, PartitionLedger]:
    """Fold those partitions of the outputs into fresh ledgers, in one pass.

    Every record is admitted by the one log reader first, with a registry of its own folded
    from the trust anchor: a record some other writer put on an output topic (a forged
    registration, a refusal that would mark an ingress position answered) is quarantined
    and reported, and the ingress record it would have hidden is judged again. All the
    partitions a worker was given are read together: one reader per output topic, where
    one per partition paid its consumers' sign-in six times over.
    """
    verifier = deployment_verifier(settings, "gatekeeper ledger rebuild of partition(s) "
                                             f"{', '.join(map(str, partitions))}")
    ledgers = {partition: PartitionLedger(partition) for partition in partitions}
    # Alerts first: an alert was on its topic before any acknowledgement naming it was
    # accepted, and the case fold of that acknowledgement needs to know the alert.
    replay = {ALERTS: gatekeeper.replay_alert, CANONICAL: gatekeeper.replay_accepted,
              REJECTED: gatekeeper.replay_rejected}
    try:
        for suffix, fold in replay.items():
            for outcome in read_verified(settings, suffix, verifier, partitions):
                if isinstance(outcome, VerifiedRecord):
                    fold(outcome.event, ledgers[outcome.position.partition])
    finally:
        verifier.close()
    if verifier.report.quarantined:
        log.warning("partition(s) %s: %d record(s) of the outputs quarantined, not folded: %s",
                    partitions, verifier.report.quarantined, dict(verifier.report.by_code))
    return ledgers


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
             for suffix in ("events", "rejected", "alerts", "seals")}
    ledgers: dict[int, PartitionLedger] = {}
    owned: set[int] = set()  # ingress partitions assigned to this worker
    loop_lock = asyncio.Lock()
    checks = SignatureChecks(settings.verify_workers)

    async def ledger_for(partition: int) -> PartitionLedger:
        async with loop_lock:
            if partition not in ledgers:
                # every owned partition still without a ledger comes along: one pass
                missing = sorted({partition} | (owned - ledgers.keys()))
                loop = asyncio.get_running_loop()
                rebuilt = await loop.run_in_executor(
                    None, rebuild_ledgers, settings, gatekeeper, missing)
                ledgers.update({p: ledger for p, ledger in rebuilt.items()
                                if p == partition or p in owned})
            return ledgers[partition]

    async def send(output: Output) -> Any:
        return await sinks[output.topic].send(
            key=output.key, value=output.value, partition=output.partition,
            headers=output.headers)

    async def sealed(outputs: list[Output]) -> list[Output]:
        # Step 8a. One hybrid signature over everything this step writes.
        batch = gatekeeper.seal(outputs)
        # Step 8b. The signed head is on the log, acknowledged, before anything it seals.
        written = await (await sinks["seals"].send(
            key=gatekeeper.issuer.signer.producer.encode(), value=batch.head, partition=0))
        # Step 8c. Each output names where its head stands.
        return batch.at(written.offset)

    @app.agent(ingress)
    async def gate(stream: faust.StreamT) -> None:
        # Step 8. One send step per batch of ready records; Faust acks them after it.
        # (``take_events`` is on faust's Stream, which every agent gets, not on StreamT.)
        batches = cast(faust.Stream, stream).take_events(SEAL_BATCH_MAX,
                                                         within=SEAL_WAIT_SECONDS)
        async for events in batches:
            # Step 0. Decode the batch once. With a check pool (verify_workers > 0; off
            # by default, see pcvhub.trust.checks) its signatures are checked on other
            # cores a chunk ahead: while chunk i is judged here, chunk i+1 is checked, and
            # judging in order asks the same questions and finds them answered.
            decoded = [gatekeeper.decoded(event.value) for event in events]
            envelopes = [None if isinstance(d, DecodeError) else d.envelope for d in decoded]
            ahead = asyncio.ensure_future(checks.ahead(envelopes[:CHECK_CHUNK],
                                                       gatekeeper.registry))
            alerts: list[Output] = []
            primaries: list[Output] = []
            for start in range(0, len(events), CHECK_CHUNK):
                await ahead
                following = envelopes[start + CHECK_CHUNK:start + 2 * CHECK_CHUNK]
                if following:
                    ahead = asyncio.ensure_future(checks.ahead(following, gatekeeper.registry))
                for event, inbound in zip(events[start:start + CHECK_CHUNK],
                                          decoded[start:start + CHECK_CHUNK], strict=True):
                    msg = event.message
                    appended = (round(msg.timestamp * 1_000) * 1_000
                                if msg.timestamp_type == _LOG_APPEND_TIME else None)
                    source = SourcePosition(msg.topic, msg.partition, msg.offset, appended)
                    # Step 2. The partition's ledger, folded from its outputs on first use.
                    ledger = await ledger_for(msg.partition)
                    # Step 3. A record redelivered after a crash is already answered on
                    # the log.
                    if ledger.has_answered(source):
                        continue
                    # Step 1. Judge: exactly one primary record (canonical or rejected)
                    # answers it, carrying its ingress position; alerts come first.
                    *raised, primary = gatekeeper.judge(event.value, event.key, source,
                                                        ledger, inbound)
                    alerts += raised
                    primaries.append(primary)
            if not primaries:
                continue
            # Step 8. One seal over everything this step writes.
            outputs = await sealed([*alerts, *primaries])
            # Step 4. Every alert is acknowledged by Kafka before any primary is sent.
            for pending in [await send(alert) for alert in outputs[:len(alerts)]]:
                await pending
            # Step 5. One idempotent producer per partition writes the primaries, in order.
            for primary in outputs[len(alerts):]:
                await send(primary)

    # Step 7. Timers on processing time (the gatekeeper's clock, ``pcvhub.clock``): every
    # sweep interval, each owned partition's open therapies are checked for passed
    # deadlines and their alerts raised, with no event needed. Alert ids are deterministic
    # and the ledger holds those already on the log, so a sweep after a crash (or after
    # another worker's) raises nothing twice.

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        owned.update(tp.partition for tp in assigned if tp.topic in ingress_names)

    @app.timer(interval=settings.timer_sweep_seconds)
    async def sweep() -> None:
        for partition in sorted(owned):
            ledger = await ledger_for(partition)
            if partition not in owned:
                continue  # revoked while its ledger was being rebuilt
            raised = gatekeeper.sweep(ledger, gatekeeper.clock.now_us())
            if raised:
                for alert in await sealed(raised):  # Step 8: one seal per sweep
                    await (await send(alert))

    @app.on_before_shutdown.connect
    async def on_shutdown(app: faust.App, **kwargs: Any) -> None:
        checks.close()

    # Step 6. On revocation Faust has already waited for the agent and flushed the
    # producer; the ledger is dropped and the next owner rebuilds it from the log.
    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        for tp in revoked:
            ledgers.pop(tp.partition, None)
            owned.discard(tp.partition)

    return app
