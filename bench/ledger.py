"""The transparency ledger: append rate, checkpoint cost (alone and witnessed), proofs at
a large tree.

Baselines in the same run: for appends, raw SHA-256 of the same leaves (the least any
Merkle log must do per leaf); for a proof, the raw SHA-256 node hashes a verifier of a
proof that long must compute at least (so the ratio is our overhead over the bare
hashing). The large tree is synthetic leaf hashes appended to the level files on disk;
proofs are for random leaves and random pairs of sizes in it.

On the broker (``_following``): the gatekeeper (``pcvhub worker``) judges a cohort, and
``pcvhub ledger run`` follows what it wrote, in the same run: the ledger's appends/s
(read, verified, appended, checkpointed) beside the gatekeeper's events/s; then, with the
ledger caught up and following, a second cohort through the gatekeeper, and for each record
the time from its acceptance (the broker's timestamp of the output record, which the
gatekeeper produced) to the first checkpoint on the ledger topic that covers it.
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from bench.report import Figure, median_rate
from pcvhub.ledger.cosign import WitnessKey, WitnessKeys
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import KEY_FILE, LogSnapshot, TransparencyLog
from pcvhub.ledger.note import Checkpoint, LogKeys, SignedNote, VerifierKey
from pcvhub.ledger.proofs import (
    ConsistencyProof,
    InclusionProof,
    verify_consistency,
    verify_inclusion,
)
from pcvhub.ledger.tree import TreeLevels
from pcvhub.ledger.witness import Witness, WitnessServer, trust_log
from pcvhub.ledger.witnessing import Cosigning, WitnessPolicy
from pcvhub.topics import topic_name
from pcvhub.trust import merkle

APPENDS = 50_000
LARGE = 10_000_000
PROOFS = 2_000


def _median_us(operation: Callable[[int], object], count: int) -> float:
    times = []
    for i in range(count):
        started = time.perf_counter()
        operation(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def _raw_hashes_us(n: int, count: int) -> float:
    """Median time of ``n`` chained SHA-256 node hashes (the verifier's minimum work)."""
    node = bytes(32)

    def chain(_: int) -> None:
        h = node
        for _ in range(n):
            h = hashlib.sha256(b"\x01" + h + node).digest()

    return _median_us(chain, count)


def _witnessed_ms(log: TransparencyLog, batch: list[bytes], tmp: str, stamps) -> float:
    """Median of: append ``batch``, checkpoint, send it to two witnesses (each checks both
    log lines and the consistency proof, stores the note, cosigns twice), attach."""
    servers = []
    for name in ("a", "b"):
        folder = Path(tmp) / f"witness-{name}"
        folder.mkdir()
        trust_log(folder, str(log.keys.ed25519_vkey), str(log.keys.ml_dsa_44_vkey))
        server = WitnessServer(Witness(folder, WitnessKeys.generate(f"{name}.example/w")))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    policy = WitnessPolicy(tuple(WitnessKey(s.witness.keys.name, s.witness.keys.ed25519_vkey,
                                            s.witness.keys.ml_dsa_44_vkey, s.url)
                                 for s in servers), quorum=2)
    cosigning = Cosigning(log, policy)
    try:
        def witnessed(_: int) -> None:
            for leaf in batch:
                log.append(leaf)
            if cosigning(log.checkpoint(next(stamps))).count.below_quorum:
                raise RuntimeError("a bench witness did not cosign")

        return _median_us(witnessed, 20) / 1000
    finally:
        cosigning.close()
        for server in servers:
            server.shutdown()
            server.server_close()
            server.witness.close()


def _records(sandbox, suffix: str) -> dict[tuple[str, int, int], tuple[float, bytes]]:
    """Every record of a topic of the sandbox: its broker timestamp (s) and value."""
    consumer = Consumer(sandbox.admin.librdkafka(**{"group.id": "bench-ledger"}))
    name = topic_name(suffix, sandbox.settings.topic_prefix)
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in partitions}
        consumer.assign([TopicPartition(name, p, 0) for p, end in ends.items() if end])
        out: dict[tuple[str, int, int], tuple[float, bytes]] = {}
        deadline = time.monotonic() + 120
        while len(out) < sum(ends.values()) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                if not msg.error():
                    out[(suffix, msg.partition(), msg.offset())] = (
                        msg.timestamp()[1] / 1000, msg.value() or b"")
        return out
    finally:
        consumer.close()


