"""Projection rebuild rate and audit query latency.

1. A log is built once into a sandbox's canonical topic: the registry, then whole valid
   therapies sharing one cast (about 47 events each), signed in Merkle batches of 64 per
   actor (signing each of a million events on its own would take the better part of an
   hour), written straight to the topic as the gatekeeper writes it (sealed in batches of
   500: one signed head on the seals topic per batch). Its build time is reported.
2. Baseline: a raw confluent-kafka consumer reads the same topic from the beginning to
   its end, touching every value, in the same run.
3. Rebuild: ``pcvhub.projections.runner.rebuild`` replays the topic into a fresh DuckDB
   file (decode, re-verify both signatures and the Merkle path, fold, write in
   transactions with the offsets). Rate and ratio to the baseline.
4. The same two on a small log of individually signed events, where re-verifying
   ML-DSA-65 on every event dominates; then, on that log, the rebuild by a witnessed
   ledger checkpoint (the ledger's follower logs the log in process, two witness keys
   cosign its checkpoint) beside the rebuild by every record's signatures.
5. Audit latency: ``SELECT * FROM audit(coi)`` for random therapies of the big file,
   opened read-only as an analyst would; p50 and p95.

``--quick`` uses 20,000 events instead of 1,000,000; ``--scale 10M`` (``python -m bench``)
builds ten million, once it has checked the broker's disk can hold them. The sandbox
topics are deleted at the end (a million events are about 3.6 GB on the broker).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import duckdb
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console

from bench.profile import sampled
from bench.report import Figure
from pcvhub.config import load_settings
from pcvhub.demo.therapy import DAY_US, T0_US, Hub, TherapyScenario
from pcvhub.infra.kafka import LocalKafka
from pcvhub.ledger.cosign import WitnessKey, WitnessKeys
from pcvhub.ledger.follow import LedgerFollower
from pcvhub.ledger.log import TransparencyLog
from pcvhub.ledger.note import LogKeys, VerifiedCheckpoint
from pcvhub.ledger.trusted import CheckpointTrust
from pcvhub.ledger.witnessing import WitnessPolicy
from pcvhub.projections.runner import RunProgress, rebuild
from pcvhub.projections.store import connect
from pcvhub.streams.sandbox import Sandbox
from pcvhub.topics import TOPICS, Principal, topic_name
from pcvhub.trust import signing
from pcvhub.trust.signing import EventSigner
from tests.unit.sealing import SealedWriter
from tests.unit.test_projection_scenario import signed_cohort

BIG_LOG = 1_000_000
QUICK_LOG = 20_000
SINGLE_LOG = 10_000  # individually signed events
CHUNK = 20_000  # events generated and written at a time (bounded memory)
AUDIT_QUERIES = 200
console = Console()


def _sandbox(root: Path, name: str) -> tuple[Sandbox, Hub, EventSigner]:
    settings = load_settings()
    kafka = LocalKafka(settings)
    kafka.up()
    sandbox = Sandbox.create(settings, kafka.bootstrap_servers, root / name)
    builder = Hub()
    gatekeeper = sandbox.install_identities(builder.registrar.issuer.signer,
                                            valid_from_us=T0_US - 365 * DAY_US)
    builder.register_gatekeeper(gatekeeper)
    return sandbox, builder, gatekeeper


def _write(writer: SealedWriter, records: list[tuple[bytes, bytes]]) -> None:
    for key, value in records:
        writer.write("events", key, value)
    writer.flush(120)


def build_batched_log(sandbox: Sandbox, builder: Hub, gatekeeper: EventSigner, events: int
                      ) -> tuple[int, float]:
    """Registry plus ``events`` batch-signed therapy events; (records, seconds)."""
    started = time.perf_counter()
    cast = builder.register_cast("bench")
    # the log is written as the operator would load it: the admin, not a gatekeeper
    producer = Producer(sandbox.admin.producer(**{"linger.ms": 20,
                                                     "queue.buffering.max.kbytes": 262144}))
    writer = SealedWriter(producer, sandbox.settings.topic_prefix, gatekeeper)
    _write(writer, [(e.coi.encode(), e.raw) for e in builder.registry_log])
    registered, therapy_events = len(builder.registry_log), 0
    while therapy_events < events:
        chunk = signed_cohort(builder, cast, min(CHUNK, events - therapy_events),
                              seed=therapy_events)
        # the chunk's patients were registered while it was drafted: their registrations
        # go on the log before anything they sign
        fresh = builder.registry_log[registered:]
        _write(writer, [(e.coi.encode(), e.raw) for e in fresh])
        registered += len(fresh)
        _write(writer, [(e.key, e.wire) for e in chunk])
        therapy_events += len(chunk)
        written = registered + therapy_events
        console.print(f"  log: {written:,} records written "
                      f"({time.perf_counter() - started:,.0f}s)", highlight=False)
    return written, time.perf_counter() - started


def build_single_log(sandbox: Sandbox, builder: Hub, gatekeeper: EventSigner, events: int
                     ) -> int:
    cast = builder.register_cast("single")
    therapies: list[tuple[bytes, bytes]] = []
    while len(builder.registry_log) + len(therapies) < events:
        therapies += [(e.coi.encode(), e.raw) for e in TherapyScenario(
            builder, cast=cast, patient_hash=f"{len(therapies):064x}").full_therapy()]
    # every registration (the patients' too, made while drafting) before what they sign
    records = [(e.coi.encode(), e.raw) for e in builder.registry_log] + therapies
    producer = Producer(sandbox.admin.producer(**{"linger.ms": 20}))
    _write(SealedWriter(producer, sandbox.settings.topic_prefix, gatekeeper), records)
    return len(records)


def raw_consume(sandbox: Sandbox) -> int:
    """Read the canonical topic from the start to its end with a bare consumer."""
    topic = topic_name("events", sandbox.settings.topic_prefix)
    # the projection runner's principal and listener: the same TLS and ACL checks
    consumer = Consumer(sandbox.settings.as_principal(Principal.PROJECTIONS).librdkafka(**{
        "group.id": "bench-raw", "enable.auto.commit": False}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending = {p for p, end in ends.items() if end > 0}
        count = 0
        while pending:
            for msg in consumer.consume(2000, timeout=1.0):
                if msg.error():
                    continue
                count += len(msg.value() or b"") > 0
                if msg.offset() >= ends[msg.partition()] - 1:
                    pending.discard(msg.partition())
        return count
    finally:
        consumer.close()


def witnessed_ledger(sandbox: Sandbox, folder: Path) -> CheckpointTrust:
    """The sandbox's outputs logged by the ledger's own follower (in process, as `pcvhub
    ledger run` does: every record verified by the one log reader), one checkpoint
    cosigned by two witness keys (the witness protocol is not what is measured here)."""
    keys = LogKeys.generate("ledger.bench.example/projections")
    witnesses = [WitnessKeys.generate(f"{name}.bench.example/witness")
                 for name in ("manufacturer", "payer")]
    stop = threading.Event()
    with TransparencyLog(folder, keys) as log:
        follower = LedgerFollower(sandbox.settings.as_principal(Principal.LEDGER), log,
                                  every=10**9, seconds=3600)
        follower.run(stop, on_caught_up=stop.set)
        signed = log.latest
        assert signed is not None, "the ledger logged nothing"
        note = signed.note + b"".join(w.cosign(signed.checkpoint, signed.timestamp)
                                      for w in witnesses)
        log.attach_cosignatures(VerifiedCheckpoint(signed.checkpoint, signed.timestamp, note))
    policy = WitnessPolicy(tuple(WitnessKey(w.name, w.ed25519_vkey, w.ml_dsa_44_vkey)
                                 for w in witnesses), quorum=2)
    return CheckpointTrust.load(folder / "tiles", keys.ed25519_vkey, keys.ml_dsa_44_vkey,
                                policy)


def timed_rebuild(sandbox: Sandbox, out: Path, verify_workers: int | None = None,
                  checkpoint: CheckpointTrust | None = None) -> float:
    """Events per second of a rebuild into ``out`` (start-up included), its signatures
    checked ahead by ``verify_workers`` processes (None: as the settings say; 0: inline),
    or taken on ``checkpoint``'s word where it covers them."""
    settings = sandbox.settings if verify_workers is None else replace(
        sandbox.settings, verify_workers=verify_workers)
    reported = [time.monotonic()]

    def progress(p: RunProgress) -> None:
        if time.monotonic() - reported[0] >= 15:
            reported[0] = time.monotonic()
            console.print(f"  rebuild: {p.records:,} records ({p.rate:,.0f}/s), "
                          f"{p.behind:,} behind", highlight=False)

    # each rebuild pays for every signature it checks: the memo of checks already done
    # (pcvhub.trust.signing) would otherwise answer a repeat from the run before
    signing.forget_checks()
    with sampled(os.getpid(), f"rebuild-{out.stem}"):
        started = time.perf_counter()
        done = rebuild(settings, out, on_batch=progress, checkpoint=checkpoint)
        rate = done.records / (time.perf_counter() - started)
    if checkpoint is not None and not done.by_checkpoint:
        raise RuntimeError(f"the rebuild into {out} took no record on the checkpoint's word")
    # a rate of quarantining is no rebuild rate: every record must have been admitted
    con = connect(out, read_only=True)
    try:
        refused = con.execute("SELECT count(*) FROM log.envelopes "
                              "WHERE signature_check <> 'VERIFIED'").fetchone()
    finally:
        con.close()
    if refused is None or refused[0]:
        raise RuntimeError(f"the rebuild into {out} quarantined {refused} record(s); "
                           "the bench's log is not what a gatekeeper writes")
    return rate


