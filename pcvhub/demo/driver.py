"""Drives each therapy of the cohort through the connectors' real protocols.

Who sends what (the same split a real deployment has):

* the hospital's EMR: admissions, diagnoses, orders and administrations as HL7 v2 over
  MLLP (mutual TLS); consents and outcome assessments as FHIR R4 (bearer tokens);
* partners that produce directly onto ``ingress.direct``, each signing with its own key:
  the physician's eligibility decision, the nurse's sample collection and bedside scans,
  the sequencing lab, the design service, the tumour board's approvers, the qualified
  person, the courier, the pharmacy and the billing office;
* the plant's MES / LIMS: batch start, manufacturing steps and QC results as CSV files in
  the drop folder;
* the payer: an X12 835 remittance in the payer's inbox, answering the 837P the hub wrote.

Event time. The whole cohort moves one simulated day at a time: every therapy does that
day's steps (in parallel across therapies), and the next day starts once the hub has
answered all of them. The gatekeeper's turnaround timers run on processing time, never
earlier than the event time it has seen per partition; keeping the cohort in step means
no therapy is judged against another therapy's later day (which would raise alerts no one
caused). Processing time is the deployment's simulation clock (``pcvhub.clock``), which
the driver moves to the start of each simulated day: that is how the stalled referral's
turnaround deadline passes, and its alert is raised, while nobody writes for it.

Chain heads. Every event names the previous accepted event of its therapy (R3). Events a
run signs itself are chained by the demo's copy of the case (``TherapyScenario``, judged
locally with the gatekeeper's rules before sending, and folded from the log for what the
connectors wrote). Before a connector writes after someone else, the run waits until the
hub has answered the earlier events and then ``HANDOFF_S`` more, so the connector, which
follows the log on its own, names the same head.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from pcvhub.clock import SimulationClock
from pcvhub.connectors.identity import deterministic_event_id
from pcvhub.connectors.outcome import Outcome
from pcvhub.connectors.payer import ClaimOutbox, ClaimRecord
from pcvhub.connectors.writer import IngressWriter
from pcvhub.demo import custody_faults, messages
from pcvhub.demo.clients import (
    Alert,
    DemoError,
    DropFolder,
    FhirClient,
    LogWatch,
    MllpClient,
    tls_context,
)
from pcvhub.demo.cohort import Cohort, Fault, Patient
from pcvhub.demo.deployment import (
    CONNECTOR,
    EMR,
    PAYER,
    PROVIDER,
    SITE,
    UNREGISTERED,
    Deployment,
)
from pcvhub.demo.therapy import DAY_US, Party, TherapyScenario
from pcvhub.ids import uuid7
from pcvhub.schemas.envelope import SignatureMeaning
from pcvhub.streams.case import AlertStatus, CaseState
from pcvhub.streams.event import InboundEvent
from pcvhub.streams.gatekeeper import alert_id
from pcvhub.times import utc_iso
from pcvhub.trust.issuer import IssuedEvent, now_us
from pcvhub.trust.patient_card import PatientCard

#: who writes an event: the demo itself (ingress.direct) or one of the connectors
DIRECT, HL7, FHIR, FILES = "direct", "hl7", "fhir", "files"
#: after the hub answered, how long a connector (following the log on its own) may take to
#: see the same answer; its follower polls every 0.2 s
HANDOFF_S = 0.6
TICK_US = 5 * 60 * 1_000_000  # steps of one visit are five minutes apart
#: the turnaround alert of a sample that never becomes a design (``pcvhub.streams.timers``)
STALL_ALERT = "TAT_SAMPLE_TO_DESIGN"
#: how long the sweep (every ``timer_sweep_seconds``) may take to notice the passed deadline
STALL_ALERT_WAIT_S = 90.0
DOSE_PRICE = Decimal("62500.00")
_COI = re.compile(r"PCV-[A-Z0-9]+-\d{4}-[0-9A-F]{12}[0-9A-Z]")


@dataclass
class CaughtFault:
    """An injected fault and what the hub answered (filled in when the answer arrives)."""

    fault: Fault
    patient: str
    coi: str
    injected: str
    expected_code: str
    catcher: str  # who must catch it: "gatekeeper R5", "MLLP listener: ACK AE"...
    caught_by: str = ""
    code: str = ""
    reason: str = ""
    caught: bool = False
    event_id: str | None = None

    @property
    def answered(self) -> bool:
        return bool(self.code)

    def resolve_by_alert(self, alert: Alert | None) -> None:
        """A fault no event carries (a stalled therapy): caught by the alert it must raise."""
        self.caught = alert is not None and alert.code == self.expected_code
        self.caught_by = self.catcher if self.caught else "nobody: no alert was raised"
        if alert is not None:
            self.code, self.reason = alert.code, alert.message

    def resolve(self, answer: Outcome) -> None:
        self.caught = not answer.accepted and answer.code == self.expected_code
        self.caught_by = self.catcher if self.caught else (
            "nobody: the hub accepted it" if answer.accepted else "the hub, for another reason")
        self.code, self.reason = answer.code or "ACCEPTED", answer.reason


@dataclass
class World:
    """What every therapy run shares: identities, the connectors' addresses, the log."""

    deployment: Deployment
    cohort: Cohort
    start_us: int  # midnight (UTC) of cohort day 0
    watch: LogWatch
    mllp: tuple[str, int]
    fhir_url: str
    mes: DropFolder
    payer_inbox: DropFolder
    outbox: Path
    direct: IngressWriter = field(init=False)
    cast: dict[str, Party] = field(init=False)
    rogue: Party = field(init=False)  # keys no registrar ever registered
    mllp_tls: ssl.SSLContext = field(init=False)  # the EMR's client certificate
    https_tls: ssl.SSLContext = field(init=False)
    faults: list[CaughtFault] = field(default_factory=list)
    #: event ids the demo sent to be refused, and control ids a connector must refuse
    expected_refusals: set[str] = field(default_factory=set)
    expected_connector_refusals: set[str] = field(default_factory=set)
    #: (therapy, alert code) the hub must raise with no event to answer: the stalled one
    expected_alerts: set[tuple[str, str]] = field(default_factory=set)
    mes_exports: dict[int, MesExport] = field(default_factory=dict)  # by cohort day
    #: each patient's card (by patient index), as ``issue_wallets`` made it
    wallets: dict[int, PatientCard] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.direct = IngressWriter(self.deployment.settings, DIRECT)
        self.cast = self.deployment.cast()
        self.rogue = Party.new(UNREGISTERED.actor_id, UNREGISTERED.roles, UNREGISTERED.site)
        ca = self.deployment.ca.cert_path
        self.mllp_tls = tls_context(ca, self.deployment.client_files(EMR))
        self.https_tls = tls_context(ca)

    def record(self, fault: CaughtFault, refused_id: str | None = None,
               connector_control_id: str | None = None) -> CaughtFault:
        with self._lock:
            self.faults.append(fault)
            if refused_id is not None:
                self.expected_refusals.add(refused_id)
            if connector_control_id is not None:
                self.expected_connector_refusals.add(connector_control_id)
        return fault

    def close(self) -> None:
        self.direct.close()


