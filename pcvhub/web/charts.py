"""Charts for the pages where a picture reads better than a table, as server-side SVG.

pygal draws them (axes, scales, legends, stacking) so no chart code runs in the browser
and nothing is fetched from the internet: its tooltip scripts are left out, and the pages
load each chart as an image, in which a browser runs no script anyway. Each chart has the
same numbers as a table beside it on its page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pygal
from pygal.style import Style

STYLE = Style(
    background="#ffffff", plot_background="#ffffff", foreground="#334155",
    foreground_strong="#0f172a", foreground_subtle="#e2e8f0", opacity="0.9",
    opacity_hover="1", transition="0ms", guide_stroke_color="#e2e8f0",
    major_guide_stroke_color="#cbd5e1", guide_stroke_dasharray="0",
    major_guide_stroke_dasharray="0",
    font_family='"Liberation Sans", "DejaVu Sans", Arial, sans-serif',
    title_font_size=15, label_font_size=12, major_label_font_size=12,
    legend_font_size=12, value_font_size=11, no_data_font_size=16,
    colors=("#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777",
            "#65a30d", "#9333ea", "#64748b"),
)

#: a colour per dose status, so that a status has the same colour on every chart
STATUS_COLOURS = {
    "RELEASED": "#93c5fd", "AVAILABLE": "#2563eb", "RESERVED": "#7c3aed",
    "DISPENSED": "#0891b2", "ADMINISTERED": "#16a34a", "QUARANTINED": "#dc2626",
    "EXPIRED": "#f59e0b", "DESTROYED": "#64748b",
}
AGEING_BUCKETS = ("0-30", "31-60", "61-90", "90+")


def _options(**extra: object) -> dict[str, object]:
    """pygal options every chart shares: no script (``js``), sized in pixels, whole labels."""
    return {"style": STYLE, "js": [], "disable_xml_declaration": True, "explicit_size": True,
            "width": 720, "height": 340, "legend_at_bottom": True, "margin": 12,
            "no_data_text": "nothing yet", "truncate_label": -1, "truncate_legend": -1,
            **extra}


#: pygal writes its tooltip configuration as an inline script even with ``js=[]``; a
#: chart shown as an image never runs it, and the SVG is cleaner without it
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL)


def _svg(chart: pygal.graph.graph.Graph) -> str:
    return _SCRIPT.sub("", chart.render(is_unicode=True))


# -- durations ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unit:
    """A unit to show durations in: name and length in days."""

    name: str
    days: float

    def of(self, days: float) -> float:
        return days / self.days


UNITS = (Unit("days", 1.0), Unit("hours", 1 / 24), Unit("minutes", 1 / 1440),
         Unit("seconds", 1 / 86400))


def unit_for(days: Sequence[float]) -> Unit:
    """The largest unit in which the longest duration is at least 2 (3 days, not 0.1 weeks;
    40 seconds, not 0.0005 days): compressed demo clocks and real weeks both read well."""
    longest = max(days, default=0.0)
    return next((u for u in UNITS if longest >= 2 * u.days), UNITS[-1])


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def count_ticks(most: float, target: int = 6) -> list[int]:
    """Whole-number ticks from 0 to at least ``most`` (counts of therapies or doses have no
    fractions), at most ``target`` steps of 1, 2 or 5 times a power of ten."""
    top = max(1, math.ceil(most))
    step = next(m * 10**k for k in range(19) for m in (1, 2, 5) if top / (m * 10**k) <= target)
    return list(range(0, math.ceil(top / step) * step + 1, step))


def histogram_bins(values: Sequence[float], most: int = 12) -> list[tuple[int, float, float]]:
    """(count, start, end) of equal-width bins covering ``values`` (about √n of them)."""
    if not values:
        return []
    low, high = min(values), max(values)
    count = max(1, min(most, math.ceil(math.sqrt(len(values)))))
    if high == low:  # one value: one bin around it
        half = abs(low) * 0.05 or 0.5
        return [(len(values), low - half, high + half)]
    width = (high - low) / count
    counts = [0] * count
    for v in values:
        counts[min(int((v - low) / width), count - 1)] += 1
    return [(n, low + i * width, low + (i + 1) * width) for i, n in enumerate(counts)]


def vein_to_vein(days: Sequence[float]) -> str:
    """Histogram of vein-to-vein times (sample collected -> first dose given)."""
    unit = unit_for(days)
    chart = pygal.Histogram(**_options(
        title=f"Vein-to-vein time ({len(days)} therapies with a first dose)",
        x_title=unit.name, y_title="therapies", show_legend=False,
        value_formatter=lambda n: f"{n:.0f}", x_value_formatter=_number))
    bins = histogram_bins(days)
    if bins:  # pygal cannot place labels on an empty chart
        chart.y_labels = count_ticks(max(n for n, _, _ in bins))
    chart.add("therapies", [(n, unit.of(a), unit.of(b)) for n, a, b in bins])
    return _svg(chart)


def stage_durations(measures: dict[str, Sequence[float]]) -> str:
    """Box plot of each stage's duration across therapies (median, quartiles, range)."""
    unit = unit_for([v for values in measures.values() for v in values])
    chart = pygal.Box(**_options(
        title="Time in each step, across therapies", y_title=unit.name, box_mode="tukey",
        show_legend=False, value_formatter=_number, width=980, height=380))
    chart.x_labels = list(measures)
    for name, values in measures.items():
        chart.add(name, [unit.of(v) for v in values])
    return _svg(chart)


# -- money and stock ------------------------------------------------------------------------

def receivables_ageing(rows: Sequence[dict[str, object]], currency: str) -> str:
    """Outstanding amounts per ageing bucket, stacked by payer, for one currency."""
    payers = sorted({str(r["payer_id"]) for r in rows if r["currency"] == currency})
    chart = pygal.StackedBar(**_options(
        title=f"Outstanding receivables by age ({currency})", x_title="days since the claim",
        y_title=currency, value_formatter=lambda v: f"{v:,.0f}"))
    chart.x_labels = list(AGEING_BUCKETS)
    for payer in payers:
        amounts = {r["ageing_bucket"]: r["outstanding_amount"] for r in rows
                   if r["currency"] == currency and r["payer_id"] == payer}
        chart.add(payer, [None if amounts.get(b) is None else float(str(amounts[b]))
                          for b in AGEING_BUCKETS])
    return _svg(chart)


def doses_by_site(rows: Sequence[dict[str, object]]) -> str:
    """Doses per site, stacked by status (rows: site_id, status, doses)."""
    def site(row: dict[str, object]) -> str:
        return str(row["site_id"] or "not yet placed")

    sites = sorted({site(r) for r in rows})
    statuses = [s for s in STATUS_COLOURS if any(r["status"] == s for r in rows)]
    doses = {(site(r), str(r["status"])): 0 for r in rows}
    for r in rows:
        doses[(site(r), str(r["status"]))] += int(str(r["doses"]))
    style = STYLE.to_dict()
    style["colors"] = tuple(STATUS_COLOURS[s] for s in statuses)
    chart = pygal.HorizontalStackedBar(**_options(
        title="Doses by site and status", style=Style(**style), x_title="doses",
        value_formatter=lambda v: f"{v:.0f}", height=max(220, 90 + 46 * len(sites))))
    chart.x_labels = sites
    if sites:  # pygal cannot place labels on an empty chart
        chart.y_labels = count_ticks(max(sum(n for (s, _), n in doses.items() if s == one)
                                         for one in sites))
    for status in statuses:
        chart.add(status, [doses.get((one, status)) for one in sites])
    return _svg(chart)
