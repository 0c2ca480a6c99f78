"""A whole, valid therapy built step by step from real signed events (for the tests).

The builder lives in :mod:`pcvhub.demo.therapy`, which the demo drives too, so a therapy
is built one way everywhere; this module keeps the names the tests and benchmarks import.
"""

from __future__ import annotations

from pcvhub.demo.therapy import (
    APPROVED,
    CAST,
    DAY_US,
    HAPPY_PATH,
    NIL_UUID,
    SITE,
    T0_US,
    Hub,
    Party,
    TherapyScenario,
    decode_inbound,
    happy_path,
)

__all__ = ["APPROVED", "CAST", "DAY_US", "HAPPY_PATH", "NIL_UUID", "SITE", "T0_US", "Hub",
           "Party", "TherapyScenario", "decode_inbound", "happy_path"]
