"""The clock the gatekeeper's timer sweep reads (ground floor).

Deadlines (turnaround, dose windows, follow-up) must fire for a therapy nobody writes
to any more: that is the case turnaround monitoring exists for. So the gatekeeper sweeps
every open therapy on *processing* time, not only on the event time of the next event.
In production processing time is the wall clock. The demo and the tests replay weeks of
a therapy in minutes with back-dated events, so they move a **simulation clock**: one
file, ``<data_dir>/simulation-clock``, holding epoch microseconds, written by the driver
and read by every worker of the deployment at each sweep. Event time stays the lower
bound either way (a sweep never judges a partition earlier than its newest event).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

SIMULATION_CLOCK_FILE = "simulation-clock"


class Clock(Protocol):
    def now_us(self) -> int: ...


class WallClock:
    """Processing time is real time."""

    def now_us(self) -> int:
        return time.time_ns() // 1000


class SimulationClock:
    """Processing time is what the simulation driver last wrote (0 before it wrote any:
    then only event time counts)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / SIMULATION_CLOCK_FILE

    def now_us(self) -> int:
        try:
            return int(self.path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def set(self, at_us: int) -> None:
        """Move the clock; atomically, so a worker never reads half a number."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(str(int(at_us)))
        os.replace(partial, self.path)


def clock_for(kind: str, data_dir: Path) -> Clock:
    """The clock named by the ``timer_clock`` setting."""
    return SimulationClock(data_dir) if kind == "simulation" else WallClock()
