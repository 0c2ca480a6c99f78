"""What a party computes in the clear over its own rows: counts, histograms, risk sets.

Every party lays its numbers out the same way (:class:`Layout`, fixed by the study spec
and the statistics of the run, never by the data), so that the secure computation can add
the parties' vectors element by element. A site's vector has zeros outside its own site
group: which cells are zero is all the layout says, and the layout is public.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pcvhub.mpc.records import CTCAE_GRADES, RECIST, CohortRowError, TherapyRecord
from pcvhub.mpc.study import MAX_THERAPIES_PER_SITE, Statistic, StudySpec

COUNT_CATEGORIES: dict[Statistic, tuple[str, ...]] = {
    Statistic.RESPONSE_BY_RECIST: RECIST,
    Statistic.ADVERSE_EVENTS_BY_CTCAE: tuple(f"grade {g}" if g else "none" for g in CTCAE_GRADES),
}
QUARTILE_MEASURES: dict[Statistic, str] = {
    Statistic.VEIN_TO_VEIN_QUARTILES: "vein_to_vein_days",
    Statistic.TIME_TO_FIRST_DOSE_QUARTILES: "time_to_first_dose_days",
}


@dataclass(frozen=True)
class Layout:
    """Where each statistic's numbers sit in the vectors every party contributes.

    ``counts`` (small integers: tables and histograms) and ``survival`` (risk sets then
    deaths per bucket, which the survival recursion needs at a wider bit length) are two
    vectors so that each is shared at the bit length it needs.
    """

    spec: StudySpec
    statistics: tuple[Statistic, ...]

    @property
    def strata(self) -> tuple[tuple[str, str], ...]:
        return tuple((g, c) for g in self.spec.groups for c in self.spec.cancer_types)

    def count_slices(self) -> dict[Statistic, slice]:
        """Each table (strata x categories, row-major) then each histogram (day bins)."""
        slices, start = {}, 0
        for statistic in self.statistics:
            if statistic in COUNT_CATEGORIES:
                size = len(self.strata) * len(COUNT_CATEGORIES[statistic])
            elif statistic in QUARTILE_MEASURES:
                size = self.spec.day_bins
            else:
                continue
            slices[statistic] = slice(start, start + size)
            start += size
        return slices

    @property
    def counts_size(self) -> int:
        return max((s.stop for s in self.count_slices().values()), default=0)

    @property
    def survival_size(self) -> int:
        return 2 * self.spec.survival_buckets if Statistic.OVERALL_SURVIVAL_KM in \
            self.statistics else 0


@dataclass(frozen=True)
class SiteAggregate:
    """One site's contribution: what it secret-shares, and nothing more."""

    counts: np.ndarray
    survival: np.ndarray


def aggregate(rows: Iterable[TherapyRecord], layout: Layout, site: str) -> SiteAggregate:
    """Count one site's rows into the layout; a row of another site is an error."""
    spec = layout.spec
    counts = np.zeros(layout.counts_size, dtype=np.int64)
    survival = np.zeros(layout.survival_size, dtype=np.int64)
    slices = layout.count_slices()
    cancer_index = {c: i for i, c in enumerate(spec.cancer_types)}
    group_offset = spec.groups.index(spec.group_of(site)) * len(spec.cancer_types)
    buckets, width = spec.survival_buckets, spec.survival_bucket_days
    seen = 0
    for row in rows:
        if row.site_id != site:
            raise CohortRowError(f"therapy {row.therapy!r}: site_id {row.site_id!r} in the "
                                 f"rows of site {site!r}; a party counts only its own site")
        stratum = cancer_index.get(row.cancer_type or "")
        if stratum is None:
            continue  # a cancer the study does not cover: outside the study population
        seen += 1
        stratum += group_offset
        for statistic, where in slices.items():
            if statistic in COUNT_CATEGORIES:
                category = _category(statistic, row)
                if category is not None:
                    width_ = len(COUNT_CATEGORIES[statistic])
                    counts[where.start + stratum * width_ + category] += 1
            else:
                days = getattr(row, QUARTILE_MEASURES[statistic])
                if days is not None:
                    counts[where.start + min(days, spec.day_bins - 1)] += 1
        if survival.size and row.survival_days is not None:
            last = row.survival_days // width  # at risk in buckets 0..last (inclusive)
            survival[:min(last, buckets - 1) + 1] += 1
            if row.died and last < buckets:
                survival[buckets + last] += 1
    if seen > MAX_THERAPIES_PER_SITE:
        raise CohortRowError(f"site {site!r} has {seen} study therapies; a party counts at "
                             f"most {MAX_THERAPIES_PER_SITE} (the secure sums' bit length)")
    return SiteAggregate(counts, survival)


def _category(statistic: Statistic, row: TherapyRecord) -> int | None:
    if statistic is Statistic.RESPONSE_BY_RECIST:
        return None if row.best_response is None else RECIST.index(row.best_response)
    grade = row.worst_ctcae_grade
    return None if grade is None else CTCAE_GRADES.index(grade)
