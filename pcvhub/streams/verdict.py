"""Verdicts and rule composition for the gatekeeper.

Every custody rule is a small object with ``check(event, case) -> Verdict``. A refusal
is a value with a machine-readable code and a sentence a person can act on, not a bare
``False``. ``AllOf`` runs rules in order and returns the first refusal; an empty
``AllOf`` refuses everything, so a misconfigured gatekeeper fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pcvhub.streams.case import CaseState
    from pcvhub.streams.event import InboundEvent


@dataclass(frozen=True)
class Verdict:
    """Accept, or refuse with a reason; ``alert`` marks refusals people must see at once."""

    accepted: bool
    code: str = "OK"
    reason: str = ""
    rule: str = ""
    alert: bool = False

    @classmethod
    def accept(cls) -> Verdict:
        return _ACCEPT

    @classmethod
    def refuse(cls, rule: str, code: str, reason: str, *, alert: bool = False) -> Verdict:
        return cls(accepted=False, code=code, reason=reason, rule=rule, alert=alert)


_ACCEPT = Verdict(accepted=True)


class CustodyRule(Protocol):
    """One custody rule. ``name`` appears in refusals (R1..R9)."""

    name: str

    def check(self, event: InboundEvent, case: CaseState) -> Verdict: ...


class EmptyRuleSet(ValueError):
    """Raised when a gatekeeper is built with no rules: it would accept nothing safely."""


class AllOf:
    """Every rule must accept; the first refusal wins. Empty -> refuses everything."""

    name = "AllOf"

    def __init__(self, rules: Sequence[CustodyRule]) -> None:
        self.rules = tuple(rules)

    def check(self, event: InboundEvent, case: CaseState) -> Verdict:
        if not self.rules:
            return Verdict.refuse(
                "AllOf", "NO_RULES",
                "the gatekeeper has no custody rules configured, so it refuses every event; "
                "configure the rule set (pcvhub.streams.rules.default_rules)",
            )
        for rule in self.rules:
            verdict = rule.check(event, case)
            if not verdict.accepted:
                return verdict
        return Verdict.accept()
