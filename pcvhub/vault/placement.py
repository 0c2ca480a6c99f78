"""Share control: which site keeps which share, and the rule that no operator holds k.

:func:`place` ranks the candidate sites (healthy first, then by the key material left on
their one-time-pad link, then by free capacity, as the source system placed each share at
the site whose link had the most key left) and takes n of them, skipping any site that
would give one operator k shares. :func:`operator_holdings` is the check itself, also over
sub-shares: after a share is re-split m-of-j across servers, an operator that runs m of
those servers can rebuild that share, so it counts as holding it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field


class PlacementRefused(RuntimeError):
    """No placement satisfies capacity, health, pad budget and the operator rule."""


@dataclass(frozen=True)
class SiteState:
    """What share control knows of one site when it places a put."""

    site_id: str
    operator: str
    healthy: bool
    free_bytes: int
    pad_remaining: int | None = None  # None: no one-time-pad link to this site (HPKE only)
    problem: str = ""  # why it is unhealthy, as the health check saw it


@dataclass(frozen=True)
class Holding:
    """One piece of one share at one server: the whole share, or sub-share ``part`` of an
    m-of-j re-split (``sub_threshold`` = m)."""

    operator: str
    server: str
    share_index: int
    sub_threshold: int | None = None
    part: int | None = None


@dataclass
class Plan:
    """The chosen sites in share order (share index i -> ``sites[i - 1]``) and why the
    others were left out."""

    sites: list[SiteState]
    left_out: dict[str, str] = field(default_factory=dict)


def operator_holdings(holdings: Iterable[Holding]) -> dict[str, set[int]]:
    """The share indices each operator can rebuild on its own servers."""
    whole: dict[str, set[int]] = defaultdict(set)
    parts: dict[tuple[str, int], set[int]] = defaultdict(set)
    thresholds: dict[int, int] = {}
    for h in holdings:
        if h.sub_threshold is None:
            whole[h.operator].add(h.share_index)
        else:
            parts[(h.operator, h.share_index)].add(h.part if h.part is not None else -1)
            thresholds[h.share_index] = h.sub_threshold
    for (operator, share), held in parts.items():
        if len(held) >= thresholds[share]:
            whole[operator].add(share)
        else:
            whole.setdefault(operator, set())
    return dict(whole)


def check_operators(holdings: Iterable[Holding], k: int) -> None:
    """Raise :class:`PlacementRefused` if any operator can rebuild k shares."""
    over = {op: sorted(shares) for op, shares in operator_holdings(holdings).items()
            if len(shares) >= k}
    if over:
        raise PlacementRefused("; ".join(
            f"operator {op} would hold shares {shares} ({len(shares)} >= k = {k}) and could "
            f"rebuild the file alone" for op, shares in sorted(over.items())))


def place(candidates: Iterable[SiteState], n: int, k: int, share_bytes: int,
          pad_needed: int = 0) -> Plan:
    """Choose n sites for a put whose every share takes ``share_bytes`` at its site (and
    ``pad_needed`` pad bytes on a site's link, if it has one)."""
    plan = Plan([])
    ranked: list[SiteState] = []
    for site in candidates:
        if not site.healthy:
            plan.left_out[site.site_id] = f"unhealthy: {site.problem or 'no answer'}"
        elif site.free_bytes < share_bytes:
            plan.left_out[site.site_id] = (f"{site.free_bytes:,} bytes free, a share needs "
                                           f"{share_bytes:,}")
        elif site.pad_remaining is not None and site.pad_remaining < pad_needed:
            plan.left_out[site.site_id] = (f"pad budget {site.pad_remaining:,} bytes, the put "
                                           f"needs {pad_needed:,}")
        else:
            ranked.append(site)
    # most key material first, then most room; ties by id so a placement can be repeated
    ranked.sort(key=lambda s: (-(s.pad_remaining or 0), -s.free_bytes, s.site_id))
    per_operator: Counter[str] = Counter()
    for site in ranked:
        if len(plan.sites) == n:
            break
        if per_operator[site.operator] + 1 >= k:
            plan.left_out[site.site_id] = (f"operator {site.operator} already holds "
                                           f"{per_operator[site.operator]} of k = {k} shares")
            continue
        per_operator[site.operator] += 1
        plan.sites.append(site)
    if len(plan.sites) < n:
        reasons = "; ".join(f"{s}: {why}" for s, why in sorted(plan.left_out.items()))
        raise PlacementRefused(f"a {k}-of-{n} put needs {n} sites, {len(plan.sites)} "
                               f"qualify ({', '.join(s.site_id for s in plan.sites) or 'none'})"
                               f"; left out: {reasons or 'no other candidates'}")
    check_operators((Holding(s.operator, s.site_id, i)
                     for i, s in enumerate(plan.sites, start=1)), k)
    return plan