def biometric_template(patient: Patient) -> bytes:
    """The stand-in for the fingerprint template enrolled on a patient's card."""
    return f"fingerprint minutiae of {patient.tag}".encode()


def wallet_pin(patient: Patient) -> bytes:
    """The PIN the patient chose for their wallet (a demo stand-in: derived from the tag)."""
    return f"pin-{patient.tag}".encode()


def wallet_folder(deployment: Deployment, patient: Patient) -> Path:
    """Where the patient's wallet lives: under the run folder, never the hub's key store."""
    return deployment.run_dir / "wallets" / patient.tag


def issue_wallets(deployment: Deployment, cohort: Cohort) -> dict[int, PatientCard]:
    """Give every patient a card whose key only the card holds, saved as the patient's wallet
    under their PIN, and have the registrar register its key as a PATIENT actor (sent with
    the other registrations); a nurse binds it to the therapy at enrolment."""
    wallets: dict[int, PatientCard] = {}
    for patient in cohort.therapies:
        card = PatientCard.issue(SITE, biometric_template(patient),
                                 card_id=f"CARD-{patient.tag}")
        card.save(wallet_folder(deployment, patient), wallet_pin(patient),
                  utc_iso(now_us(), "microseconds"))
        deployment.hub.register_patient(card)
        wallets[patient.index] = card
    return wallets


class MesExport:
    """The plant's export of one simulated day: one CSV file with the rows of every batch
    worked on that day, as a MES writes its daily batch-record export.

    Each therapy with a manufacturing step that day submits its rows and waits; the last
    one to arrive drops the file and shares out the connector's result file. Rows of
    different therapies are judged side by side; a therapy's own rows one after another.
    """

    def __init__(self, folder: DropFolder, name: str, participants: int) -> None:
        self.folder = folder
        self.name = name
        self._changed = threading.Condition()
        self._rows: list[dict[str, Any]] = []
        self._waiting = participants
        self._result: dict[str, Any] | None = None
        self._error: Exception | None = None

    def submit(self, rows: list[dict[str, Any]], timeout: float = 300.0
               ) -> list[dict[str, Any]]:
        """Add this therapy's rows; return their entries of the result file."""
        with self._changed:
            self._rows += rows
        self._arrive()
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._result is None and self._error is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DemoError(f"the MES export {self.name} was not processed within "
                                    f"{timeout:.0f} s")
                self._changed.wait(remaining)
            if self._error is not None:
                raise DemoError(f"the MES export {self.name} failed: {self._error}")
            assert self._result is not None
            cois = {row["coi"] for row in rows}
            return [r for r in self._result["results"] if r.get("coi") in cois]

    def abandon(self) -> None:
        """A therapy that will not submit (it broke earlier that day)."""
        self._arrive()

    def _arrive(self) -> None:
        with self._changed:
            self._waiting -= 1
            last, rows = self._waiting == 0, list(self._rows)
        if not last:
            return
        result: dict[str, Any] | None = None
        error: Exception | None = None
        try:
            result = self.folder.drop(self.name, messages.mes_file(rows)) if rows \
                else {"results": []}
            if result.get("error"):
                raise DemoError(str(result["error"]))
        except Exception as exc:  # every waiting therapy hears of it
            error = exc
        with self._changed:
            self._result, self._error = result, error
            self._changed.notify_all()


