"""The cross-site combination on secret shares: sums, suppression, quartiles, survival.

Input is one vector per party (:class:`~pcvhub.mpc.aggregates.SiteAggregate`), shared
with Shamir's scheme; everything after the sum stays shared until the very end, where
only the published values are opened: a suppressed cell is multiplied by zero inside the
computation before anything is opened, so its value never leaves the shares.

All inputs are whole numbers (secure integers): MPyC's fixed-point inputs must be made
with ``integral=False`` on every party or the run deadlocks (lschoe/mpyc#16), and
fixed-point products round at random; integers and exact floors keep each result equal to
the plaintext reference (:mod:`.plaintext`), digit for digit. Nothing is sorted (secure
sorting takes minutes at these sizes): a quartile is found by comparing the combined
cumulative histogram with the rank, about 2 sqrt(bins) comparisons in two rounds; the
survival factors are divided by long division, one bit per round, every bucket in the same
round, and only their running product is sequential.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from pcvhub.mpc.aggregates import COUNT_CATEGORIES, Layout, SiteAggregate
from pcvhub.mpc.results import CountTable, Quartiles, Statistics, StudyResult, SurvivalCurve
from pcvhub.mpc.study import Statistic

#: counts and histograms: at most 9 parties x 100k therapies, times 4 (quartile ranks)
COUNT_BITS = 32
#: survival: a 2^f fixed-point factor times a risk set or another factor, f <= 24
SURVIVAL_BITS = 64
#: bound on |4 * cumulative count - a * n| for the quartile comparisons
RANK_BITS = 24


#: a statistic before opening: the shared values to open, and how to read them once opened
Pending = tuple[Any, Callable[[list[int]], CountTable | Quartiles | SurvivalCurve]]


async def combine(rt: Any, layout: Layout, own: SiteAggregate | None,
                  simulated: Sequence[SiteAggregate] = ()) -> StudyResult:
    """Share every party's aggregate, compute the approved statistics, open only them.

    Every statistic is laid out as shared arithmetic first and all published values are
    opened together at the end, so the statistics' rounds of communication overlap.

    :param rt: the MPyC runtime (:mod:`.runtime`), already started.
    :param own: this party's aggregate (in a run of several party processes).
    :param simulated: in a one-process run, every site's aggregate in party order; they
        are input one after another by the single party (the tests' in-process mode).
    """
    if own is None and not simulated:
        raise ValueError("a party of a multi-party run needs its own aggregate")
    sites = list(simulated) if simulated else [own]

    def shared_sum(bits: int, vectors: list[np.ndarray]) -> Any:
        """The sum over parties of one vector each: each party inputs its own; a lone
        party inputs them all."""
        secure_type = rt.SecInt(bits)
        if simulated:
            shares = [rt.input(secure_type.array(v), senders=0) for v in vectors]
        else:
            shares = list(rt.input(secure_type.array(vectors[0])))
        total = shares[0]
        for share in shares[1:]:
            total = total + share
        return total

    spec = layout.spec
    pending: dict[Statistic, Pending] = {}
    if layout.counts_size:
        counts = shared_sum(COUNT_BITS, [a.counts for a in sites if a is not None])
        for statistic, where in layout.count_slices().items():
            pending[statistic] = (_count_table(rt, layout, statistic, counts[where])
                                  if statistic in COUNT_CATEGORIES else
                                  _quartiles(rt, spec.small_cell_threshold, counts[where]))
    if layout.survival_size:
        survival = shared_sum(SURVIVAL_BITS, [a.survival for a in sites if a is not None])
        pending[Statistic.OVERALL_SURVIVAL_KM] = _kaplan_meier(rt, layout, survival)
    out: Statistics = {}
    for statistic in layout.statistics:  # one output round per bit length
        opened, read = pending[statistic]
        out[statistic] = read([int(v) for v in np.asarray(await rt.output(opened)).ravel()])
    return StudyResult(spec.study_id, spec.digest().hex(), out)


def _small(rt: Any, counts: Any, threshold: int) -> Any:
    """1 where 0 < count < threshold, else 0, still shared."""
    below = rt.np_sgn(counts - threshold, l=RANK_BITS, LT=True)
    return below - rt.np_equal(counts, 0)


def _count_table(rt: Any, layout: Layout, statistic: Statistic, cells: Any) -> Pending:
    categories = COUNT_CATEGORIES[statistic]
    strata = layout.strata
    rows, width = len(strata), len(categories)
    threshold = layout.spec.small_cell_threshold
    totals = rt.np_sum(cells.reshape(rows, width), axis=1)
    hidden_cell = _small(rt, cells, threshold)
    # a total is hidden with any hidden cell of its stratum: it would give that cell away
    hidden_in_row = rt.np_sum(hidden_cell.reshape(rows, width), axis=1)
    total_shown = (1 - _small(rt, totals, threshold)) * rt.np_equal(hidden_in_row, 0)
    opened = rt.np_concatenate((cells * (1 - hidden_cell), hidden_cell,
                                totals * total_shown, total_shown))

    def read(values: list[int]) -> CountTable:
        size = rows * width
        shown = [None if values[size + i] else values[i] for i in range(size)]
        base = 2 * size
        return CountTable(
            categories, strata,
            tuple(tuple(shown[s * width:(s + 1) * width]) for s in range(rows)),
            tuple(values[base + s] if values[base + rows + s] else None for s in range(rows)))

    return opened, read


def _quartiles(rt: Any, threshold: int, histogram: Any) -> Pending:
    """Q1, median and Q3 of the combined histogram, without sorting and without comparing
    every bin: the cumulative counts rise with the bin, so a rank is found in two steps of
    about sqrt(bins) comparisons each, first among block ends, then inside the one block
    (picked by a shared unit vector) where the rank falls."""
    bins = histogram.shape[0]
    block = math.isqrt(bins - 1) + 1
    blocks = -(-bins // block)
    cumulative = rt.np_cumsum(histogram)
    n = cumulative[-1:]
    if blocks * block > bins:  # pad with n: a padded bin is never below a rank <= n
        cumulative = rt.np_concatenate((cumulative, n * np.ones(blocks * block - bins, int)))
    grid = cumulative.reshape(blocks, block)
    # rank p*n with p = a/4: the lower order statistic is the number of bins with
    # 4 c_j < a n, the upper one the number with 4 c_j <= a n (= not a n < 4 c_j)
    targets = [n * a for a in (1, 2, 3)]

    def not_above(rows: list[Any]) -> Any:
        """Row i < 3: [4 v < t_i]; row i >= 3: [4 v <= t_(i-3)]; one comparison round."""
        strict = [rows[i] * 4 - targets[i] for i in range(3)]
        loose = [targets[i] - rows[3 + i] * 4 for i in range(3)]
        bits = rt.np_sgn(rt.np_concatenate([*strict, *loose]), l=RANK_BITS, LT=True)
        bits = bits.reshape(6, rows[0].shape[0])
        return rt.np_concatenate((bits[:3], 1 - bits[3:]))

    ends = grid[:, block - 1]
    coarse = not_above([ends] * 6)
    # the block where the rank falls is the first whose end is not below it: a shared unit
    # vector (the bits fall from 1 to 0 once), which picks that block's row of the grid
    first = coarse[:, :1] * 0 + 1
    unit = rt.np_concatenate((first, coarse[:, :blocks - 1]), axis=1) - coarse
    chosen = rt.np_matmul(unit, grid)
    fine = not_above([chosen[i] for i in range(6)])
    counts = rt.np_sum(coarse, axis=1) * block + rt.np_sum(fine, axis=1)
    shown = 1 - rt.np_sgn(n - threshold, l=RANK_BITS, LT=True)  # n >= threshold
    twice = (counts[:3] + counts[3:]) * shown
    opened = rt.np_concatenate((twice, n * shown, shown, rt.np_equal(n, 0)))

    def read(values: list[int]) -> Quartiles:
        q1, median, q3, n_shown, published, none = values
        if not published:  # below the threshold only a zero count is shown
            return Quartiles(0 if none else None, None, None, None)
        return Quartiles(n_shown, Fraction(q1, 2), Fraction(median, 2), Fraction(q3, 2))

    return opened, read


def _kaplan_meier(rt: Any, layout: Layout, survival: Any) -> Pending:
    spec = layout.spec
    f, buckets = spec.survival_fraction_bits, spec.survival_buckets
    one = 1 << f
    at_risk, deaths = survival[:buckets], survival[buckets:]
    survivors = (at_risk - deaths) * one
    # q_k = floor(2^f (n_k - d_k) / n_k) by long division: bit i is kept where the candidate
    # times n_k still fits under the numerator; all buckets go through each round together
    step = at_risk * 0
    for bit in range(f, -1, -1):
        candidate = step + (1 << bit)
        fits = 1 - rt.np_sgn(survivors - candidate * at_risk, l=SURVIVAL_BITS - 2, LT=True)
        step = step + fits * (1 << bit)
    nobody = rt.np_equal(at_risk, 0)
    step = step + nobody * (one - step)  # nobody at risk: survival carries over unchanged
    factors = rt.np_tolist(step)
    curve = [factors[0]]  # S_1 = floor(2^f q_1 / 2^f) = q_1
    for factor in factors[1:]:
        product = curve[-1] * factor
        curve.append((product - product % one) / one)  # exact floor: % is exact for 2^f
    shown = 1 - rt.np_sgn(at_risk - spec.small_cell_threshold, l=RANK_BITS, LT=True)
    opened = rt.np_concatenate((rt.np_fromlist(curve) * shown, shown))

    def read(values: list[int]) -> SurvivalCurve:
        return SurvivalCurve(spec.survival_bucket_days, tuple(
            Fraction(values[k], one) if values[buckets + k] else None for k in range(buckets)))

    return opened, read
