"""The vault on the hub's log: put and get as an actor, with the therapy's events folded.

:class:`VaultService` is a connector on ``ingress.direct`` acting as one registered actor
(the sequencing lab for a put, the requester for a get). It follows the canonical log
through the one log reader (every event verified before it is folded) and keeps a
:class:`~pcvhub.vault.restore_gate.VaultRecord` per therapy, so a get is judged on what the
log says now: the patient's bound card, their genome-storage consent, the stored root, the
tokens already spent.

A get writes to ``<out>.partial`` and moves it to ``out`` only after the gatekeeper accepted
its ``GenomeRestored``: a restore the hub did not record leaves no file behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pcvhub.config import Settings, load_settings
from pcvhub.connectors.core import Connector, EventRequest
from pcvhub.connectors.outcome import Outcome
from pcvhub.ids import uuid7
from pcvhub.log.verify import VerifiedRecord
from pcvhub.trust.issuer import now_us
from pcvhub.trust.patient_card import ConsentToken
from pcvhub.vault.chunks import DEFAULT_CHUNK_SIZE
from pcvhub.vault.client import SiteClient, SiteUnavailable
from pcvhub.vault.placement import SiteState, place
from pcvhub.vault.remote import GetResult, PutResult, get_from_sites, put_to_sites
from pcvhub.vault.restore_gate import VaultRecord, genome_restored_payload, judge_restore
from pcvhub.vault.site import SiteRegistration


class RestoreDenied(RuntimeError):
    """A get refused before any share was fetched, or not recorded by the hub."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def load_registrations(sites_dir: Path) -> dict[str, SiteRegistration]:
    """The sites' registrations in a directory (one ``<site id>.json`` each)."""
    found = {}
    for path in sorted(sites_dir.glob("*.json")):
        registration = SiteRegistration.load_file(path)
        found[registration.site_id] = registration
    return found


def site_states(registrations: dict[str, SiteRegistration]) -> list[SiteState]:
    """Ask every site for its health (what share control places by)."""
    states = []
    for registration in registrations.values():
        client = SiteClient(registration, timeout=5.0)
        try:
            health = client.health()
            states.append(SiteState(registration.site_id, registration.operator, True,
                                    int(health["free_bytes"])))
        except SiteUnavailable as exc:
            states.append(SiteState(registration.site_id, registration.operator, False, 0,
                                    problem=str(exc)))
        finally:
            client.close()
    return states


class VaultService:
    """Put and get for one actor, on the hub's log (see the module docstring)."""

    def __init__(self, connector: Connector, sites_dir: Path, verdict_timeout: float = 60.0
                 ) -> None:
        self.connector = connector
        self.sites_dir = sites_dir
        self.verdict_timeout = verdict_timeout
        self.records: dict[str, VaultRecord] = {}
        self._lock = threading.Lock()
        connector.watch(self._fold)

    @classmethod
    def open(cls, actor_id: str, site_id: str, sites_dir: Path,
             settings: Settings | None = None, passphrase: bytes | None = None
             ) -> VaultService:
        """As ``actor_id`` (its newest key in the data folder's key store)."""
        return cls(Connector.open(settings or load_settings(), actor_id, "direct",
                                  site_id=site_id, passphrase=passphrase), sites_dir)

    def __enter__(self) -> VaultService:
        self.connector.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.connector.close()

    def _fold(self, record: VerifiedRecord) -> None:
        env = record.envelope
        with self._lock:
            self.records.setdefault(record.event.coi, VaultRecord()).fold(
                record.event_type, record.payload, record.event_id, env.occurred_at_us,
                env.producer, env.key_id)

    def record(self, coi: str) -> VaultRecord:
        with self._lock:
            return self.records.get(coi) or VaultRecord()

    def wait_folded(self, coi: str, holds: Callable[[VaultRecord], bool],
                    timeout: float = 60.0) -> bool:
        """Wait until the therapy's record, as read from the log, satisfies ``holds``."""
        deadline = time.monotonic() + timeout
        while not holds(self.record(coi)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _emit(self, event_type: str, coi: str, payload: dict[str, Any]) -> Outcome:
        event_id = str(uuid7())
        self.connector.expect(event_id)  # so that a refusal is kept for wait_verdict
        self.connector.emit([EventRequest(event_type, coi, payload, event_id=event_id)])
        return self.connector.wait_verdict(event_id, self.verdict_timeout)

    def put(self, file: Path, coi: str, k: int = 2, n: int = 3,
            chunk_size: int = DEFAULT_CHUNK_SIZE,
            on_chunk: Callable[[int], None] | None = None) -> tuple[PutResult, Outcome]:
        """Place, split, upload, commit; then record ``GenomeStored``."""
        registrations = load_registrations(self.sites_dir)
        size = file.stat().st_size
        plan = place(site_states(registrations), n, k, share_bytes=size + size // 8 + 4096)
        with file.open("rb") as source:
            result = put_to_sites(source, coi, [registrations[s.site_id] for s in plan.sites],
                                  k=k, chunk_size=chunk_size, on_chunk=on_chunk)
        return result, self._emit("GenomeStored", coi, result.payload)

    def get(self, coi: str, purpose: str, token: ConsentToken, out: Path,
            on_chunk: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Judge the token on the log, restore to ``out``, record ``GenomeRestored``."""
        record = self.record(coi)
        verdict = judge_restore(record, self.connector.registry, token, coi, purpose,
                                self.connector.actor_id, now_us())
        if not verdict.ok:
            raise RestoreDenied(verdict.code, str(verdict))
        stored = record.latest
        assert stored is not None  # judge_restore refuses NOTHING_STORED
        partial = out.with_name(out.name + ".partial")
        try:
            with partial.open("wb") as sink:
                result: GetResult = get_from_sites(stored, coi,
                                                   load_registrations(self.sites_dir),
                                                   sink.write, token.nonce.hex(), on_chunk)
            bad = [str(b) for b in result.report.bad_shares] + [
                f"site {site}: {why}" for site, why in sorted(result.unreachable.items())]
            payload = genome_restored_payload(stored, token, result.report.size,
                                              result.sites_used, bad)
            outcome = self._emit("GenomeRestored", coi, payload)
            if not outcome.accepted:
                raise RestoreDenied(outcome.code or "NOT_RECORDED",
                                    f"the hub did not record the restore: {outcome.reason}")
            partial.replace(out)
            return payload
        finally:
            partial.unlink(missing_ok=True)