def hl7_event_id(control_id: str, index: int = 0) -> str:
    """The event id the HL7 connector gives the ``index``-th event of a message."""
    return deterministic_event_id("hl7", messages.SENDING_APPLICATION, SITE, control_id,
                                  str(index))


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


class TherapyRun:
    """One patient's therapy, driven step by step; ``run_day`` does one day's steps."""

    def __init__(self, world: World, patient: Patient) -> None:
        self.world = world
        self.patient = patient
        tag = patient.tag
        if patient.index not in world.wallets:
            raise DemoError(f"patient {tag} has no wallet: issue_wallets before the run")
        s = TherapyScenario(world.deployment.hub, cast=world.cast, site=SITE,
                            start_us=world.start_us, tick_us=TICK_US,
                            card=world.wallets[patient.index])
        s.biometric_template = biometric_template(patient)
        s.sample_id, s.design_id, s.batch_id = f"TS-{tag}", f"DSN-{tag}", f"LOT-{tag}"
        s.shipment_id = f"SHP-{tag}"
        s.dose_ids = [f"LOT-{tag}-D{n}" for n in (1, 2)]
        s.payer_id, s.currency, s.dose_price = PAYER.payer_id, "USD", DOSE_PRICE
        s.diagnosis_codes = [patient.cancer.icd10]
        self.scenario = s
        self.coi = ""
        self.lock = threading.Lock()  # the case is folded by the log follower too
        self.broken: str | None = None
        self.finished = False
        self._in_flight: list[str] = []
        self._in_flight_writer: str | None = None
        self._head_writer: str | None = None  # who wrote the last event of the chain
        self._settled_at = 0.0
        self._awaiting: dict[str, CaughtFault] = {}  # injected event id -> its fault
        self._quarantine_alert = ""  # the alert the quarantined-vial fault raises
        self._messages = 0
        self._mllp: MllpClient | None = None
        self._fhir: FhirClient | None = None
        t = patient.timeline
        self.steps: dict[int, Callable[[], object]] = {
            patient.day("enrol"): self.enrol, patient.day("collect"): self.collect,
            patient.day("lab_receipt"): self.lab_receipt,
            patient.day("sequenced"): self.sequenced, patient.day("designed"): self.designed,
            patient.day("approved_first"): lambda: self._direct(s.approve_first),
            patient.day("approved_second"): lambda: self._direct(s.approve_second),
            patient.day("manufacturing"): self.start_batch,
            patient.day("steps_done"): self.batch_steps, patient.day("qc_done"): self.qc,
            patient.day("released"): lambda: self._direct(s.release),
            patient.day("shipped"): self.ship, patient.day("received"): self.receive,
            patient.day("dose_1"): lambda: self.dose(1),
            patient.day("claim_1"): lambda: self.bill(1),
            patient.day("outcome_1"): lambda: self.assess(1),
            patient.day("dose_2"): lambda: self.dose(2),
            patient.day("claim_2"): lambda: self.bill(2),
            patient.day("outcome_2"): lambda: self.assess(2),
        }
        self.last_day = patient.start_day + t.last_day
        #: days this therapy's rows are in the plant's export
        self.mes_days = {patient.day(step) for step in ("manufacturing", "steps_done",
                                                         "qc_done")}
        if patient.stalls:  # the sample reaches the lab, and then nothing, ever
            stall = patient.day("lab_receipt")
            self.steps = {day: step for day, step in self.steps.items() if day <= stall}
            self.last_day, self.mes_days = stall, set()
        self.stall: CaughtFault | None = None
        self._day = -1
        self._exported = False

    # -- the day loop ---------------------------------------------------------------------

    def run_day(self, day: int) -> None:
        step = self.steps.get(day)
        if step is None:
            return
        self._day, self._exported = day, False
        try:
            if self.broken is None:
                self._clock(day)
                step()
                self._settle()
        except Exception as exc:  # one broken therapy must not stop the cohort
            self.broken = f"{type(exc).__name__}: {exc}"
        finally:
            if day in self.mes_days and not self._exported:
                self.world.mes_exports[day].abandon()  # the others must not wait for us
        if day >= self.last_day:
            self.finished = True
            self.close()

    def close(self) -> None:
        if self._mllp is not None:
            self._mllp.close()
        if self._fhir is not None:
            self._fhir.close()

    # -- time -------------------------------------------------------------------------------

    def _clock(self, day: int) -> None:
        """The day's visit starts at 08:00 UTC plus the patient's slot."""
        start = self.world.start_us + day * DAY_US + (8 * 60 + self.patient.minute) * 60_000_000
        self.scenario.clock_to(start)

    def _tick(self) -> int:
        self.scenario.now_us += self.scenario.tick_us
        return self.scenario.now_us

    # -- writing, and waiting for the hub ---------------------------------------------------

    def _switch_to(self, writer: str) -> None:
        """Before ``writer`` writes: the events another writer sent are answered, and a
        connector gets ``HANDOFF_S`` to see the answer on its own follower."""
        if self._in_flight and self._in_flight_writer != writer:
            self._settle()
        if writer != DIRECT and self._head_writer not in (None, writer):
            pause = self._settled_at + HANDOFF_S - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def _sent(self, writer: str, event_ids: list[str], *, moves_head: bool = True) -> None:
        self._in_flight += event_ids
        self._in_flight_writer = writer
        if moves_head:
            self._head_writer = writer

    def _settle(self) -> None:
        """Wait for the hub's answer to everything sent; an unexpected refusal breaks the
        run (and is reported as unexplained)."""
        if not self._in_flight:
            return
        answers = self.world.watch.wait(self._in_flight)
        self._in_flight.clear()
        self._settled_at = time.monotonic()
        for event_id, answer in answers.items():
            expected = self._awaiting.pop(event_id, None)
            if expected is not None:
                expected.resolve(answer)
            elif not answer.accepted:
                raise DemoError(f"event {event_id} of {self.coi} was refused: {answer.rule} "
                                f"{answer.code}: {answer.reason}")

    def _fold(self, event: InboundEvent) -> None:
        """An accepted event read from the log (the connectors' events land here)."""
        with self.lock:
            if event.event_id not in self.scenario.case.event_ids:
                self.scenario.commit(event)

    def _direct(self, step: Callable[[], InboundEvent]) -> InboundEvent:
        """Issue a step signed by its actor, judge it with the gatekeeper's rules, fold it
        into the demo's case (expecting acceptance) and send it to ``ingress.direct``."""
        self._switch_to(DIRECT)
        with self.lock:
            event = step()
            verdict = self.scenario.judge(event)
            if not verdict.accepted:
                raise DemoError(f"the demo's own {event.event_type} for {self.coi} breaks a "
                                f"rule: {verdict.rule} {verdict.code}: {verdict.reason}")
            self.scenario.commit(event)
        self._send(event)
        self._sent(DIRECT, [event.event_id])
        return event

    def _send(self, event: InboundEvent) -> None:
        self.world.direct.write([IssuedEvent(event.envelope, event.raw)])

    def _inject(self, fault: Fault, injected: str, expected_code: str,
                event: InboundEvent, caught_by: str) -> None:
        """Send an event that must be refused with ``expected_code`` (checked locally
        first, so the demo never claims a fault it did not inject)."""
        self._switch_to(DIRECT)
        with self.lock:
            verdict = self.scenario.judge(event)
        if verdict.accepted or verdict.code != expected_code:
            raise DemoError(f"the injected fault '{fault}' would be answered {verdict.code}, "
                            f"not {expected_code}: the demo's script is wrong")
        record = self.world.record(CaughtFault(fault, self.patient.tag, self.coi, injected,
                                               expected_code, caught_by,
                                               event_id=event.event_id),
                                   refused_id=event.event_id)
        self._send(event)
        self._awaiting[event.event_id] = record
        self._sent(DIRECT, [event.event_id], moves_head=False)

    # -- the connectors -----------------------------------------------------------------------

    @property
    def mllp(self) -> MllpClient:
        if self._mllp is None:
            self._mllp = MllpClient(*self.world.mllp, self.world.mllp_tls)
        return self._mllp

    @property
    def fhir(self) -> FhirClient:
        if self._fhir is None:
            emr = self.world.deployment.parties[EMR].issuer.signer
            self._fhir = FhirClient(self.world.fhir_url, emr, self.world.https_tls)
        return self._fhir

    def _control_id(self) -> str:
        self._messages += 1
        return f"{self.patient.tag}-{self._messages:03d}"

    def _hl7(self, build: Callable[[str, int], str], *, expect: str = "AA"
             ) -> tuple[messages.Ack, str, str]:
        """Send one HL7 message built for (control id, event time); check its ACK."""
        self._switch_to(HL7)
        control_id = self._control_id()
        message = build(control_id, self._tick())
        ack = self.mllp.send(message)
        if ack.code != expect:
            raise DemoError(f"HL7 {control_id} for {self.coi or self.patient.tag} was "
                            f"answered {ack.code}, not {expect}: {ack.reason}")
        if expect == "AA":
            self._sent(HL7, [hl7_event_id(control_id)])
        return ack, control_id, message

    def _post(self, resource: dict[str, Any]) -> None:
        self._switch_to(FHIR)
        created = self.fhir.create(resource)
        if created.coi != self.coi:
            raise DemoError(f"FHIR {resource['resourceType']} for {self.coi} was recorded for "
                            f"therapy {created.coi}")
        self._sent(FHIR, [created.event_id])

    def _mes(self, rows: list[dict[str, Any]]) -> None:
        """Put this therapy's rows in the day's MES export; every row must be accepted."""
        self._switch_to(FILES)
        self._exported = True
        entries = self.world.mes_exports[self._day].submit(rows)
        refused = [e for e in entries if e["status"] != "accepted"]
        if refused or len(entries) != len(rows):
            problem = refused[0].get("reason") if refused else "rows missing from the result"
            raise DemoError(f"the MES export refused a row of {self.coi}: {problem}")
        self._sent(FILES, [e["event_id"] for e in entries])

    # -- the therapy, step by step ------------------------------------------------------------

    def enrol(self) -> None:
        p, s = self.patient, self.scenario
        ack, _, _ = self._hl7(lambda cid, at: messages.admit(p, cid, SITE, at))
        found = _COI.search(ack.text)
        if found is None:
            raise DemoError(f"the ADT^A01 ACK of {p.tag} names no therapy: {ack.text!r}")
        self.coi = s.coi = found.group(0)
        s.case = CaseState.new(self.coi)
        s.patient_hash = self.world.deployment.pseudonymiser.patient_hash(p.mrn)
        s.sequencing_hash = _digest(self.coi, "tumour-normal WES")
        s.variant_calls_hash = _digest(self.coi, "somatic variants")
        s.design_hash = _digest(self.coi, "neoantigen design")
        self.world.watch.follow(self.coi, self._fold)
        self._hl7(lambda cid, at: messages.diagnosis(p, cid, SITE, at))
        self._direct(s.confirm_eligibility)
        # the nurse hands the patient their card (opened from the wallet with the patient's
        # PIN) and witnesses it; treatment consent is the EMR's record of the signed form;
        # the data scopes the patient signs with the card
        s.card = PatientCard.load(wallet_folder(self.world.deployment, p), wallet_pin(p))
        self._direct(s.issue_card)
        self._post(messages.consent(p, "TREATMENT", self._tick()))
        scopes = ["GENOME_STORAGE", "PAYER_SHARING"]
        for scope in scopes + (["RESEARCH"] if p.research_consent else []):
            self._direct(partial(s.consent, scope))
        ack, control_id, order = self._hl7(lambda cid, at: messages.order(
            p, cid, SITE, at, placer=f"PL-{p.tag}", clinician=s.id_of("physician")))
        if Fault.DUPLICATE_HL7 in p.faults:
            self._repeat(control_id, order)

    def _repeat(self, control_id: str, message: str) -> None:
        """The interface engine resends the order with the same MSH-10 (a lost ACK, say)."""
        fault = self.world.record(CaughtFault(
            Fault.DUPLICATE_HL7, self.patient.tag, self.coi,
            f"ORM^O01 {control_id} sent twice", "AA",
            "MLLP listener (ACK AA)", event_id=hl7_event_id(control_id)))
        again = self.mllp.send(message)
        fault.caught = again.code == "AA" and "not applied again" in again.text
        fault.caught_by = fault.catcher if fault.caught else "nobody: applied again"
        fault.code, fault.reason = f"ACK {again.code}", again.text.replace("; ", ", ")

    def collect(self) -> None:
        s = self.scenario
        self._direct(s.collect)
        self._direct(s.hand_over_sample)
        self._direct(s.accept_sample)

    def lab_receipt(self) -> None:
        self._direct(self.scenario.receive_sample)
        if self.patient.stalls:
            self.stall = self.world.record(CaughtFault(
                Fault.STALLED, self.patient.tag, self.coi,
                f"sample {self.scenario.sample_id} received at the lab on "
                f"{messages.when(self.scenario.now_us):%Y-%m-%d}; no event for the therapy "
                "after that", STALL_ALERT, "gatekeeper timer sweep (alert)"))
            self.world.expected_alerts.add((self.coi, STALL_ALERT))

    def sequenced(self) -> None:
        s = self.scenario
        if Fault.UNREGISTERED_SIGNER in self.patient.faults:
            with self.lock:
                rogue = s.sequence(by=self.world.rogue)
            self._inject(Fault.UNREGISTERED_SIGNER,
                         f"SequencingCompleted signed by {self.world.rogue.actor_id}, an actor "
                         "no registrar registered", "UNREGISTERED_KEY", rogue, "gatekeeper R1")
        self._direct(s.sequence)
        self._direct(s.call_variants)

    def designed(self) -> None:
        self._direct(self.scenario.design)

    def start_batch(self) -> None:
        s = self.scenario
        if Fault.DESIGN_ALTERED in self.patient.faults:
            altered = s.design_hash[:-6] + "c0ffee"
            self._mes_fault(
                "batch-start-rev2", [messages.batch_started(self.coi, self._tick(), s.batch_id,
                                                            altered, len(s.dose_ids))],
                Fault.DESIGN_ALTERED,
                f"MES batch record of {s.batch_id} names design hash {altered[:12]}..., "
                f"not the approved {s.design_hash[:12]}...", "DESIGN_ALTERED_AFTER_APPROVAL")
        self._mes([messages.batch_started(self.coi, self._tick(), s.batch_id, s.design_hash,
                                          len(s.dose_ids))])

    def _mes_fault(self, name: str, rows: list[dict[str, Any]], fault: Fault, injected: str,
                   expected_code: str) -> None:
        """Drop a file whose one row the gatekeeper must refuse; the result file says so."""
        self._switch_to(FILES)
        result = self.world.mes.drop(f"{self.patient.tag}-{name}.csv", messages.mes_file(rows))
        (row,) = result["results"]
        record = self.world.record(CaughtFault(fault, self.patient.tag, self.coi, injected,
                                               expected_code,
                                               "gatekeeper R5 (MES result file)",
                                               event_id=row.get("event_id")),
                                   refused_id=row.get("event_id"))
        record.resolve(Outcome.from_result(row))
        # the connector takes the refused row off its chain once its follower reads the
        # refusal; the next file must not be chained onto it
        time.sleep(HANDOFF_S)

    def batch_steps(self) -> None:
        s = self.scenario
        self._mes(messages.batch_steps(self.coi, self._tick(), s.batch_id, "MES-OP-17"))

    def qc(self) -> None:
        s = self.scenario
        self._mes(messages.qc_results(self.coi, self._tick(), s.batch_id, s.design_hash))
        custody_faults.after_qc(self)

    def ship(self) -> None:
        """The plant releases the doses to the courier, the courier signs the pick-up, and
        ships them to the hospital pharmacy."""
        s = self.scenario
        for dose_id in s.dose_ids:
            self._direct(partial(s.release_item, "manufacturer", dose_id, "courier",
                                 location="Kobe plant dock 2"))
            self._direct(partial(s.transfer, "courier", dose_id, "manufacturer", "courier",
                                 item_kind="DOSE", location="Kobe plant dock 2"))
        self._direct(lambda: s.ship(by="courier"))

    def receive(self) -> None:
        s = self.scenario
        self._direct(s.receive_at_site)
        self._direct(lambda: s.place(1))
        self._direct(lambda: s.place(2))
        custody_faults.after_receipt(self)
        if Fault.EXCURSION_THEN_DISPENSE in self.patient.faults:
            # the freezer logger reports an excursion of the second vial's rack
            self._direct(lambda: s.excursion([s.dose(2)]))

    def usable(self, n: int) -> bool:
        return not (n == 2 and Fault.EXCURSION_THEN_DISPENSE in self.patient.faults)

    def dose(self, n: int) -> None:
        p, s = self.patient, self.scenario
        if not self.usable(n):
            return  # the second vial was destroyed after its excursion
        self._direct(lambda: s.schedule(n))
        self._direct(lambda: s.reserve(n))
        if n == 1 and Fault.EXCURSION_THEN_DISPENSE in p.faults:
            with self.lock:
                wrong_vial = s.dispense(1, dose_id=s.dose(2))
            self._quarantine_alert = alert_id(wrong_vial.event_id, "DOSE_QUARANTINED")
            self._inject(Fault.EXCURSION_THEN_DISPENSE,
                         f"dispense of {s.dose(2)}, quarantined after a freezer excursion",
                         "DOSE_QUARANTINED", wrong_vial, "gatekeeper R6")
        self._direct(lambda: s.dispense(n))
        if n == 1 and Fault.WRONG_PATIENT in p.faults:
            self._wrong_patient()
        self._direct(lambda: s.verify_identity(n))
        self._hl7(lambda cid, at: messages.administration(
            p, cid, SITE, at, administration_id=f"ADM-{n}", dose_number=n, dose_id=s.dose(n),
            nurse=s.id_of("nurse")))
        if n == 1 and Fault.EXCURSION_THEN_DISPENSE in p.faults:
            self._direct(lambda: s.disposition_quarantine(
                s.dose(2), "DESTROYED", "freezer excursion beyond the stability data"))
            self._own_quarantine_alert()

    def _own_quarantine_alert(self) -> None:
        """The pharmacist takes on the hub's alert about the quarantined vial, then closes
        it once the vial is destroyed: an alert with an owner and a signed resolution."""
        s, alert = self.scenario, self._quarantine_alert
        with self.lock:
            # the gatekeeper raised it with the refusal (same partition, judged earlier);
            # the demo's local case learns it as the gatekeeper's did
            s.case.alerts.setdefault(alert, AlertStatus.OPEN)
        self._direct(lambda: s.issue("pharmacist", "AlertAcknowledged", {
            "alert_id": alert, "note": "vial 2 held in quarantine; the qualified person "
                                       "decided its destruction"}))
        self._direct(lambda: s.issue("pharmacist", "AlertResolved", {
            "alert_id": alert, "resolution": "CORRECTED",
            "reason": "the qualified person destroyed the quarantined vial; the patient received "
                      "vial 1; no second dispense of vial 2 is possible"},
            meaning=SignatureMeaning.RESPONSIBLE))

    def _wrong_patient(self) -> None:
        """At the next bed, the patient there answers the bedside challenge of this
        patient's vial with their own card while the chart says MATCH; the hub checks the
        card against this therapy's, refuses, then the EMR still tries to record the
        administration."""
        p, s = self.patient, self.scenario
        neighbour_mrn = self.world.cohort.neighbours[p.index]
        neighbour = next((self.world.wallets[o.index] for o in self.world.cohort.therapies
                          if o.mrn == neighbour_mrn), None)
        with self.lock:
            # a visitor's card when the cohort has no other patient: bound to nothing
            scan = s.verify_identity(1, card=neighbour or PatientCard.issue(SITE))
        self._inject(Fault.WRONG_PATIENT,
                     f"bedside challenge of {s.dose(1)} answered by another patient's card",
                     "PATIENT_CARD_NOT_OF_THIS_THERAPY", scan, "gatekeeper R5")
        ack, control_id, _ = self._hl7(lambda cid, at: messages.administration(
            p, cid, SITE, at, administration_id="ADM-1", dose_number=1, dose_id=s.dose(1),
            nurse=s.id_of("nurse")), expect="AE")
        fault = self.world.record(CaughtFault(
            Fault.WRONG_PATIENT, p.tag, self.coi,
            f"RAS^O17 {control_id}: administration of {s.dose(1)} without a matching scan",
            "AE", "MLLP listener (ACK AE)"), connector_control_id=control_id)
        fault.caught, fault.caught_by = True, fault.catcher  # _hl7 checked the AE
        fault.code, fault.reason = f"ACK {ack.code}", ack.reason

    def bill(self, n: int) -> None:
        s, tag = self.scenario, self.patient.tag
        if n == 2 and Fault.CLAIM_NEVER_GIVEN in self.patient.faults:
            # the billing system bills a third dose of the treatment plan, never given
            never = str(uuid7(s.now_us // 1000))
            with self.lock:
                claim = s.claim(3, administration_event_id=never, claim_id=f"CLM-{tag}-3")
            self._inject(Fault.CLAIM_NEVER_GIVEN,
                         f"claim CLM-{tag}-3 for administration {never[:13]}..., never given",
                         "CLAIM_WITHOUT_ADMINISTRATION", claim, "gatekeeper R5")
        if self.usable(n):
            self._direct(lambda: s.claim(n, claim_id=f"CLM-{tag}-{n}"))

    def assess(self, n: int) -> None:
        p = self.patient
        responses = ("SD", "PR", "SD", "CR", "PR")
        self._post(messages.outcome(p, self._tick(), f"dose-{n} + 2 weeks",
                                    responses[(p.index + n) % len(responses)],
                                    "DETECTED" if n == 1 else "NOT_DETECTED"))


# -- the cohort -------------------------------------------------------------------------------


@dataclass
class Drive:
    """What driving the cohort produced."""

    runs: list[TherapyRun]
    seconds: float

    @property
    def broken(self) -> list[TherapyRun]:
        return [r for r in self.runs if r.broken is not None]


def drive_cohort(world: World, console: Console) -> Drive:
    """Run every therapy, one simulated day at a time, with progress bars; then wait for
    the stalled therapy's alert, which only the gatekeeper's sweep can raise."""
    started = time.monotonic()
    runs = [TherapyRun(world, patient) for patient in world.cohort.therapies]
    clock = SimulationClock(world.deployment.data_dir)
    days = sorted({day for run in runs for day in run.steps})
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("{task.fields[note]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, \
            ThreadPoolExecutor(max_workers=min(len(runs), 48),
                               thread_name_prefix="therapy") as pool:
        calendar = progress.add_task("simulated days", total=len(days), note="")
        finished = progress.add_task("therapies through their last step", total=len(runs),
                                     note="")
        for day in days:
            date = dt.datetime.fromtimestamp((world.start_us + day * DAY_US) / 1e6, dt.UTC)
            progress.update(calendar, note=f"{date:%Y-%m-%d}, {world.watch.accepted} events "
                                           "accepted")
            date_us = world.start_us + day * DAY_US
            clock.set(date_us)  # the sweep's "now": the day begins for the whole deployment
            world.mes_exports[day] = MesExport(
                world.mes, f"mes-export-{messages.when(date_us):%Y%m%d}.csv",
                sum(day in run.mes_days for run in runs))
            wait_all([pool.submit(run.run_day, day) for run in runs if day in run.steps])
            progress.advance(calendar)
            progress.update(finished, completed=sum(r.finished for r in runs),
                            note=f"{len([r for r in runs if r.broken])} broken")
        progress.update(calendar, note=f"{world.watch.accepted} events accepted")
        if days:  # the last simulated day is over: the dashboard's "now" for alert ages
            clock.set(world.start_us + (days[-1] + 1) * DAY_US)
    for run in runs:
        run.close()
    for run in runs:
        if run.stall is not None:
            with console.status(f"waiting for the timer sweep to notice {run.patient.tag} "
                                "stalled at the lab ..."):
                run.stall.resolve_by_alert(world.watch.wait_for_alert(
                    run.coi, STALL_ALERT, STALL_ALERT_WAIT_S))
    return Drive(runs, time.monotonic() - started)


# -- receivables: 837P out, 835 in --------------------------------------------------------------


@dataclass
class Receivables:
    billed: int
    x12_files: list[Path]
    remittance: Path | None
    paid: int
    outstanding: list[str]
    results: dict[str, Any]


def settle_receivables(world: World, drive: Drive, console: Console) -> Receivables:
    """Write the 837P for every accepted claim, have the payer answer with an 835 that pays
    all but the claims it has not processed yet, drop it in the payer's inbox and wait for
    the adjudications and payments on the log."""
    records: list[ClaimRecord] = []
    unpaid: set[str] = set()
    for run in drive.runs:
        case, patient = run.scenario.case, run.patient
        for claim_id, claim in sorted(case.claims.items()):
            given = case.administrations[claim.administration_event_id]
            records.append(ClaimRecord(
                claim_id=claim_id, coi=run.coi,
                administration_event_id=claim.administration_event_id,
                payer_id=PAYER.payer_id, amount=claim.amount, currency="USD",
                procedure_code="J3590", diagnosis_codes=(patient.cancer.icd10,),
                service_date=messages.when(given.occurred_at_us).date(),
                patient_pseudonym=f"PSN-{(case.patient_hash or '')[:12]}",
                member_id=f"W{800_000_000 + patient.index}", billing_provider=PROVIDER,
                payer_name=PAYER.name))
            if patient.second_claim_outstanding and given.dose_number == 2:
                unpaid.add(claim_id)
    if not records:
        return Receivables(0, [], None, 0, [], {})
    with console.status(f"billing {len(records)} claims (837P) and posting the payer's 835 ..."):
        written = ClaimOutbox(world.outbox, "PCVHUB", "PACIFIC CANCER CENTER", "BILLING DESK",
                              "2065550100").write(records)
        by_claim = {r.claim_id: r for r in records}
        payments = []
        for path in written.x12_files:
            for claim_id, charge in messages.billed_claims(path.read_text()):
                if claim_id not in unpaid:
                    record = by_claim[claim_id]
                    payments.append(messages.ClaimPaid(claim_id, charge, charge,
                                                       record.member_id,
                                                       record.patient_pseudonym))
        today = dt.datetime.now(dt.UTC).date()
        text = messages.remittance_835(PAYER, PROVIDER.name, PROVIDER.npi, "PCVHUB", payments,
                                       trace=f"EFT-{today:%Y%m%d}-001", paid_on=today,
                                       control_number=int(time.time()) % 999_999_999 + 1)
        time.sleep(HANDOFF_S)  # the gateway learns the claims from the log on its own
        name = f"remittance-{today:%Y%m%d}.835"
        result = world.payer_inbox.drop(name, text.encode())
        if result.get("error"):
            raise DemoError(f"the payer gateway refused {name}: {result['error']}")
        events = [e["event_id"] for entry in result["results"] for e in entry.get("events", [])]
        refused = [e for e in result["results"] if e["status"] != "accepted"]
        if refused:
            raise DemoError(f"the payer gateway did not apply claim payment "
                            f"{refused[0]['claim_id']}: {refused[0].get('reason')}")
        answers = world.watch.wait(events)
        wrong = [a for a in answers.values() if not a.accepted]
        if wrong:
            raise DemoError(f"a remittance event was refused: {wrong[0].code}: "
                            f"{wrong[0].reason}")
    return Receivables(len(records), list(written.x12_files),
                       world.payer_inbox.folder / "done" / name, len(payments), sorted(unpaid),
                       result)


# -- what was refused or raised, and why ---------------------------------------------------------


@dataclass
class Accounting:
    """Every refusal and alert of the run, each explained by an injected fault or not."""

    refusals: int
    alerts: int
    unexplained_refusals: list[str]
    unexplained_alerts: list[str]
    fault_alerts: dict[str, str]  # refused event id -> alert code
    duplicate_copies: dict[str, int]  # event id of a repeated HL7 message -> copies on ingress


def account(world: World, ingress_hl7: list[str]) -> Accounting:
    """``ingress_hl7``: the event ids on the HL7 ingress topic (every copy written)."""
    watch = world.watch
    for fault in world.faults:  # injected by a therapy that broke before it settled
        if not fault.answered and fault.event_id in watch.answers:
            fault.resolve(watch.answers[fault.event_id])
    unexplained_refusals = []
    for r in watch.refusals:
        expected = r.event_id in world.expected_refusals or (
            r.recorded_by == CONNECTOR and any(cid.encode() in r.original
                                               for cid in world.expected_connector_refusals))
        if not expected:
            unexplained_refusals.append(f"{r.coi}: {r.event_type or '?'} refused "
                                        f"{r.outcome.rule} {r.outcome.code}: "
                                        f"{r.outcome.reason}")
    fault_alerts = {a.subject: a.code for a in watch.alerts_about(world.expected_refusals)}
    unexplained_alerts = [f"{a.coi}: {a.severity} {a.code}: {a.message}" for a in watch.alerts
                          if a.subject not in world.expected_refusals
                          and (a.coi, a.code) not in world.expected_alerts]
    duplicates = {}
    for fault in world.faults:
        if fault.fault is Fault.DUPLICATE_HL7 and fault.event_id is not None:
            copies = ingress_hl7.count(fault.event_id)
            duplicates[fault.event_id] = copies
            accepted = watch.answers.get(fault.event_id)
            fault.caught = fault.caught and copies == 1 and bool(accepted and accepted.accepted)
            fault.reason += (f": the order is on the log once ({copies} copy on the HL7 "
                             "ingress topic)")
    return Accounting(len(watch.refusals), len(watch.alerts), unexplained_refusals,
                      unexplained_alerts, fault_alerts, duplicates)


def cohort_start_us(cohort: Cohort, today_us: int | None = None) -> int:
    """Midnight (UTC) of cohort day 0: the last simulated day ends three days before today."""
    today = dt.datetime.fromtimestamp((today_us or now_us()) / 1e6, dt.UTC).date()
    first = today - dt.timedelta(days=cohort.days + 3)
    return int(dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC).timestamp()
               * 1_000_000)
