"""UUIDv7 event ids sort by time; CoI ids carry a check character that catches typos."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from pcvhub.ids import is_valid_coi, new_coi, uuid7


def test_uuid7_layout_and_order() -> None:
    first, second = uuid7(1_700_000_000_000), uuid7(1_700_000_000_001)
    assert first.version == 7 and first.variant == uuid.RFC_4122
    assert first.int >> 80 == 1_700_000_000_000
    assert str(first) < str(second)
    assert len({uuid7(5) for _ in range(1000)}) == 1000


def test_coi_round_trip() -> None:
    coi = new_coi("Tokyo Central 1", year=2026)
    assert coi.startswith("PCV-TOKYOCENTRAL-2026-")
    assert is_valid_coi(coi)


@given(st.integers(min_value=4, max_value=24), st.sampled_from("0123456789ABCDEF"))
def test_a_single_mistyped_character_is_caught(position: int, replacement: str) -> None:
    coi = new_coi("SITE1", year=2026)
    if position >= len(coi) - 1 or coi[position] in "-" or coi[position] == replacement:
        return
    typo = coi[:position] + replacement + coi[position + 1:]
    assert not is_valid_coi(typo)
