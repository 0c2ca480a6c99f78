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
    MODEL_HASH,
    NIL_UUID,
    QC_STEPS,
    RECIPE_STEPS,
    SITE,
    T0_US,
    Hub,
    Party,
    TherapyScenario,
    decode_inbound,
    happy_path,
)
from pcvhub.streams.event import InboundEvent
from pcvhub.streams.verdict import Verdict

__all__ = ["APPROVED", "CAST", "DAY_US", "HAPPY_PATH", "MODEL_HASH", "NIL_UUID", "QC_STEPS",
           "RECIPE_STEPS", "SITE", "T0_US", "Hub", "Party", "TherapyScenario", "decode_inbound",
           "happy_path", "refused"]


def refused(verdict: Verdict, rule: str, code: str, event: InboundEvent) -> Verdict:
    """The verdict is a refusal by ``rule`` with ``code`` whose sentence names the event."""
    assert not verdict.accepted, f"expected a refusal of {event.event_type}"
    assert (verdict.rule, verdict.code) == (rule, code), verdict
    assert event.event_id in verdict.reason, verdict.reason
    return verdict

