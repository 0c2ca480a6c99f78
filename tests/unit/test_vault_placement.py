"""Share control: placement by health, capacity and pad budget; no operator holds k shares."""

from __future__ import annotations

import pytest

from pcvhub.vault.placement import (
    Holding,
    PlacementRefused,
    SiteState,
    check_operators,
    operator_holdings,
    place,
)

MIB = 1 << 20


def test_the_site_with_most_pad_then_most_room_comes_first() -> None:
    plan = place([SiteState("a", "op-a", True, 10 * MIB, pad_remaining=5 * MIB),
                  SiteState("b", "op-b", True, 50 * MIB),
                  SiteState("c", "op-c", True, 20 * MIB, pad_remaining=9 * MIB),
                  SiteState("d", "op-d", True, 40 * MIB)], n=3, k=2, share_bytes=MIB,
                 pad_needed=MIB)
    assert [s.site_id for s in plan.sites] == ["c", "a", "b"]


def test_unhealthy_full_and_pad_short_sites_are_left_out_with_reasons() -> None:
    plan = place([SiteState("down", "o1", False, 99 * MIB, problem="connection refused"),
                  SiteState("full", "o2", True, 10),
                  SiteState("dry", "o3", True, 99 * MIB, pad_remaining=5),
                  SiteState("x", "o4", True, 9 * MIB), SiteState("y", "o5", True, 9 * MIB),
                  SiteState("z", "o6", True, 9 * MIB)], n=3, k=2, share_bytes=MIB,
                 pad_needed=MIB)
    assert [s.site_id for s in plan.sites] == ["x", "y", "z"]
    assert "connection refused" in plan.left_out["down"]
    assert "bytes free" in plan.left_out["full"] and "pad budget" in plan.left_out["dry"]


def test_no_operator_gets_k_shares_even_when_its_sites_rank_first() -> None:
    sites = [SiteState("big-1", "bigcloud", True, 90 * MIB),
             SiteState("big-2", "bigcloud", True, 80 * MIB),
             SiteState("big-3", "bigcloud", True, 70 * MIB),
             SiteState("uni", "university", True, 10 * MIB),
             SiteState("hosp", "hospital", True, 5 * MIB)]
    plan = place(sites, n=3, k=2, share_bytes=MIB)
    assert [s.site_id for s in plan.sites] == ["big-1", "uni", "hosp"]
    assert "bigcloud already holds 1" in plan.left_out["big-2"]
    with pytest.raises(PlacementRefused, match="needs 4 sites, 3 qualify"):
        place(sites, n=4, k=2, share_bytes=MIB)
    # 3-of-5: one operator may hold two shares, never three
    plan = place(sites + [SiteState("lab", "lab", True, MIB)], n=5, k=3, share_bytes=1)
    assert sum(s.operator == "bigcloud" for s in plan.sites) == 2


def test_an_operator_running_m_servers_of_a_resplit_share_holds_that_share() -> None:
    holdings = [Holding("op-a", "a1", 1),
                Holding("op-b", "b1", 2, sub_threshold=2, part=1),
                Holding("op-a", "a2", 2, sub_threshold=2, part=2),
                Holding("op-a", "a3", 2, sub_threshold=2, part=3),
                Holding("op-c", "c1", 3)]
    assert operator_holdings(holdings)["op-a"] == {1, 2}
    with pytest.raises(PlacementRefused, match="operator op-a would hold shares \\[1, 2\\]"):
        check_operators(holdings, k=2)
    check_operators(holdings, k=3)  # two of three is not enough for 3-of-n
