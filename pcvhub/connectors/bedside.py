"""Bedside identity checks: per dose, the latest scan a DoseAdministered must name."""

from __future__ import annotations

import threading
from typing import Any

from pcvhub.schemas.envelope import Envelope

__all__ = ["BedsideChecks"]


class BedsideChecks:
    """The latest bedside identity check (IdentityVerified, BEDSIDE, MATCH) per dose.

    A DoseAdministered must name the check done right before it; the scanner at the
    bedside records that check on its own, so the connector learns it from the log.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], str] = {}

    def observe(self, env: Envelope, kind: str, payload: dict[str, Any] | None) -> None:
        if kind != "IdentityVerified" or payload is None:
            return
        if payload["step"] == "BEDSIDE" and payload["result"] == "MATCH" and payload["dose_id"]:
            with self._lock:
                self._latest[(env.coi, payload["dose_id"])] = env.event_id

    def latest(self, coi: str, dose_id: str) -> str | None:
        with self._lock:
            return self._latest.get((coi, dose_id))
