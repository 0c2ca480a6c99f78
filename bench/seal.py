"""The gatekeeper's seal: what sealing adds to judging, in process (no Kafka).

Baseline: the gatekeeper judging a log of whole therapies (decode, hybrid verify, rules,
its own refusal and alert signing), a fresh gatekeeper and ledgers each round. Measured
beside it in the same run: the same judging with every output sealed, one batch per
send step of 1 (an idle gatekeeper), 64 and 500 (a loaded one) ingress records. The ratio
is the sealed rate over the unsealed one. The seals-topic round trip the worker adds per
step (one acknowledged produce) is not in these figures: ``bench gatekeeper`` has it.
"""

from __future__ import annotations

from bench.report import Figure, median_rate
from pcvhub.streams.event import SourcePosition
from pcvhub.streams.gatekeeper import Gatekeeper, Output, PartitionLedger
from pcvhub.streams.rules import default_rules
from pcvhub.streams.timebounds import SIMULATION
from pcvhub.topics import partition_for
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.seal import SealBook
from tests.unit.sealing import gatekeeper_signer
from tests.unit.therapy_builder import Hub, TherapyScenario

PARTITIONS = 6
INGRESS = "pcvhub.ingress.direct"
THERAPIES, QUICK_THERAPIES = 12, 3
STEPS = (1, 64, 500)


def run(quick: bool = False) -> list[Figure]:
    hub = Hub()
    signer = gatekeeper_signer()
    hub.register_gatekeeper(signer)
    cast = hub.register_cast("seal")
    therapies = [TherapyScenario(hub, cast=cast, patient_hash=f"{i:064x}").full_therapy()
                 for i in range(QUICK_THERAPIES if quick else THERAPIES)]
    wires = [(e.coi.encode(), e.raw) for e in hub.registry_log]
    wires += [(e.coi.encode(), e.raw) for events in therapies for e in events]

    def judge(step: int | None) -> int:
        registry = Hub(registrar=hub.registrar).registry
        gate = Gatekeeper(default_rules(registry, bounds=SIMULATION), EventIssuer(signer), registry)
        ledgers = {p: PartitionLedger(p) for p in range(PARTITIONS)}
        book, pending, offsets = SealBook(), list[Output](), dict.fromkeys(range(PARTITIONS), 0)
        for number, (key, wire) in enumerate(wires, 1):
            partition = partition_for(key, PARTITIONS)
            source = SourcePosition(INGRESS, partition, offsets[partition])
            offsets[partition] += 1
            pending += gate.judge(wire, key, source, ledgers[partition])
            if step is not None and (number % step == 0 or number == len(wires)):
                batch = gate.seal(pending)
                for output in batch.at(book.append(batch.head)):
                    output.headers  # noqa: B018 - what the worker sends: the encoded seal
                pending = []
        return len(wires)

    repeats = 3
    baseline = median_rate(lambda: judge(None), repeats)
    base = f"judge, unsealed ({len(wires):,} ingress records)"
    figures = [Figure("seal", base, baseline, "records/s")]
    for step in STEPS:
        figures.append(Figure("seal", f"judge + seal, {step} record(s) per send step",
                              median_rate(lambda s=step: judge(s), repeats), "records/s",
                              base, baseline))
    return figures
