"""`pcvhub demo`: the whole hub, driven end to end by a synthetic cohort (top floor).

``run_demo(console, patients=50)`` starts the broker (if none answers), the gatekeeper,
the projection runner and the connectors, drives every patient's therapy through the
connectors' real protocols with the faults the hub must catch, and prints a summary.

The modules: :mod:`~pcvhub.demo.therapy` (what each step of a therapy says and who signs
it; the unit tests build therapies with it too), :mod:`~pcvhub.demo.cohort` (the
patients, their timelines and faults), :mod:`~pcvhub.demo.messages` (HL7, FHIR, MES CSV
and X12 835 as the outside systems write them), :mod:`~pcvhub.demo.clients` (the
protocols' client side and the demo's view of the log), :mod:`~pcvhub.demo.deployment`
(keys, anchor, CA, actors), :mod:`~pcvhub.demo.stack` (the processes),
:mod:`~pcvhub.demo.driver` (the therapies, day by day), :mod:`~pcvhub.demo.custody_faults`
(the custody and release faults it injects), :mod:`~pcvhub.demo.summary`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from pcvhub.config import Settings


def run_demo(console: Console, patients: int = 50, keep_running: bool = False, *,
             settings: Settings | None = None, data_dir: Path | None = None,
             topic_prefix: str | None = None) -> int:
    """Run the demo; the exit code (0: every therapy completed, every fault caught, nothing
    refused without a reason the demo injected). See :func:`pcvhub.demo.run.run`."""
    # Imported here: the therapy builder in this package is used by the unit tests, which
    # must not pull in the whole running hub (connectors, HTTP clients) to build events.
    from pcvhub.demo.run import run

    return run(console, patients, keep_running, settings=settings, data_dir=data_dir,
               topic_prefix=topic_prefix)


__all__ = ["run_demo"]
