"""The secure combination equals the plaintext reference exactly, over random cohorts.

Given random rows at three sites and a random study layout, when every site's aggregate is
combined on secret shares (MPyC, one party in this process running every protocol step),
then each published number equals the plaintext computation over the pooled rows: the
same integers, the same fixed-point fractions, the same cells suppressed. The reference
itself is held against independent definitions (``statistics.median``, the exact
rational Kaplan-Meier product).
"""

from __future__ import annotations

import statistics
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcvhub.mpc.aggregates import Layout, aggregate
from pcvhub.mpc.plaintext import kaplan_meier, quartiles, reference_result
from pcvhub.mpc.records import RECIST, TherapyRecord
from pcvhub.mpc.results import CountTable, StudyResult
from pcvhub.mpc.runtime import lone_runtime
from pcvhub.mpc.secure import combine
from pcvhub.mpc.study import Statistic, StudySpec
from pcvhub.mpc.synthetic import synthetic_site_rows

SITES = ("KYOTO01", "OSAKA02", "TOKYO03")
CANCERS = ("C43", "C34")


def secure_result(spec: StudySpec, rows: list[TherapyRecord]) -> StudyResult:
    layout = Layout(spec, spec.statistics)
    aggregates = [aggregate([r for r in rows if r.site_id == s], layout, s) for s in spec.sites]
    rt = lone_runtime()
    return rt.run(combine(rt, layout, None, aggregates))


@st.composite
def therapy(draw: st.DrawFn, site: str, number: int) -> TherapyRecord:
    days = st.none() | st.integers(0, 60)
    survival = draw(st.none() | st.integers(0, 300))
    return TherapyRecord(
        f"{site}-{number}", site, draw(st.sampled_from((*CANCERS, "C64", None))),
        draw(st.none() | st.sampled_from(RECIST)), draw(st.none() | st.integers(0, 5)),
        draw(days), draw(days), survival, survival is not None and draw(st.booleans()))


@st.composite
def cohort(draw: st.DrawFn) -> tuple[StudySpec, list[TherapyRecord]]:
    spec = StudySpec(
        "STUDY-H", tuple(Statistic), SITES, CANCERS,
        small_cell_threshold=draw(st.integers(1, 6)),
        site_groups=draw(st.sampled_from(({}, {"KYOTO01": "east", "TOKYO03": "west"}))),
        day_bins=draw(st.sampled_from((2, 5, 16, 37))),
        survival_bucket_days=draw(st.integers(1, 40)),
        survival_buckets=draw(st.integers(1, 8)),
        survival_fraction_bits=draw(st.integers(8, 24)))
    rows = [draw(therapy(site, i)) for site in SITES
            for i in range(draw(st.integers(0, 25)))]
    return spec, rows


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohort())
def test_secure_statistics_equal_the_plaintext_reference(case: tuple[StudySpec, list]) -> None:
    spec, rows = case
    assert secure_result(spec, rows) == reference_result(spec, spec.statistics, rows)


def test_a_fixed_cohort_is_equal_and_suppresses_what_it_must() -> None:
    spec = StudySpec("STUDY-F", tuple(Statistic), SITES, ("C43", "C34", "C18", "C50"),
                     small_cell_threshold=5, site_groups={"TOKYO03": "kanto"},
                     day_bins=128, survival_buckets=12)
    rows = [r for s in SITES for r in synthetic_site_rows(s, 120, seed=3)]
    result = secure_result(spec, rows)
    assert result == reference_result(spec, spec.statistics, rows)
    table = result.statistics[Statistic.ADVERSE_EVENTS_BY_CTCAE]
    assert isinstance(table, CountTable)
    cells = [c for row in table.cells for c in row]
    assert None in cells and any(c for c in cells)  # some cells suppressed, some published
    # a stratum with a suppressed cell never shows its total (it would give the cell away)
    assert all(total is None for row, total in zip(table.cells, table.totals, strict=True)
               if None in row)


def test_the_reference_median_is_the_textbook_median() -> None:
    spec = StudySpec("S", (Statistic.VEIN_TO_VEIN_QUARTILES,), SITES, CANCERS,
                     small_cell_threshold=1, day_bins=1024)
    for days in ([5], [3, 9], [40, 10, 20, 30], [7, 7, 8, 100, 2, 64, 64]):
        assert quartiles(spec, days).median == Fraction(statistics.median(days))
    assert quartiles(spec, [1, 2, 3, 4]) == quartiles(spec, [4, 3, 2, 1])
    q = quartiles(spec, [1, 2, 3, 4])
    assert (q.q1, q.q3) == (Fraction(3, 2), Fraction(7, 2))  # ranks 1 and 3 fall between


def test_the_fixed_point_survival_is_the_exact_product_rounded_down_step_by_step() -> None:
    spec = StudySpec("S", (Statistic.OVERALL_SURVIVAL_KM,), SITES, CANCERS,
                     small_cell_threshold=1, survival_bucket_days=10, survival_buckets=20,
                     survival_fraction_bits=16)
    times = [(t * 7 % 190, t % 3 != 0) for t in range(60)]
    curve = kaplan_meier(spec, times).survival
    exact = Fraction(1)
    for k, fixed in enumerate(curve):
        at_risk = sum(1 for t, _ in times if t >= 10 * k)
        deaths = sum(1 for t, died in times if died and 10 * k <= t < 10 * (k + 1))
        if not at_risk:
            assert fixed is None  # nobody left at risk: below any threshold
            continue
        exact *= Fraction(at_risk - deaths, at_risk)
        assert fixed is not None and exact - Fraction(k + 1, 1 << 16) <= fixed <= exact
