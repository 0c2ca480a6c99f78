"""Where a therapy stands: a fold of its accepted events, in chain order, one therapy at a time.

The gatekeeper judges events against the therapy's lifecycle (``pcvhub.streams.case``);
the projections only *report* the stage the accepted events reached. Workers do not
import each other, so the stage moves are restated here as a table
(:data:`TRANSITIONS`), over the same stages (``pcvhub.schemas.stages``) and with the same
conditions: a consent moves an enrolled therapy only, a design is approved by its second
different approver, a rejected batch sends the therapy back to APPROVED, only the first
dose shipment and its receipt move the therapy, an outcome recorded while a dose is
dispensed does not skip its administration. Repeated doses loop
DISPENSED -> ADMINISTERED -> FOLLOW_UP -> DISPENSED.

A fold reads one chain only, and every event of a chain is in one partition of the
canonical topic, so its result does not depend on how partitions interleave: a rebuilt
file has the same stages as the live one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pcvhub.schemas.stages import Stage


@dataclass
class TherapyProgress:
    """What the fold remembers about one chain between events."""

    chain_seq: int = 0
    head: str = ""  # chain digest (hex) of the last event
    stage: Stage = Stage.NEW
    approvers: dict[str, list[str]] = field(default_factory=dict)  # design id -> approvers
    doses: list[str] = field(default_factory=list)  # released dose ids
    dose_shipments: list[str] = field(default_factory=list)  # shipments carrying doses

    def state_json(self) -> str:
        """The remembered sets, as canonical JSON (sorted keys and members)."""
        return json.dumps({
            "approvers": {k: sorted(v) for k, v in sorted(self.approvers.items())},
            "doses": sorted(self.doses),
            "dose_shipments": sorted(self.dose_shipments),
        }, sort_keys=True, separators=(",", ":"))

    @classmethod
    def restore(cls, chain_seq: int, head: str, stage: str, state: str) -> TherapyProgress:
        memory = json.loads(state)
        return cls(chain_seq, head, Stage(stage), dict(memory["approvers"]),
                   list(memory["doses"]), list(memory["dose_shipments"]))

    def copy(self) -> TherapyProgress:
        return TherapyProgress(self.chain_seq, self.head, self.stage,
                               {k: list(v) for k, v in self.approvers.items()},
                               list(self.doses), list(self.dose_shipments))


Condition = Callable[[TherapyProgress, Mapping[str, Any], str], bool]


def _at(stage: Stage) -> Condition:
    return lambda progress, payload, producer: progress.stage is stage


def _always(progress: TherapyProgress, payload: Mapping[str, Any], producer: str) -> bool:
    return True


def _second_approver(progress: TherapyProgress, payload: Mapping[str, Any],
                     producer: str) -> bool:
    return len(set(progress.approvers.get(payload["design_id"], ()))) >= 2


def _released(progress: TherapyProgress, payload: Mapping[str, Any], producer: str) -> bool:
    return payload["disposition"] == "RELEASED"


def _first_dose_shipment(progress: TherapyProgress, payload: Mapping[str, Any],
                         producer: str) -> bool:
    return progress.stage is Stage.RELEASED and payload["shipment_id"] in progress.dose_shipments


def _first_dose_receipt(progress: TherapyProgress, payload: Mapping[str, Any],
                        producer: str) -> bool:
    return progress.stage is Stage.SHIPPED and payload["shipment_id"] in progress.dose_shipments


def _not_mid_dose(progress: TherapyProgress, payload: Mapping[str, Any], producer: str) -> bool:
    return progress.stage is not Stage.DISPENSED


@dataclass(frozen=True)
class Move:
    """An event type's effect on the stage: ``to`` when ``when`` holds, else ``otherwise``."""

    to: Stage
    when: Condition = _always
    otherwise: Stage | None = None


TRANSITIONS: dict[str, Move] = {
    "PatientEnrolled": Move(Stage.ENROLLED),
    "ConsentGranted": Move(Stage.CONSENTED, _at(Stage.ENROLLED)),
    "TherapyOrdered": Move(Stage.ORDERED),
    "SampleCollected": Move(Stage.COLLECTED, _at(Stage.ORDERED)),
    "SampleReceived": Move(Stage.RECEIVED_AT_LAB, _at(Stage.COLLECTED)),
    "SequencingCompleted": Move(Stage.SEQUENCED),
    "NeoantigenDesignProduced": Move(Stage.DESIGNED),
    "DesignApproved": Move(Stage.APPROVED, _second_approver),
    "ManufacturingStarted": Move(Stage.MANUFACTURING),
    "QcResultRecorded": Move(Stage.QC),
    "BatchDispositioned": Move(Stage.RELEASED, _released, otherwise=Stage.APPROVED),
    "ShipmentDispatched": Move(Stage.SHIPPED, _first_dose_shipment),
    "ShipmentReceived": Move(Stage.RECEIVED_AT_SITE, _first_dose_receipt),
    "InventoryPlaced": Move(Stage.PLACED, _at(Stage.RECEIVED_AT_SITE)),
    "DoseDispensed": Move(Stage.DISPENSED),
    "DoseAdministered": Move(Stage.ADMINISTERED),
    "OutcomeRecorded": Move(Stage.FOLLOW_UP, _not_mid_dose),
}


def _remember(progress: TherapyProgress, event_type: str, payload: Mapping[str, Any],
              producer: str) -> None:
    """Record what later conditions need, before the stage moves (as the gatekeeper does)."""
    if event_type == "DesignApproved":
        approvers = progress.approvers.setdefault(payload["design_id"], [])
        if producer not in approvers:
            approvers.append(producer)
    elif event_type == "BatchDispositioned" and payload["disposition"] == "RELEASED":
        progress.doses.extend(d for d in payload["dose_ids"] if d not in progress.doses)
    elif event_type == "ShipmentDispatched":
        if any(item in progress.doses for item in payload["item_ids"]):
            progress.dose_shipments.append(payload["shipment_id"])


def advance(progress: TherapyProgress, event_type: str, payload: Mapping[str, Any],
            producer: str) -> Stage | None:
    """Fold one accepted therapy event; return the stage it entered, or None if unchanged."""
    _remember(progress, event_type, payload, producer)
    move = TRANSITIONS.get(event_type)
    if move is None:
        return None
    target = move.to if move.when(progress, payload, producer) else move.otherwise
    if target is None or target is progress.stage:
        return None
    progress.stage = target
    return target
