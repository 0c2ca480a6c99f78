"""Gatekeeper end to end: ingress -> verified, rule-checked -> canonical topic.

Baseline: the unsigned pass-through Faust agent (``bench/passthrough.py``) on the same
broker in the same run, fed the same records. Both are measured after a warm-up record
has gone through, so worker start-up is not counted. Latency: a steady 500 events/s
for ``LATENCY_SECONDS``; per event, time from the producer's acknowledgement-free send
to its arrival on the canonical topic, read by a consumer in this process, and the part
of it inside the gatekeeper: from the broker's append time of the ingress record (carried
in the seal) to the create time of the canonical record the gatekeeper sent.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer

from bench.profile import sampled
from bench.report import Figure, median_rate
from pcvhub.config import load_settings
from pcvhub.demo.therapy import Hub, TherapyScenario
from pcvhub.infra.kafka import LocalKafka
from pcvhub.schemas.codec import decode_envelope
from pcvhub.streams.sandbox import Sandbox
from pcvhub.topics import SEAL_HEADER, connector_principal, topic_name
from pcvhub.trust import signing
from pcvhub.trust.seal import Seal

THERAPIES = 120  # x 47 events (the happy path) for the throughput runs
LATENCY_RATE = 500
LATENCY_SECONDS = 10


def _prepared(root: Path, therapies: int):
    """Two sandboxes on the local broker (baseline, gatekeeper) and a signed cohort."""
    settings = load_settings()
    kafka = LocalKafka(settings)
    kafka.up()
    baseline = Sandbox.create(settings, kafka.bootstrap_servers, root / "baseline")
    sandbox = Sandbox.create(settings, kafka.bootstrap_servers, root / "gatekeeper")
    builder = Hub()
    builder.deploy_gatekeeper(sandbox)
    # more deployments, same keys and anchor, fresh topics: the two-worker run, the run
    # with a signature check pool
    pair, pooled = (Sandbox.create(settings, kafka.bootstrap_servers, root / f"gatekeeper-{n}")
                    for n in ("pair", "pooled"))
    for other in (pair, pooled):
        shutil.copytree(sandbox.settings.data_dir, other.settings.data_dir, dirs_exist_ok=True)
    cast = builder.register_cast("bench")
    scenarios = [TherapyScenario(builder, cast=cast, patient_hash=f"{i:064x}")
                 for i in range(therapies)]
    events = [e for s in scenarios for e in s.full_therapy()]
    return baseline, sandbox, pair, pooled, builder, events


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


PEAK_RSS: dict[str, float] = {}  # module -> peak RSS of its first worker, last run


def _throughput(sandbox: Sandbox, module: str, warmup, records, workers: int = 1,
                env: dict[str, str] | None = None) -> float:
    """Events/s of ``workers`` processes of ``module`` sharing the ingress partitions, over
    ``records`` sent after ``warmup`` was answered and the group settled."""
    name = module.rsplit(".", 1)[-1].replace("cli", "gatekeeper")
    tag = f"{name}-{workers}" + ("-pool" if env else "")
    procs = [sandbox.start_worker(f"{tag}-{i}", module=module, env=env)
             for i in range(workers)]
    try:
        sandbox.send(warmup)
        base = sandbox.wait_answered(len(warmup), 180, procs[0])
        sandbox.wait_group(workers)
        with sampled(procs[0].pid, f"{tag}-workers"):
            started = time.perf_counter()
            sandbox.send(records)
            done = sandbox.wait_answered(base + len(records), 600, procs[0])
            elapsed = time.perf_counter() - started
        if done < base + len(records):
            raise RuntimeError(f"{module}: only {done - base}/{len(records)} answered")
        PEAK_RSS[module] = peak_rss_mb(procs[0].pid)
        return len(records) / elapsed
    finally:
        for proc in procs:
            sandbox.kill(proc)


def _latency(sandbox: Sandbox, records) -> tuple[float, float, float, float]:
    """p50, p99 end to end (this process's send to its receipt) and p50, p99 inside the
    gatekeeper (the broker's append time of the ingress record, which the seal carries, to
    the create time of the canonical record the gatekeeper sent), in ms."""
    settings = sandbox.settings
    consumer = Consumer(sandbox.admin.librdkafka(**{"group.id": "bench-latency",
                                                    "auto.offset.reset": "latest"}))
    consumer.subscribe([topic_name("events", settings.topic_prefix)])
    while not consumer.assignment():
        consumer.poll(0.2)
    producer = Producer(settings.as_principal(connector_principal("direct"))
                        .producer(**{"linger.ms": 0}))
    topic = topic_name("ingress.direct", settings.topic_prefix)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    inside: list[float] = []
    interval = 1 / LATENCY_RATE
    start = time.perf_counter()
    for i, (key, value) in enumerate(records):
        target = start + i * interval
        # Wait for the send slot inside consume(): a busy loop would steal a core from
        # the worker on a 2-core machine and inflate the very latency being measured.
        while (remaining := target - time.perf_counter()) > 0:
            for msg in consumer.consume(100, timeout=remaining):
                _arrived(msg, sent_at, latencies, inside)
        sent_at[decode_envelope(value).event_id] = time.perf_counter()
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    producer.flush(30)
    deadline = time.perf_counter() + 60
    while len(latencies) < len(records) and time.perf_counter() < deadline:
        for msg in consumer.consume(100, timeout=0.2):
            _arrived(msg, sent_at, latencies, inside)
    consumer.close()
    cuts = statistics.quantiles(latencies, n=100)
    gate = statistics.quantiles(inside, n=100)
    return cuts[49] * 1000, cuts[98] * 1000, gate[49], gate[98]


def _arrived(msg, sent_at: dict[str, float], latencies: list[float], inside: list[float]
             ) -> None:
    if msg.error():
        return
    sent = sent_at.get(decode_envelope(msg.value()).event_id)
    if sent is None:
        return
    latencies.append(time.perf_counter() - sent)
    seal = Seal.decode(dict(msg.headers() or [])[SEAL_HEADER])
    if seal.appended_at_us > 0:
        inside.append(msg.timestamp()[1] - seal.appended_at_us / 1000)


def _verify_limit(events, registry) -> float:
    """Events/s this machine's cores could hybrid-verify: cores x one core's rate, measured
    here on the run's own individually signed events (the memo cleared each round)."""
    sample = [e.envelope for e in events[:400]]
    checks = [signing.check_of(signing.signed_message(env) or b"", env.signature,
                               registry.keys[(env.producer, env.key_id)].public)
              for env in sample]

    def verify_all() -> int:
        for check in checks:
            signing.halves_failing(check)
        return len(checks)

    return median_rate(verify_all, 3) * (os.cpu_count() or 1)


def run(quick: bool = False) -> list[Figure]:
    repo = Path(__file__).resolve().parent.parent
    os.environ["PYTHONPATH"] = f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    with tempfile.TemporaryDirectory(prefix="pcvhub-bench-") as tmp:
        therapies = THERAPIES // 4 if quick else THERAPIES
        latency_n = LATENCY_RATE * (LATENCY_SECONDS // (4 if quick else 1))
        extra = latency_n // 42 + 2  # therapies whose events feed the latency run
        baseline_box, sandbox, pair, pooled, builder, events = _prepared(
            Path(tmp), therapies + extra)
        limit = _verify_limit(events, builder.registry)
        regs = [(e.coi.encode(), e.raw) for e in builder.registry_log]
        records = [(e.coi.encode(), e.raw) for e in events]
        throughput_part = records[: len(records) - latency_n]
        latency_part = records[len(records) - latency_n:]
        baseline = _throughput(baseline_box, "bench.passthrough", regs, throughput_part)
        hub_rate = _throughput(sandbox, "pcvhub.cli", regs, throughput_part)
        baseline_2 = _throughput(baseline_box, "bench.passthrough", regs, throughput_part, 2)
        hub_rate_2 = _throughput(pair, "pcvhub.cli", regs, throughput_part, 2)
        pair.stop_all()
        pool_size = os.cpu_count() or 1
        hub_rate_pooled = _throughput(pooled, "pcvhub.cli", regs, throughput_part,
                                      env={"PCVHUB_VERIFY_WORKERS": str(pool_size)})
        pooled.stop_all()
        worker = sandbox.start_worker("latency")
        try:
            # Warm up with the first event of every therapy of the run: once answered, the
            # worker has joined and rebuilt the ledger of every partition the run touches.
            firsts = {}
            for index, (key, _) in enumerate(latency_part):
                firsts.setdefault(key, index)
            warm = [latency_part[i] for i in sorted(firsts.values())]
            timed = [r for i, r in enumerate(latency_part) if i not in set(firsts.values())]
            sandbox.send(warm)
            sandbox.wait_answered(len(regs) + len(throughput_part) + len(warm), 180, worker)
            p50, p99, inside_p50, inside_p99 = _latency(sandbox, timed)
        finally:
            sandbox.stop_all()
    name = "pass-through Faust agent"
    return [
        Figure("gatekeeper", f"{name} (unsigned copy)", baseline, "events/s"),
        Figure("gatekeeper", "verified + rule-checked, end to end", hub_rate, "events/s",
               name, baseline),
        Figure("gatekeeper", f"{name}, 2 workers", baseline_2, "events/s",
               f"{name}, 1 worker", baseline),
        Figure("gatekeeper", "verified + rule-checked, 2 workers", hub_rate_2, "events/s",
               f"{name}, 2 workers", baseline_2),
        Figure("gatekeeper", "verified + rule-checked, 2 workers", hub_rate_2, "events/s",
               "verified + rule-checked, 1 worker", hub_rate),
        Figure("gatekeeper", f"verified + rule-checked, signatures checked ahead by "
                             f"{pool_size} processes", hub_rate_pooled, "events/s",
               "verified + rule-checked, inline (the default)", hub_rate),
        Figure("gatekeeper", "verified + rule-checked, end to end", hub_rate, "events/s",
               f"hybrid-verify limit ({os.cpu_count()} cores x 1 core's rate)", limit),
        Figure("gatekeeper", "gatekeeper worker's peak RSS (2-worker run, worker 1)",
               PEAK_RSS["pcvhub.cli"], "MB", f"{name}'s", PEAK_RSS["bench.passthrough"]),
        Figure("gatekeeper", f"latency p50 at {LATENCY_RATE}/s", p50, "ms"),
        Figure("gatekeeper", f"latency p99 at {LATENCY_RATE}/s", p99, "ms"),
        Figure("gatekeeper", f"inside the gatekeeper p50 at {LATENCY_RATE}/s (ingress "
                             "append -> canonical record sent)", inside_p50, "ms"),
        Figure("gatekeeper", f"inside the gatekeeper p99 at {LATENCY_RATE}/s", inside_p99,
               "ms"),
    ]
