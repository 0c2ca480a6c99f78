"""The outside systems' side of each connector protocol, and the demo's view of the log.

* :class:`MllpClient` — the EMR's interface engine: HL7 v2 over MLLP with a TLS client
  certificate issued over its registered key; one message, one ACK.
* :class:`FhirClient` — the EMR's FHIR client: POSTs resources with short-lived bearer
  tokens signed by its registered key.
* :class:`DropFolder` — a MES, LIMS or payer writing files into a watched folder and
  reading the connector's result file.
* :class:`LogWatch` — follows the canonical, rejected and alerts topics of the run: which
  events were accepted or refused (and why: the connectors'
  :class:`~pcvhub.connectors.outcome.Outcome`), which alerts were raised, and folds each
  therapy's accepted events into the demo's copy of its case.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pcvhub.config import Settings
from pcvhub.connectors.callers import issue_token
from pcvhub.connectors.hl7.listener import frame
from pcvhub.connectors.outcome import Outcome
from pcvhub.demo.messages import Ack
from pcvhub.log.reader import LogFollower, deployment_verifier
from pcvhub.log.verify import ALERTS, CANONICAL, REJECTED, VerifiedRecord
from pcvhub.streams.event import InboundEvent
from pcvhub.topics import Principal
from pcvhub.trust.registry import REGISTRY_COI
from pcvhub.trust.signing import EventSigner


class DemoError(RuntimeError):
    """Something the demo relies on did not happen; the message says what and where."""


# -- HL7 v2 over MLLP ------------------------------------------------------------------------


class MllpClient:
    """A blocking MLLP client over mutual TLS: one frame out, one ACK back."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext,
                 timeout: float = 60.0) -> None:
        self._address = (host, port)
        self._context = context
        self._timeout = timeout
        self._sock: ssl.SSLSocket | None = None
        self._buffer = b""

    def _connect(self) -> ssl.SSLSocket:
        if self._sock is None:
            raw = socket.create_connection(self._address, timeout=self._timeout)
            self._sock = self._context.wrap_socket(raw, server_hostname=self._address[0])
        return self._sock

    def send(self, message: str) -> Ack:
        sock = self._connect()
        sock.sendall(frame(message))
        while b"\x1c\x0d" not in self._buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise DemoError(f"the MLLP listener at {self._address[0]}:{self._address[1]} "
                                "closed the connection before it answered")
            self._buffer += chunk
        end = self._buffer.index(b"\x1c\x0d")
        answer, self._buffer = self._buffer[1:end], self._buffer[end + 2:]
        return Ack.parse(answer.decode())

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def tls_context(ca_file: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """Trust the deployment's CA; present a client certificate if given."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if client is not None:
        context.load_cert_chain(*client)
    return context


# -- FHIR R4 ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    """A POSTed resource the endpoint recorded: its event id and therapy."""

    event_id: str
    coi: str


class FhirClient:
    """POSTs FHIR resources as one registered caller (bearer token per request)."""

    def __init__(self, base_url: str, caller: EventSigner, context: ssl.SSLContext) -> None:
        self.base_url = base_url
        self.caller = caller
        self._http = httpx.Client(base_url=base_url, verify=context, timeout=60)

    def create(self, resource: dict[str, Any]) -> Created:
        kind = resource["resourceType"]
        answer = self._http.post(f"/{kind}", content=json.dumps(resource).encode(), headers={
            "Authorization": f"Bearer {issue_token(self.caller, self.base_url)}",
            "Content-Type": "application/fhir+json"})
        if answer.status_code != 201:
            raise DemoError(f"POST {self.base_url}/{kind} answered {answer.status_code}: "
                            f"{answer.text[:500]}")
        return Created(answer.json()["id"], answer.headers["X-Pcvhub-Therapy"])

    def close(self) -> None:
        self._http.close()


# -- drop folders ---------------------------------------------------------------------------


class DropFolder:
    """A folder a connector watches: files written whole, result files read back."""

    def __init__(self, folder: Path, timeout: float = 120.0) -> None:
        self.folder = folder
        self.timeout = timeout

    def drop(self, name: str, content: bytes) -> dict[str, Any]:
        """Write ``name`` (hidden, then renamed, as a well-behaved exporter does) and wait
        for the connector's result file."""
        hidden = self.folder / f".{name}"
        hidden.write_bytes(content)
        hidden.rename(self.folder / name)
        deadline = time.monotonic() + self.timeout
        while True:
            for where in ("done", "failed"):
                result = self.folder / where / f"{name}.result.json"
                if result.exists():
                    return json.loads(result.read_text())
            if time.monotonic() > deadline:
                raise DemoError(f"no result file for {self.folder / name} within "
                                f"{self.timeout:.0f} s: is the connector watching the folder?")
            time.sleep(0.05)


# -- the log ----------------------------------------------------------------------------------


ACCEPTED = Outcome.accept()


@dataclass(frozen=True)
class RejectedRecord:
    """A record of the rejected topic (the gatekeeper's or a connector's): what it refused
    and why (``outcome``), who recorded it, the original bytes."""

    coi: str
    event_id: str | None
    event_type: str | None
    outcome: Outcome
    recorded_by: str
    original: bytes


@dataclass(frozen=True)
class Alert:
    coi: str
    severity: str
    rule: str
    code: str
    message: str
    subject: str


class LogWatch:
    """Follows this run's canonical, rejected and alerts topics (see the module doc)."""

    def __init__(self, settings: Settings) -> None:
        self._changed = threading.Condition()
        self.answers: dict[str, Outcome] = {}
        self.refusals: list[RejectedRecord] = []
        self.alerts: list[Alert] = []
        self.accepted = 0
        self._folds: dict[str, Callable[[InboundEvent], None]] = {}
        self._unclaimed: dict[str, list[InboundEvent]] = {}  # therapies nobody follows yet
        self._on_accept: list[Callable[[InboundEvent], None]] = []
        # One verifier for the three topics: one registry, folded from the trust anchor.
        self.settings = settings = settings.as_principal(Principal.READER)  # it only watches
        self.verifier = deployment_verifier(settings, "demo log watch")
        self._followers = [
            LogFollower(settings, [CANONICAL], self.verifier, self._event, name="demo-events"),
            LogFollower(settings, [REJECTED], self.verifier, self._refusal, name="demo-refusals"),
            LogFollower(settings, [ALERTS], self.verifier, self._alert, name="demo-alerts"),
        ]

    def start(self, timeout: float = 60.0) -> LogWatch:
        for follower in self._followers:
            follower.start()
        for follower in self._followers:
            if not follower.wait_caught_up(timeout):
                raise DemoError(f"could not read {', '.join(follower.suffixes)} within "
                                f"{timeout:.0f} s")
        return self

    def stop(self) -> None:
        for follower in self._followers:
            follower.stop()
        self.verifier.close()

    def on_accept(self, callback: Callable[[InboundEvent], None]) -> None:
        self._on_accept.append(callback)

    def follow(self, coi: str, fold: Callable[[InboundEvent], None]) -> None:
        """Fold every accepted event of ``coi`` (those already read first, in log order)."""
        with self._changed:
            self._folds[coi] = fold
            earlier = self._unclaimed.pop(coi, [])
        for event in earlier:
            fold(event)

    # -- the followers' callbacks (each in its follower's thread) ---------------------------

    def _event(self, record: VerifiedRecord) -> None:
        event, env = record.event, record.envelope
        with self._changed:
            fold = self._folds.get(env.coi)
            if fold is None and env.coi != REGISTRY_COI:
                self._unclaimed.setdefault(env.coi, []).append(event)
        if fold is not None:
            fold(event)  # before the answer is visible: a waiter sees the folded case
        for callback in self._on_accept:
            callback(event)
        with self._changed:
            self.answers[env.event_id] = ACCEPTED
            self.accepted += 1
            self._changed.notify_all()

    def _refusal(self, record: VerifiedRecord) -> None:
        env, p = record.envelope, record.payload
        refusal = RejectedRecord(env.coi, p.get("rejected_event_id"),
                                 p.get("rejected_event_type"),
                                 Outcome.refuse(p["rule"], p["reason_code"], p["reason"]),
                                 env.producer, bytes(p["original"]))
        with self._changed:
            self.refusals.append(refusal)
            if refusal.event_id is not None and refusal.event_id not in self.answers:
                self.answers[refusal.event_id] = refusal.outcome
            self._changed.notify_all()

    def _alert(self, record: VerifiedRecord) -> None:
        env, p = record.envelope, record.payload
        with self._changed:
            self.alerts.append(Alert(env.coi, str(p["severity"]), p["rule"], p["code"],
                                     p["message"], p["subject_event_id"]))
            self._changed.notify_all()

    # -- waiting --------------------------------------------------------------------------

    def wait(self, event_ids: Iterable[str], timeout: float = 120.0) -> dict[str, Outcome]:
        """The answer to each event, once the hub gave them all; DemoError on timeout."""
        wanted = set(event_ids)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                missing = wanted - self.answers.keys()
                if not missing:
                    return {i: self.answers[i] for i in wanted}
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DemoError(f"the hub did not answer {len(missing)} event(s) within "
                                    f"{timeout:.0f} s (e.g. {sorted(missing)[0]}): is the "
                                    "gatekeeper (`pcvhub worker`) running? see its log")
                self._changed.wait(remaining)

    def wait_for_alert(self, coi: str, code: str, timeout: float) -> Alert | None:
        """The first alert ``code`` raised for therapy ``coi``, once it is on the alerts
        topic; None if none arrived within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((a for a in self.alerts if (a.coi, a.code) == (coi, code)), None)
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    return found
                self._changed.wait(remaining)

    def alerts_about(self, subjects: set[str]) -> list[Alert]:
        with self._changed:
            return [a for a in self.alerts if a.subject in subjects]
