"""One way to measure and print: medians of repeats, ratios against a same-run baseline."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Figure:
    """A measured rate or latency and, where it has one, the baseline it is compared with."""

    section: str
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None

    @property
    def ratio(self) -> float | None:
        if not self.baseline:
            return None
        return self.value / self.baseline


def median_rate(operation: Callable[[], int], repeats: int = 5) -> float:
    """Median of `repeats` runs of items/second; `operation` returns how many items it did."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        items = operation()
        rates.append(items / (time.perf_counter() - started))
    return statistics.median(rates)


def print_figures(figures: list[Figure], console: Console | None = None) -> None:
    table = Table(title="pcvhub benchmarks (medians; ratio = value / same-run baseline)")
    for column in ("section", "measure", "value", "baseline", "ratio"):
        table.add_column(column, justify="right" if column in ("value", "ratio") else "left")
    for f in figures:
        baseline = f"{f.baseline_name} = {f.baseline:,.1f}" if f.baseline else "-"
        ratio = f"{f.ratio:.3f}" if f.ratio is not None else "-"
        table.add_row(f.section, f.name, f"{f.value:,.1f} {f.unit}", baseline, ratio)
    (console or Console()).print(table)
