"""Where a therapy's chain stands in the projections: its position and its lifecycle.

The stage moves by the one lifecycle fold of the policy table
(``pcvhub.schemas.policy.advance``), the very fold the gatekeeper's case calls, so the
stage a projection reports is the stage the gatekeeper judged by; nothing is restated here.
Repeated doses loop DISPENSED -> ADMINISTERED -> FOLLOW_UP -> DISPENSED.

A fold reads one chain only, and every event of a chain is in one partition of the
canonical topic, so its result does not depend on how partitions interleave: a rebuilt
file has the same stages as the live one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pcvhub.schemas.policy import LifecycleState
from pcvhub.schemas.stages import Stage


@dataclass
class TherapyProgress:
    """What the projection remembers about one chain between events: how many events it
    has, its head, and the lifecycle fold (empty for the registry chain)."""

    chain_seq: int = 0
    head: str = ""  # chain digest (hex) of the last event
    lifecycle: LifecycleState = field(default_factory=LifecycleState)

    @property
    def stage(self) -> Stage:
        return self.lifecycle.stage

    def state_json(self) -> str:
        """What the lifecycle fold remembers, as canonical JSON (sorted keys and members)."""
        return self.lifecycle.state_json()

    @classmethod
    def restore(cls, chain_seq: int, head: str, stage: str, state: str) -> TherapyProgress:
        return cls(chain_seq, head, LifecycleState.restore(stage, state))

    def copy(self) -> TherapyProgress:
        return TherapyProgress(self.chain_seq, self.head, self.lifecycle.copy())
