"""Cross-hospital statistics: wall time of real party processes beside the plaintext.

For 3 and 5 parties with 10k synthetic therapies per site (1k with ``--quick``), each
group of statistics runs as separate ``pcvhub mpc party`` processes over TLS on loopback:
the counts (response by RECIST and adverse events by CTCAE, per site group and cancer
type), the medians (vein-to-vein and time to first dose, 1024-bin histograms) and the
Kaplan-Meier curve (60 buckets of 30 days). Two figures per run: the whole wall time
(process start, imports, TLS, computation, barrier) and the computation alone as the
parties log it (connected -> result). The baseline is the plaintext reference over the
same pooled rows, in this process, in the same run. Parties share the machine's cores,
so on 2 cores 5 parties measure contention as much as protocol cost.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from pathlib import Path

from bench.report import Figure
from pcvhub.mpc.local_run import LocalStudyRun, finish
from pcvhub.mpc.plaintext import reference_result
from pcvhub.mpc.study import Statistic, StudySpec
from pcvhub.mpc.synthetic import CANCER_TYPES, synthetic_site_rows

SEED = 20
GROUPS = {
    "counts": (Statistic.RESPONSE_BY_RECIST, Statistic.ADVERSE_EVENTS_BY_CTCAE),
    "medians": (Statistic.VEIN_TO_VEIN_QUARTILES, Statistic.TIME_TO_FIRST_DOSE_QUARTILES),
    "kaplan-meier": (Statistic.OVERALL_SURVIVAL_KM,),
}
SITES = ("KYOTO01", "OSAKA02", "TOKYO03", "NAGOYA04", "SAPPORO05")
COMPUTED = re.compile(r"computed .* in ([0-9.]+) s")


def _spec(parties: int, chosen: tuple[Statistic, ...]) -> StudySpec:
    sites = SITES[:parties]
    return StudySpec("BENCH", chosen, sites, CANCER_TYPES,
                     site_groups={s: "east" if i % 2 else "west" for i, s in enumerate(sites)})


def run(quick: bool = False) -> list[Figure]:
    therapies = 1_000 if quick else 10_000
    figures = []
    for parties in (3,) if quick else (3, 5):
        pooled = [r for s in SITES[:parties] for r in synthetic_site_rows(s, therapies, SEED)]
        for name, chosen in GROUPS.items():
            spec = _spec(parties, chosen)
            started = time.perf_counter()
            expected = reference_result(spec, chosen, pooled)
            plaintext = time.perf_counter() - started
            with tempfile.TemporaryDirectory(prefix="bench-mpc-") as tmp:
                local = LocalStudyRun.create(Path(tmp), spec)
                started = time.perf_counter()
                outcomes = finish([local.start(local.command(
                    i, ("--synthetic", f"{SEED}:{therapies}"), "--connect-timeout", "120"))
                    for i in range(parties)])
                wall = time.perf_counter() - started
                for code, out in outcomes:
                    if code:
                        raise RuntimeError(f"bench mpc {name}, {parties} parties: {out}")
                if json.loads(local.result(spec.sites[0]).read_text()) != expected.to_json():
                    raise RuntimeError(f"bench mpc {name}: result differs from the plaintext")
                computed = statistics.median(float(COMPUTED.search(out)[1])  # type: ignore[index]
                                             for _, out in outcomes)
            label = f"{name}, {parties} parties x {therapies // 1000}k"
            # milliseconds: the plaintext takes a few, the shared table rounds to one decimal
            figures.append(Figure("mpc", f"{label}: wall", wall * 1e3, "ms", "plaintext",
                                  plaintext * 1e3))
            figures.append(Figure("mpc", f"{label}: computation", computed * 1e3, "ms",
                                  "plaintext", plaintext * 1e3))
    return figures

