"""The plaintext reference: each statistic over the pooled rows, as a trusted curator would.

This is the definition the secure computation must meet exactly. It is written from the
rows (sorting, counting, dividing with Python integers), not from the parties' vectors,
so that a mistake in the layout or the secure arithmetic cannot hide in both. Nothing
here runs in a deployment except the benchmark's baseline and the tests.

- counts: therapies per category; best overall RECIST response per therapy, worst CTCAE
  grade per dosed therapy;
- quartiles: Hyndman-Fan type 2 over whole days, a time of ``day_bins - 1`` days or more
  counted as ``day_bins - 1``;
- Kaplan-Meier: with ``n_k`` at risk at the start of bucket k and ``d_k`` deaths in it,
  ``q_k = floor(2^f (n_k - d_k) / n_k)`` (``2^f`` when nobody is at risk),
  ``S_0 = 2^f``, ``S_k = floor(S_(k-1) q_k / 2^f)``; published as ``S_k / 2^f``.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

from pcvhub.mpc.aggregates import COUNT_CATEGORIES, QUARTILE_MEASURES, Layout
from pcvhub.mpc.records import TherapyRecord
from pcvhub.mpc.results import Cell, CountTable, Quartiles, Statistics, StudyResult, SurvivalCurve
from pcvhub.mpc.study import Statistic, StudySpec

QUARTILE_POINTS = (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))


def reference_result(spec: StudySpec, statistics: tuple[Statistic, ...],
                     rows: Iterable[TherapyRecord]) -> StudyResult:
    """What the study publishes, computed over the pooled rows of every site."""
    studied = [r for r in rows if r.site_id in spec.sites and r.cancer_type in spec.cancer_types]
    out: Statistics = {}
    for statistic in statistics:
        if statistic in COUNT_CATEGORIES:
            out[statistic] = _count_table(spec, statistic, studied)
        elif statistic in QUARTILE_MEASURES:
            days = [getattr(r, QUARTILE_MEASURES[statistic]) for r in studied]
            out[statistic] = quartiles(spec, [min(d, spec.day_bins - 1) for d in days
                                              if d is not None])
        else:
            out[statistic] = kaplan_meier(spec, [(r.survival_days, r.died) for r in studied
                                                 if r.survival_days is not None])
    return StudyResult(spec.study_id, spec.digest().hex(), out)


def small(count: int, threshold: int) -> bool:
    """A count that would single out fewer than ``threshold`` therapies (zero discloses none)."""
    return 0 < count < threshold


def _count_table(spec: StudySpec, statistic: Statistic, rows: list[TherapyRecord]
                 ) -> CountTable:
    categories = COUNT_CATEGORIES[statistic]
    strata = Layout(spec, (statistic,)).strata
    cells, totals = [], []
    for group, cancer in strata:
        counts = [0] * len(categories)
        for row in rows:
            if spec.group_of(row.site_id) == group and row.cancer_type == cancer:
                if statistic is Statistic.RESPONSE_BY_RECIST and row.best_response:
                    counts[categories.index(row.best_response)] += 1
                elif (statistic is Statistic.ADVERSE_EVENTS_BY_CTCAE
                      and row.worst_ctcae_grade is not None):
                    counts[row.worst_ctcae_grade] += 1
        shown: list[Cell] = [None if small(c, spec.small_cell_threshold) else c for c in counts]
        total = sum(counts)
        hidden = small(total, spec.small_cell_threshold) or None in shown
        cells.append(tuple(shown))
        totals.append(None if hidden else total)
    return CountTable(categories, strata, tuple(cells), tuple(totals))


def quartiles(spec: StudySpec, days: list[int]) -> Quartiles:
    n = len(days)
    if n < spec.small_cell_threshold:
        return Quartiles(None if small(n, spec.small_cell_threshold) else n, None, None, None)
    ordered = sorted(days)

    def at(p: Fraction) -> Fraction:
        rank = p * n  # order statistics are 1-based: x_(ceil(pn)), averaged with x_(pn+1)
        low = ordered[-(-rank.numerator // rank.denominator) - 1]
        high = ordered[int(rank)] if rank.denominator == 1 else low
        return Fraction(low + high, 2)

    q1, median, q3 = (at(p) for p in QUARTILE_POINTS)
    return Quartiles(n, q1, median, q3)


def kaplan_meier(spec: StudySpec, times: list[tuple[int, bool]]) -> SurvivalCurve:
    f, width = spec.survival_fraction_bits, spec.survival_bucket_days
    one = 1 << f
    survival, curve = one, []
    for k in range(spec.survival_buckets):
        at_risk = sum(1 for t, _ in times if t >= k * width)
        deaths = sum(1 for t, died in times if died and k * width <= t < (k + 1) * width)
        step = one if at_risk == 0 else one * (at_risk - deaths) // at_risk
        survival = survival * step >> f
        curve.append(None if at_risk < spec.small_cell_threshold else Fraction(survival, one))
    return SurvivalCurve(width, tuple(curve))
