"""What a study run publishes: the tables, quartiles and survival curve, with suppression.

The secure computation (:mod:`.secure`) and the plaintext reference (:mod:`.plaintext`)
both return a :class:`StudyResult`; the tests hold them equal. ``None`` in a cell means
*suppressed*: its value was never opened. Rates are exact fractions of two published
counts, so they are never computed for a suppressed cell.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from pcvhub.mpc.study import Statistic

Cell = int | None  # None: suppressed


@dataclass(frozen=True)
class CountTable:
    """Therapies per category in each stratum (site group, cancer type).

    A count from 1 to threshold-1 is suppressed; a stratum's total is suppressed when it
    is itself small or when any of its cells is (else the cell would be the difference).
    """

    categories: tuple[str, ...]
    strata: tuple[tuple[str, str], ...]
    cells: tuple[tuple[Cell, ...], ...]
    totals: tuple[Cell, ...]

    def rate(self, stratum: int, category: int) -> Fraction | None:
        """The exact share of the stratum's therapies in a category, if both are published."""
        count, total = self.cells[stratum][category], self.totals[stratum]
        if count is None or not total:
            return None
        return Fraction(count, total)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "counts", "categories": list(self.categories), "rows": [
            {"site_group": group, "cancer_type": cancer, "total": _cell(total),
             "counts": dict(zip(self.categories, map(_cell, cells), strict=True)),
             "rates": {c: _fraction(self.rate(s, i)) for i, c in enumerate(self.categories)}}
            for s, ((group, cancer), cells, total)
            in enumerate(zip(self.strata, self.cells, self.totals, strict=True))]}


@dataclass(frozen=True)
class Quartiles:
    """First quartile, median and third quartile in whole-day bins (Hyndman-Fan type 2:
    the mean of the two order statistics where the rank falls between them), suppressed
    together when fewer than threshold therapies are measured."""

    therapies: Cell
    q1: Fraction | None
    median: Fraction | None
    q3: Fraction | None

    def to_json(self) -> dict[str, Any]:
        return {"kind": "quartiles", "therapies": _cell(self.therapies),
                "q1_days": _fraction(self.q1), "median_days": _fraction(self.median),
                "q3_days": _fraction(self.q3)}


@dataclass(frozen=True)
class SurvivalCurve:
    """Kaplan-Meier survival at the end of each bucket, in fixed point; a bucket whose risk
    set is below the threshold is suppressed."""

    bucket_days: int
    survival: tuple[Fraction | None, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "kaplan_meier", "bucket_days": self.bucket_days,
                "survival": [{"until_day": (k + 1) * self.bucket_days, "survival": _fraction(s)}
                             for k, s in enumerate(self.survival)]}


Statistics = dict[Statistic, CountTable | Quartiles | SurvivalCurve]


@dataclass(frozen=True)
class StudyResult:
    """One run's published outputs, keyed by statistic, with the spec they answer."""

    study_id: str
    spec_digest: str
    statistics: Statistics

    def to_json(self) -> dict[str, Any]:
        return {"study_id": self.study_id, "spec_digest": self.spec_digest,
                "statistics": {s.value: r.to_json() for s, r in self.statistics.items()}}

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: the result hash ``StudyRunCompleted`` carries."""
        return result_digest(self.to_json())


def result_digest(published: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a result's canonical JSON, as published or as read back."""
    canonical = json.dumps(published, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _cell(value: Cell) -> int | str:
    return "suppressed" if value is None else value


def _fraction(value: Fraction | None) -> str | None:
    return None if value is None else str(value)