def rate_pair(sandbox: Sandbox, root: Path, repeats: int) -> tuple[float, float]:
    """(raw consumer events/s, rebuild events/s): medians of ``repeats`` runs each."""
    raw = []
    for _ in range(repeats):
        started = time.perf_counter()
        count = raw_consume(sandbox)
        raw.append(count / (time.perf_counter() - started))
    rebuilt = []
    for n in range(repeats):
        out = root / f"rebuild-{sandbox.settings.topic_prefix}-{n}.duckdb"
        rebuilt.append(timed_rebuild(sandbox, out))
        if n < repeats - 1:
            out.unlink()
    return statistics.median(raw), statistics.median(rebuilt)


def audit_latency(db: Path, queries: int) -> tuple[float, float, int]:
    """(p50 ms, p95 ms, rows of the largest answer) of audit(coi) for random therapies."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        cois = [row[0] for row in con.execute(
            "SELECT coi FROM log.therapy_progress WHERE coi <> 'pcvhub:registry'").fetchall()]
        rng = random.Random(1)
        con.execute("SELECT * FROM audit(?)", [cois[0]]).fetchall()  # warm the catalog
        latencies, largest = [], 0
        for coi in rng.sample(cois, min(queries, len(cois))):
            started = time.perf_counter()
            rows = con.execute("SELECT * FROM audit(?)", [coi]).fetchall()
            latencies.append((time.perf_counter() - started) * 1000)
            largest = max(largest, len(rows))
        cuts = statistics.quantiles(latencies, n=100)
        return cuts[49], cuts[94], largest
    finally:
        con.close()


def _drop_topics(sandbox: Sandbox) -> None:
    admin = AdminClient(sandbox.admin.librdkafka())
    names = [spec.name(sandbox.settings.topic_prefix) for spec in TOPICS]
    for future in admin.delete_topics(names, operation_timeout=60).values():
        try:
            future.result()
        except Exception as exc:  # a topic that is already gone is fine
            console.print(f"  (could not delete a bench topic: {exc})")


#: bytes a batch-signed event takes on the broker (measured: a million are about 3.6 GB),
#: and the head room a log build wants beside it
BYTES_PER_EVENT = 3_600
HEADROOM = 1.5


def check_disk(events: int, where: Path) -> None:
    """Refuse a log build the broker's disk cannot hold, before spending an hour on it."""
    need = events * BYTES_PER_EVENT * HEADROOM
    free = shutil.disk_usage(where).free
    if free < need:
        raise SystemExit(f"a log of {events:,} events needs about {need / 1e9:,.0f} GB free "
                         f"beside the broker's data in {where}; {free / 1e9:,.0f} GB are")


