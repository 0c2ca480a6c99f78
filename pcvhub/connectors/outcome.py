"""The one answer a connector gives about an input: accepted, refused or pending.

Each protocol says it in its own terms (an HL7 ACK with its ERR segments, a FHIR
OperationOutcome and HTTP status, an entry of a drop folder's result file), but what it
says is one :class:`Outcome`:

* **accepted**: durably in the hub and on the canonical log; *already accepted* is a
  repeat of something accepted before, not written again; an accepted outcome may carry
  warnings (an HL7 ACK AA with ERR severity W);
* **refused**: by which rule (a gatekeeper rule R1..R9, or the connector's own check:
  ``HL7``, ``MLLP``, ``FHIR``, ``AUTH``, ``FILE``, ``X12-835``), with a machine-readable
  code, a sentence a person can act on and every :class:`Problem` found, so that an HL7
  ACK carries one ERR segment per problem and a FHIR OperationOutcome one issue;
* **pending**: written to the hub; the gatekeeper's verdict has not arrived in time.

The gatekeeper judges with its own type, :class:`pcvhub.streams.verdict.Verdict` (the
rules'); a connector reads that verdict back from the log as an Outcome
(``Connector.wait_verdict``), and a refusal a connector writes to the rejected topic
carries an Outcome's rule, code and reason (``Connector.record_refusal``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Outcome", "Problem", "Status"]


class Status(StrEnum):
    """What became of an input; the values are what result files say."""

    ACCEPTED = "accepted"
    ALREADY_ACCEPTED = "already-accepted"  # accepted before: a repeat, not written again
    REFUSED = "refused"
    PENDING = "pending"  # written to the hub, no verdict yet


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is, what is wrong, the protocol's code."""

    where: str  # in the protocol's words: "PID-3.4", "Condition.code", a CSV column; or ""
    what: str  # what is wrong, and what to do about it
    code: str = ""  # the protocol's code: HL7 table 0357 ("101"), a FHIR issue type ("value")
    locator: str = ""  # ``where`` for machines, when it reads otherwise: the HL7 ERL PID^1^3

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" if self.where else self.what


@dataclass(frozen=True)
class Outcome:
    """The hub's answer to one input (see the module doc); build it with the class methods."""

    status: Status
    rule: str = ""  # who refused: a gatekeeper rule (R4) or the connector's check (HL7)
    code: str = ""  # machine-readable reason (OUT_OF_ORDER, HL7_REQUIRED_FIELD_MISSING...)
    reason: str = ""  # for a person: why it was refused, what was done, why it is pending
    problems: tuple[Problem, ...] = ()  # refused: every problem found; accepted: warnings

    @classmethod
    def accept(cls, note: str = "", warnings: Sequence[Problem] = ()) -> Outcome:
        return cls(Status.ACCEPTED, reason=note, problems=tuple(warnings))

    @classmethod
    def already_accepted(cls, note: str = "") -> Outcome:
        return cls(Status.ALREADY_ACCEPTED, reason=note)

    @classmethod
    def refuse(cls, rule: str, code: str, reason: str = "",
               problems: Sequence[Problem] = ()) -> Outcome:
        """A refusal; without a ``reason`` of its own, the problems joined are the reason."""
        return cls(Status.REFUSED, rule, code, reason or "; ".join(str(p) for p in problems),
                   tuple(problems))

    @classmethod
    def pending(cls, reason: str) -> Outcome:
        return cls(Status.PENDING, reason=reason)

    @property
    def accepted(self) -> bool:
        """On the log: accepted now or before."""
        return self.status in (Status.ACCEPTED, Status.ALREADY_ACCEPTED)

    # -- as a drop folder's result file says it -----------------------------------------

    def as_result(self, *, refused_by: str) -> dict[str, Any]:
        """The entry of a result file: ``status``; for a refusal ``refused_by`` (who gave
        this answer: ``gatekeeper`` or ``connector``), ``rule``, ``reason_code`` and
        ``reason``; for a pending one its ``reason``. (Problems are listed by the
        connector, in its own words.)"""
        entry: dict[str, Any] = {"status": self.status.value}
        if self.status is Status.REFUSED:
            entry.update(refused_by=refused_by, rule=self.rule, reason_code=self.code)
        if self.reason and not self.accepted:
            entry["reason"] = self.reason
        return entry

    @classmethod
    def from_result(cls, entry: Mapping[str, Any]) -> Outcome:
        """An entry of a result file read back (what a MES or payer sees)."""
        return cls(Status(entry["status"]), entry.get("rule", ""), entry.get("reason_code", ""),
                   entry.get("reason", ""))