def _following(quick: bool) -> list[Figure]:
    """The ledger process beside the gatekeeper on the local broker (see the module doc)."""
    import subprocess
    import sys

    from bench.gatekeeper import THERAPIES, _prepared, _throughput
    from bench.profile import sampled
    from pcvhub.log.verify import OUTPUT_TOPICS

    section = "ledger"
    with tempfile.TemporaryDirectory(prefix="bench-ledger-follow-") as tmp:
        therapies = THERAPIES // 4 if quick else THERAPIES
        _, sandbox, pair, pooled, builder, events = _prepared(Path(tmp), 2 * therapies)
        for unused in (pair, pooled):
            unused.stop_all()
        regs = [(e.coi.encode(), e.raw) for e in builder.registry_log]
        records = [(e.coi.encode(), e.raw) for e in events]
        first, second = records[:len(records) // 2], records[len(records) // 2:]
        try:
            gatekeeper = _throughput(sandbox, "pcvhub.cli", regs, first)
            total = sum(sandbox.count(t) for t in OUTPUT_TOPICS)
            command = [sys.executable, "-m", "pcvhub.cli", "ledger"]
            subprocess.run([*command, "init", "--origin", "bench.pcvhub.example/follow"],
                           env=sandbox.env, check=True, capture_output=True, timeout=60)
            ledger = subprocess.Popen([*command, "run", "--every", "1000", "--seconds", "1"],
                                      env=sandbox.env, stdout=subprocess.PIPE, text=True)
            sandbox.workers.append(ledger)
            assert ledger.stdout is not None
            started = None
            with sampled(ledger.pid, "ledger-catch-up"):
                for line in ledger.stdout:
                    if started is None and "following" in line:
                        started = time.perf_counter()
                    if line.startswith("caught up"):
                        break
            appends = total / (time.perf_counter() - (started or time.perf_counter()))
            # live: the second cohort through the gatekeeper while the ledger follows
            _throughput(sandbox, "pcvhub.cli", [], second)
            time.sleep(3)  # the time bound (1 s) and a checkpoint's publish
            ledger.terminate()
            ledger.wait(30)
            accepted = {k: ts for t in OUTPUT_TOPICS for k, (ts, _) in
                        _records(sandbox, t).items()}
            published = [(Checkpoint.parse_body(SignedNote.parse(note).text).size, ts)
                         for _, (ts, note) in sorted(_records(sandbox, "ledger").items())]
            folder = Path(sandbox.settings.data_dir) / "ledger"
            vkeys = json.loads((folder / KEY_FILE).read_text())
            with LogSnapshot(folder, VerifierKey.parse(vkeys["ed25519_vkey"]),
                             VerifierKey.parse(vkeys["ml_dsa_44_vkey"])) as snapshot:
                leaves = {}
                for index, entry in enumerate(snapshot.entries(0, snapshot.size)):
                    leaf = LedgerLeaf.decode(entry)
                    leaves[(leaf.topic, leaf.partition, leaf.offset)] = index
        finally:
            sandbox.stop_all()
        lags = []
        live_from = total
        for position, when in accepted.items():
            index = leaves.get(position)
            if index is None or index < live_from:
                continue
            covering = next((ts for size, ts in published if size > index), None)
            if covering is not None:
                lags.append((covering - when) * 1000)
        lags.sort()
        figures = [
            Figure(section, "gatekeeper, verified + rule-checked (same run)", gatekeeper,
                   "events/s"),
            Figure(section, "ledger run: read, verified, appended, checkpointed", appends,
                   "records/s", "gatekeeper", gatekeeper)]
        if lags:
            figures += [
                Figure(section, "acceptance to first covering checkpoint p50 (--seconds 1)",
                       lags[len(lags) // 2], "ms"),
                Figure(section, "acceptance to first covering checkpoint p99",
                       lags[min(len(lags) - 1, int(len(lags) * 0.99))], "ms")]
        return figures


def run(quick: bool = False) -> list[Figure]:
    appends = APPENDS // 10 if quick else APPENDS
    large = LARGE // 10 if quick else LARGE
    section = "ledger"
    leaves = [LedgerLeaf(hashlib.sha256(i.to_bytes(8, "big")).digest(), "events", i % 6,
                         i).encode() for i in range(appends)]
    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        keys = LogKeys.generate("bench.pcvhub.example/ledger")

        def raw() -> int:
            for leaf in leaves:
                hashlib.sha256(leaf).digest()
            return len(leaves)

        runs = iter(range(100))

        def append() -> int:
            with TransparencyLog(Path(tmp) / f"log{next(runs)}", keys) as log:
                for leaf in leaves:
                    log.append(leaf)
            return len(leaves)

        baseline = median_rate(raw)
        figures.append(Figure(section, "raw SHA-256 of the leaves", baseline, "leaves/s"))
        figures.append(Figure(section, "append (entry + level files)", median_rate(append, 3),
                              "leaves/s", "raw SHA-256", baseline))
        with TransparencyLog(Path(tmp) / "checkpointed", keys) as log:
            stamps = iter(range(1, 10**6))

            def checkpoint(_: int) -> None:
                for leaf in leaves[:100]:
                    log.append(leaf)
                log.checkpoint(next(stamps))

            alone = _median_us(checkpoint, 20) / 1000
            figures.append(Figure(section, "checkpoint per 100 appends (fsync, sign both "
                                  "lines, tiles)", alone, "ms"))
            figures.append(Figure(section, "... and cosigned by 2 witnesses (loopback HTTP, "
                                  "same process)", _witnessed_ms(log, leaves[:100], tmp, stamps),
                                  "ms", "checkpoint alone", alone))

        started = time.perf_counter()
        levels = TreeLevels(Path(tmp) / "large")
        for i in range(large):
            levels.append(merkle.leaf_hash(i.to_bytes(8, "big")))
        build = large / (time.perf_counter() - started)
        figures.append(Figure(section, f"build a {large:,}-leaf tree on disk", build,
                              "leaves/s"))
        rng = random.Random(9162)
        picks = [rng.randrange(large) for _ in range(PROOFS)]
        pairs = [tuple(sorted((rng.randrange(1, large), rng.randrange(1, large))))
                 for _ in range(PROOFS)]
        root = levels.root()
        depth = (large - 1).bit_length()
        hashing = _raw_hashes_us(depth, PROOFS)
        figures.append(Figure(section, f"raw SHA-256 x {depth} (one proof's hashing)", hashing,
                              "µs"))
        inclusion = [InclusionProof(i, large, tuple(levels.inclusion_proof(i, large)))
                     for i in picks]
        figures.append(Figure(section, f"inclusion proof, generate at {large:,}",
                              _median_us(lambda k: levels.inclusion_proof(picks[k], large),
                                         PROOFS), "µs", "raw hashing", hashing))

        def verify_one(k: int) -> None:
            verify_inclusion(picks[k].to_bytes(8, "big"), inclusion[k], root)

        figures.append(Figure(section, f"inclusion proof, verify at {large:,}",
                              _median_us(verify_one, PROOFS), "µs", "raw hashing", hashing))
        consistency = [ConsistencyProof(m, n, tuple(levels.consistency_proof(m, n)))
                       for m, n in pairs]
        roots = [(levels.root(m), levels.root(n)) for m, n in pairs]
        figures.append(Figure(section, f"consistency proof, generate at {large:,}",
                              _median_us(lambda k: levels.consistency_proof(*pairs[k]), PROOFS),
                              "µs", "raw hashing", hashing))

        def check(k: int) -> None:
            verify_consistency(consistency[k], *roots[k])

        figures.append(Figure(section, f"consistency proof, verify at {large:,}",
                              _median_us(check, PROOFS), "µs", "raw hashing", hashing))
        levels.close()
    return figures + _following(quick)