def run(quick: bool = False, scale: int | None = None) -> list[Figure]:
    """:param scale: events in the big log (``python -m bench --scale 10M``); default 1M,
        or 20,000 with ``quick``."""
    events = scale or (QUICK_LOG if quick else BIG_LOG)
    check_disk(events, load_settings().data_dir.resolve())
    single = SINGLE_LOG // 5 if quick else SINGLE_LOG
    repeats = 3 if quick else 1  # a million-event rebuild takes minutes
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="pcvhub-bench-projections-") as tmp:
        root = Path(tmp)
        big, builder, big_gatekeeper = _sandbox(root, "big")
        small, small_builder, small_gatekeeper = _sandbox(root, "single")
        try:
            console.print(f"  building a log of {events:,} batch-signed events ...")
            records, build_seconds = build_batched_log(big, builder, big_gatekeeper, events)
            figures.append(Figure("projections", f"log build: {records:,} events, batch-signed "
                                  "(generate, sign, write)", build_seconds, "s"))
            raw, rebuilt = rate_pair(big, root, repeats)
            name = "raw confluent-kafka consumer"
            figures.append(Figure("projections", f"{name} ({records:,} events)", raw,
                                  "events/s"))
            figures.append(Figure("projections", "rebuild, batch-signed events", rebuilt,
                                  "events/s", name, raw))
            db = root / f"rebuild-{big.settings.topic_prefix}-{repeats - 1}.duckdb"
            p50, p95, largest = audit_latency(db, AUDIT_QUERIES)
            figures.append(Figure("projections", f"audit(coi) p50 on {records:,} events",
                                  p50, "ms"))
            figures.append(Figure("projections", f"audit(coi) p95 on {records:,} events "
                                  f"(<= {largest} rows each)", p95, "ms"))
            console.print(f"  building a log of {single:,} individually signed events ...")
            single_records = build_single_log(small, small_builder, small_gatekeeper, single)
            raw, rebuilt = rate_pair(small, root, 3)
            pooled = statistics.median(
                timed_rebuild(small, root / f"pooled-{n}.duckdb", verify_workers=os.cpu_count())
                for n in range(3))
            figures.append(Figure("projections", f"{name} ({single_records:,} events)", raw,
                                  "events/s"))
            figures.append(Figure("projections", "rebuild, individually signed events",
                                  rebuilt, "events/s", name, raw))
            figures.append(Figure("projections", "rebuild, individually signed, signatures "
                                  f"checked ahead by {os.cpu_count()} processes", pooled,
                                  "events/s", "the same, checked inline (the default)",
                                  rebuilt))
            console.print("  logging it in a ledger, cosigned by two witnesses ...")
            trust = witnessed_ledger(small, root / "ledger")
            by_checkpoint = statistics.median(
                timed_rebuild(small, root / f"by-checkpoint-{n}.duckdb", checkpoint=trust)
                for n in range(3))
            figures.append(Figure("projections", "rebuild, individually signed, by a "
                                  "witnessed ledger checkpoint (registry chain by signatures)",
                                  by_checkpoint, "events/s",
                                  "the same, by every record's signatures", rebuilt))
        finally:
            _drop_topics(big)
            _drop_topics(small)
    return figures


if __name__ == "__main__":  # python -m bench.projections [--quick]
    import sys

    from bench.report import print_figures

    print_figures(run(quick="--quick" in sys.argv), console)
