"""The payer connector: claims out (X12 837P and FHIR R4 Claim), remittances in (X12 835).

Out. The billing projection hands over :class:`ClaimRecord` rows (one administration
billed to one payer; ``ClaimRecord.from_row`` maps a flat projection row). For each payer,
:class:`ClaimOutbox` writes one X12 005010X222A1 837P interchange and one FHIR R4 ``Claim``
per claim into an outbox folder. The 837P is checked with pyx12's validator before it is
written: an interchange pyx12 refuses is never handed to a clearinghouse. X12 837P carries
no currency (it is the US professional claim): a claim in another currency goes out only
as a FHIR Claim. FHIR resources are built and validated with ``fhir.resources``
(its ``R4B`` models: R4B changed nothing in Claim, so the JSON is a valid R4 Claim).

In. A drop folder (:class:`pcvhub.connectors.drop_folder.DropFolder`)
takes 835 remittance files (``*.835``, ``*.x12``, ``*.edi``). pyx12 validates the
interchange against the 005010X221A1 map and reads it with its loop-aware reader. Each
claim payment (loop 2100, CLP) becomes, on the claim's own therapy chain:

* ``ClaimAdjudicated``: APPROVED (paid the charge), PARTIALLY_APPROVED or DENIED
  (CLP02 = 4, or nothing paid and nothing owed by the patient), with the CARC of the
  largest adjustment and the RARCs of MOA and LQ*HE;
* ``PaymentPosted``, when money was paid (CLP04 > 0), referencing the trace number (TRN02)
  and the payment date (BPR16).

The connector knows which claims exist by following ``ClaimSubmitted`` on the canonical
log; a CLP naming an unknown claim, a claim billed to another payer or for another charge,
a reversal (CLP02 = 22) or an amount in another currency is refused with its reason (in
the result file and on the rejected topic) while the other claims of the file go on. An
interchange pyx12 finds invalid is refused whole, with pyx12's findings and a 999
acknowledgement beside it. Event ids derive from the payer's trace number and the claim,
so a remittance sent twice posts once.

Entry point: ``await RemittanceDrop.serve(settings, inbox, stop_event)``,
or ``RemittanceDrop(connector, inbox)`` made before ``connector.start()`` (so that it sees
every ClaimSubmitted), then ``run(stop_event)``. Its actor holds PAYER and CONNECTOR:
``pcvhub keys new payer-gateway --role PAYER --role CONNECTOR --site PAYER-GATEWAY
--publish``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyx12.error_handler
import pyx12.errors
import pyx12.params
import pyx12.x12context
import pyx12.x12n_document
from fhir.resources.R4B.claim import Claim as FhirClaim

from pcvhub.connectors.core import Connector, EventRequest
from pcvhub.connectors.drop_folder import DropConnector, FileResult, write_atomically
from pcvhub.connectors.identity import deterministic_event_id
from pcvhub.connectors.outcome import Outcome, Status
from pcvhub.log.verify import VerifiedRecord
from pcvhub.trust.issuer import now_us

log = logging.getLogger(__name__)

X12_837P_VERSION = "005010X222A1"
X12_835_VERSION = "005010X221A1"
REMITTANCE_SUFFIXES = (".835", ".x12", ".edi")
#: The rule the connector's own refusals name on the rejected topic.
RULE = "X12-835"
#: X12 837P amounts have no currency: they are US dollars.
X12_CURRENCY = "USD"
_ICD10 = re.compile(r"^[A-TV-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?$")
_X12_DELIMITERS = set("*~:^")


class ClaimNotBillable(ValueError):
    """A claim record that cannot be written as asked; the message names the field."""


# -- claims out ------------------------------------------------------------------------

@dataclass(frozen=True)
class Provider:
    """The billing provider (the hospital) as the payer knows it."""

    npi: str  # US National Provider Identifier, 10 digits with a Luhn check digit
    name: str
    tax_id: str  # employer identification number (EIN), 9 digits
    address: str
    city: str
    state: str
    postal_code: str  # 9 digits (ZIP+4) for a billing provider


@dataclass(frozen=True)
class ClaimRecord:
    """One administration billed to one payer: a row of the billing projection.

    The hub holds no names: the patient is the hub's pseudonym; the payer's member id
    is what the payer needs to find the insured person.
    """

    claim_id: str  # the hospital's patient control number (X12 CLM01, at most 20 chars)
    coi: str
    administration_event_id: str  # the DoseAdministered event billed
    payer_id: str
    amount: Decimal
    currency: str
    procedure_code: str  # HCPCS / CPT
    diagnosis_codes: tuple[str, ...]  # ICD-10-CM, primary first
    service_date: date
    patient_pseudonym: str
    member_id: str  # the subscriber's id at the payer
    billing_provider: Provider
    payer_name: str | None = None
    procedure_modifiers: tuple[str, ...] = ()
    units: int = 1
    place_of_service: str = "22"  # CMS place of service: on-campus outpatient hospital
    claim_filing_indicator: str = "CI"  # X12 SBR09: CI commercial, MB Medicare B, MC Medicaid

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ClaimRecord:
        """From a flat billing-projection row (``billing_provider_npi``, ... columns)."""
        provider = Provider(**{f: str(row[f"billing_provider_{f}"]) for f in
                               ("npi", "name", "tax_id", "address", "city", "state",
                                "postal_code")})
        service = row["service_date"]
        optional = {k: row[k] for k in ("payer_name", "units", "place_of_service",
                                        "claim_filing_indicator") if row.get(k) is not None}
        return cls(
            claim_id=str(row["claim_id"]), coi=str(row["coi"]),
            administration_event_id=str(row["administration_event_id"]),
            payer_id=str(row["payer_id"]), amount=Decimal(str(row["amount"])),
            currency=str(row["currency"]), procedure_code=str(row["procedure_code"]),
            diagnosis_codes=tuple(row["diagnosis_codes"]),
            service_date=service.date() if isinstance(service, datetime) else
            date.fromisoformat(str(service)),
            patient_pseudonym=str(row["patient_pseudonym"]), member_id=str(row["member_id"]),
            billing_provider=provider,
            procedure_modifiers=tuple(row.get("procedure_modifiers") or ()), **optional)


@dataclass(frozen=True)
class Interchange:
    """Who sends an 837 to whom, and the interchange's control number."""

    sender_id: str  # ISA06 / GS02 / submitter id
    receiver_id: str  # ISA08 / GS03 / receiver id (the payer or its clearinghouse)
    submitter_name: str
    contact_name: str
    contact_phone: str  # 10 digits
    receiver_name: str
    control_number: int  # ISA13, 1..999999999
    production: bool = False  # ISA15: P for production, T for test


def npi_is_valid(npi: str) -> bool:
    """The NPI check digit: Luhn over the prefix 80840 and the first nine digits."""
    if not re.fullmatch(r"\d{10}", npi):
        return False
    total = 0
    for i, char in enumerate(reversed("80840" + npi[:9])):
        digit = int(char) * (2 if i % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return (10 - total % 10) % 10 == int(npi[9])


def _check_claim(claim: ClaimRecord) -> None:
    """Refuse what an 837P cannot carry, naming the field."""
    def bad(field_name: str, problem: str) -> ClaimNotBillable:
        return ClaimNotBillable(f"claim {claim.claim_id}: {field_name} {problem}")

    if claim.currency != X12_CURRENCY:
        raise bad("currency", f"is {claim.currency}; X12 837P amounts are US dollars: send "
                              "this claim as a FHIR Claim")
    if not 1 <= len(claim.claim_id) <= 20:
        raise bad("claim_id", "must have 1 to 20 characters (X12 CLM01)")
    if not npi_is_valid(claim.billing_provider.npi):
        raise bad("billing_provider.npi", f"{claim.billing_provider.npi!r} is not a valid NPI "
                                          "(10 digits with a Luhn check digit)")
    if not claim.diagnosis_codes or len(claim.diagnosis_codes) > 12:
        raise bad("diagnosis_codes", "must hold 1 to 12 ICD-10-CM codes")
    for code in claim.diagnosis_codes:
        if not _ICD10.match(code.upper()):
            raise bad("diagnosis_codes", f"holds {code!r}, which is not an ICD-10-CM code")
    if len(claim.procedure_modifiers) > 4:
        raise bad("procedure_modifiers", "holds more than the 4 modifiers X12 SV101 carries")
    if claim.amount <= 0 or claim.amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise bad("amount", f"is {claim.amount}; bill a positive amount in whole cents")
    texts = {"claim_id": claim.claim_id, "patient_pseudonym": claim.patient_pseudonym,
             "member_id": claim.member_id, "payer_id": claim.payer_id,
             "payer_name": claim.payer_name or "", "procedure_code": claim.procedure_code,
             **{f"billing_provider.{k}": v for k, v in vars(claim.billing_provider).items()}}
    for name, value in texts.items():
        if _X12_DELIMITERS & set(value):
            raise bad(name, f"{value!r} contains an X12 delimiter (* ~ : ^)")


def _amount(value: Decimal) -> str:
    """An X12 decimal (type R): no exponent, no trailing zeros after the point."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def render_837p(claims: Sequence[ClaimRecord], interchange: Interchange,
                created: datetime) -> str:
    """One 837P interchange (ISA .. IEA) billing ``claims``, all to the same payer.

    Hierarchy: one billing-provider HL (2000A) per provider, one subscriber HL (2000B)
    per claim, the subscriber being the patient (no 2000C), one service line per claim.
    """
    if not claims:
        raise ClaimNotBillable("an 837P needs at least one claim")
    payers = {c.payer_id for c in claims}
    if len(payers) != 1:
        raise ClaimNotBillable(f"an 837P goes to one payer; these claims name {sorted(payers)}")
    for claim in claims:
        _check_claim(claim)
    ctrl = f"{interchange.control_number:09d}"
    day, clock = created.strftime("%Y%m%d"), created.strftime("%H%M")
    body: list[str] = [
        f"ST*837*0001*{X12_837P_VERSION}",
        f"BHT*0019*00*{ctrl}*{day}*{clock}*CH",
        f"NM1*41*2*{interchange.submitter_name}*****46*{interchange.sender_id}",
        f"PER*IC*{interchange.contact_name}*TE*{interchange.contact_phone}",
        f"NM1*40*2*{interchange.receiver_name}*****46*{interchange.receiver_id}",
    ]
    hl = 0
    for provider in dict.fromkeys(c.billing_provider for c in claims):
        hl += 1
        parent = hl
        body += [f"HL*{parent}**20*1",
                 f"NM1*85*2*{provider.name}*****XX*{provider.npi}",
                 f"N3*{provider.address}",
                 f"N4*{provider.city}*{provider.state}*{provider.postal_code}",
                 f"REF*EI*{provider.tax_id}"]
        for claim in (c for c in claims if c.billing_provider == provider):
            hl += 1
            codes = [code.replace(".", "").upper() for code in claim.diagnosis_codes]
            procedure = ":".join(("HC", claim.procedure_code, *claim.procedure_modifiers))
            body += [
                f"HL*{hl}*{parent}*22*0",
                f"SBR*P*18*******{claim.claim_filing_indicator}",
                f"NM1*IL*1*{claim.patient_pseudonym}*****MI*{claim.member_id}",
                f"NM1*PR*2*{claim.payer_name or claim.payer_id}*****PI*{claim.payer_id}",
                f"CLM*{claim.claim_id}*{_amount(claim.amount)}***"
                f"{claim.place_of_service}:B:1*Y*A*Y*Y",
                "HI*" + "*".join(f"{'ABK' if i == 0 else 'ABF'}:{code}"
                                 for i, code in enumerate(codes)),
                "LX*1",
                f"SV1*{procedure}*{_amount(claim.amount)}*UN*{claim.units}***1",
                f"DTP*472*D8*{claim.service_date:%Y%m%d}",
                # line item control number: the payer echoes it back in the 835 (REF*6R)
                f"REF*6R*{claim.administration_event_id}",
            ]
    body.append(f"SE*{len(body) + 1}*0001")
    segments = [
        f"ISA*00*{' ' * 10}*00*{' ' * 10}*ZZ*{interchange.sender_id:<15}*ZZ*"
        f"{interchange.receiver_id:<15}*{created:%y%m%d}*{clock}*^*00501*{ctrl}*0*"
        f"{'P' if interchange.production else 'T'}*:",
        f"GS*HC*{interchange.sender_id}*{interchange.receiver_id}*{day}*{clock}*"
        f"{interchange.control_number}*X*{X12_837P_VERSION}",
        *body,
        f"GE*1*{interchange.control_number}",
        f"IEA*1*{ctrl}",
    ]
    return "~\n".join(segments) + "~\n"


@dataclass(frozen=True)
class X12Finding:
    """One finding of pyx12's validator: where (segment, element, line) and what."""

    where: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class X12Validation:
    valid: bool
    findings: tuple[X12Finding, ...]
    acknowledgement: str  # the 999 implementation acknowledgement pyx12 wrote


class _PyX12Log(logging.Handler):
    """Collects what pyx12 logs as errors: some findings (an element marked "Not Used")
    reach only its log, not its JSON report."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        # pyx12 cannot write a 999 for a transaction without ST03 (the 835's ST03 is "Not
        # Used"): that is no finding about the file; there is just no 999 then
        if not message.startswith("Failed to create 999"):
            self.messages.append(message)


_PYX12 = logging.getLogger("pyx12")
_PYX12.propagate = False  # its findings are reported by validate_x12, not logged twice
_PYX12_LOCK = threading.Lock()  # the log handler is process-wide: one validation at a time


def validate_x12(text: str) -> X12Validation:
    """Validate an X12 interchange with pyx12 against the map its GS08 names."""
    report, ack, logged = io.StringIO(), io.StringIO(), _PyX12Log()
    with _PYX12_LOCK:
        _PYX12.addHandler(logged)
        try:
            valid = pyx12.x12n_document.x12n_document(
                param=pyx12.params.params(), src_file=io.StringIO(text), fd_997=ack,
                fd_html=None, fd_json=report)
        except Exception as exc:  # not even an envelope pyx12 can walk
            # pyx12 raises many kinds on garbage: X12Error, EngineError (a GS08 it has no
            # map for), IndexError (a GE with no GS open)...: all mean "not an interchange"
            return X12Validation(False, (X12Finding("interchange", "X12", _pyx12_reason(exc)),),
                                 "")
        finally:
            _PYX12.removeHandler(logged)
    findings: list[X12Finding] = []
    try:
        tree = json.loads(report.getvalue() or "{}")
    except json.JSONDecodeError:
        tree = {}
    _collect_findings(tree, "", findings)
    reported = {f.message for f in findings}
    for message in dict.fromkeys(logged.messages):
        if not any(r in message for r in reported):
            where, _, what = message.partition(" - ")
            findings.append(X12Finding(where.strip() if what else "interchange", "log",
                                       (what or where).strip()))
    if not valid and not findings:
        findings.append(X12Finding("interchange", "X12", "pyx12 found the interchange invalid "
                                                         "without saying where"))
    acknowledgement = ack.getvalue()
    if "IEA*" not in acknowledgement:
        acknowledgement = ""  # pyx12 gave up half way (see _PyX12Log): no 999 rather than half
    return X12Validation(valid and not findings, tuple(findings), acknowledgement)


def _collect_findings(node: Any, where: str, out: list[X12Finding]) -> None:
    """Walk pyx12's JSON error tree (interchanges > groups > transactions > segments >
    elements), naming the place of each error."""
    if isinstance(node, list):
        for item in node:
            _collect_findings(item, where, out)
        return
    if not isinstance(node, dict):
        return
    here = where
    if "seg_id" in node:
        here = f"segment {node['seg_id']} (line {node.get('cur_line', '?')})"
    elif "ele_pos" in node or "refdes" in node:
        here = f"{where}, element {node.get('refdes') or node.get('ele_pos')}"
    elif "trn_set_control_num" in node:
        here = f"transaction {node['trn_set_control_num']}"
    elif "gs_control_num" in node:
        here = f"group {node['gs_control_num']}"
    elif "isa_trn_set_id" in node:
        here = f"interchange {node['isa_trn_set_id']}"
    for error in node.get("errors", ()):
        out.append(X12Finding(here or "interchange", str(error.get("err_cde", "")),
                              str(error.get("err_str", ""))))
    for key, value in node.items():
        if key != "errors" and isinstance(value, (list, dict)):
            _collect_findings(value, here, out)


def fhir_claim(claim: ClaimRecord, created: datetime) -> FhirClaim:
    """The claim as a FHIR R4 ``Claim`` (professional, use ``claim``), validated."""
    modifiers = [{"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": m}]}
                 for m in claim.procedure_modifiers]
    money = {"value": claim.amount, "currency": claim.currency}
    item: dict[str, Any] = {
        "sequence": 1,
        "diagnosisSequence": list(range(1, len(claim.diagnosis_codes) + 1)),
        "productOrService": {"coding": [{
            "system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
            "code": claim.procedure_code}]},
        "servicedDate": claim.service_date.isoformat(),
        "locationCodeableConcept": {"coding": [{
            "system": "https://www.cms.gov/Medicare/Coding/place-of-service-codes/"
                      "Place_of_Service_Code_Set", "code": claim.place_of_service}]},
        "quantity": {"value": claim.units},
        "unitPrice": {"value": claim.amount / claim.units, "currency": claim.currency},
        "net": money,
        "extension": [{"url": "urn:pcvhub:administration-event-id",
                       "valueString": claim.administration_event_id}],
    }
    if modifiers:
        item["modifier"] = modifiers
    resource = {
        "resourceType": "Claim",
        "id": re.sub(r"[^A-Za-z0-9\-.]", "-", claim.claim_id)[:64],
        "identifier": [{"system": "urn:pcvhub:claim-id", "value": claim.claim_id},
                       {"system": "urn:pcvhub:coi", "value": claim.coi}],
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                             "code": "professional"}]},
        "use": "claim",
        "patient": {"identifier": {"system": "urn:pcvhub:patient-pseudonym",
                                   "value": claim.patient_pseudonym}},
        "created": created.isoformat(),
        "insurer": {"identifier": {"system": "urn:pcvhub:payer-id", "value": claim.payer_id},
                    **({"display": claim.payer_name} if claim.payer_name else {})},
        "provider": {"identifier": {"system": "http://hl7.org/fhir/sid/us-npi",
                                    "value": claim.billing_provider.npi},
                     "display": claim.billing_provider.name},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                           "processpriority", "code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {
            "identifier": {"system": f"urn:pcvhub:member-id:{claim.payer_id}",
                           "value": claim.member_id}}}],
        "diagnosis": [{"sequence": n, "diagnosisCodeableConcept": {"coding": [{
            "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]}}
            for n, code in enumerate(claim.diagnosis_codes, start=1)],
        "item": [item],
        "total": money,
    }
    return FhirClaim.model_validate(resource)


@dataclass(frozen=True)
class WrittenClaims:
    """What ``ClaimOutbox.write`` produced: the 837P files and the FHIR Claim files."""

    x12_files: tuple[Path, ...]
    fhir_files: tuple[Path, ...]
    not_in_x12: tuple[str, ...]  # claim ids sent only as FHIR (not in US dollars)


class ClaimOutbox:
    """Writes the claims of the billing projection as files a clearinghouse picks up."""

    def __init__(self, folder: Path, sender_id: str, submitter_name: str, contact_name: str,
                 contact_phone: str, production: bool = False) -> None:
        self.folder = Path(folder)
        self.sender_id = sender_id
        self.submitter_name = submitter_name
        self.contact_name = contact_name
        self.contact_phone = contact_phone
        self.production = production

    def write(self, claims: Iterable[ClaimRecord], created: datetime | None = None
              ) -> WrittenClaims:
        """One 837P per payer (USD claims) and one FHIR Claim per claim; returns the paths.

        The control number derives from the claims in the interchange, so writing the same
        claims again produces the same interchange, which a receiver detects as a repeat.
        """
        created = created or datetime.now(UTC)
        self.folder.mkdir(parents=True, exist_ok=True)
        claims = list(claims)
        x12_files: list[Path] = []
        fhir_files: list[Path] = []
        for claim in claims:
            resource = fhir_claim(claim, created)
            path = self.folder / f"{resource.id}.claim.json"
            write_atomically(path, resource.model_dump_json(indent=1).encode())
            fhir_files.append(path)
        billable = [c for c in claims if c.currency == X12_CURRENCY]
        for payer_id in sorted({c.payer_id for c in billable}):
            batch = sorted((c for c in billable if c.payer_id == payer_id),
                           key=lambda c: c.claim_id)
            digest = hashlib.sha256("\x1f".join(c.claim_id for c in batch).encode()).digest()
            control = int.from_bytes(digest[:8], "big") % 999_999_999 + 1
            text = render_837p(batch, Interchange(
                self.sender_id, payer_id, self.submitter_name, self.contact_name,
                self.contact_phone, batch[0].payer_name or payer_id, control, self.production),
                created)
            checked = validate_x12(text)
            if not checked.valid:
                raise ClaimNotBillable(f"the 837P for payer {payer_id} fails X12 validation: "
                                       + "; ".join(str(f) for f in checked.findings))
            path = self.folder / f"{payer_id}-{control:09d}.837"
            write_atomically(path, text.encode("ascii"))
            x12_files.append(path)
        return WrittenClaims(tuple(x12_files), tuple(fhir_files),
                             tuple(c.claim_id for c in claims if c.currency != X12_CURRENCY))


# -- remittances in ----------------------------------------------------------------------

@dataclass(frozen=True)
class Adjustment:
    """One CAS triplet: group (CO, PR, OA, PI), CARC, amount."""

    group: str
    reason: str
    amount: Decimal


@dataclass(frozen=True)
class ClaimPayment:
    """One CLP loop (2100) of an 835, with the header facts it is paid under."""

    position: int  # 1-based order of the CLP in the file
    claim_id: str
    status_code: str  # CLP02
    charge: Decimal
    paid: Decimal
    patient_responsibility: Decimal
    payer_claim_number: str | None
    adjustments: tuple[Adjustment, ...]
    remarks: tuple[str, ...]
    line: int | None
    text: str  # the loop's segments, for the rejected topic
    payer_id: str | None  # REF*2U of the payer (1000A), if given
    trace_number: str  # TRN02
    paid_on: date  # BPR16
    currency: str  # CUR02, else USD

    @property
    def largest_adjustment(self) -> Adjustment | None:
        return max(self.adjustments, key=lambda a: a.amount, default=None)


class UnreadableRemittance(ValueError):
    """The file is not an 835 the connector can apply; the message says why."""


def _decimal(value: str | None, where: str) -> Decimal:
    try:
        return Decimal(value) if value else Decimal(0)
    except InvalidOperation:
        raise UnreadableRemittance(f"{where} is {value!r}, not an amount") from None


def read_remittance(text: str) -> list[ClaimPayment]:
    """Every claim payment of an 835 interchange, read with pyx12's loop-aware reader."""
    with _PYX12_LOCK:  # so that no validation running beside it collects its log lines
        return _read_remittance(text)


def _read_remittance(text: str) -> list[ClaimPayment]:
    unreadable = "not an X12 interchange pyx12 can read"
    try:
        reader = pyx12.x12context.X12ContextReader(
            pyx12.params.params(), pyx12.error_handler.err_handler(), io.StringIO(text))
    except Exception as exc:  # pyx12 raises many kinds on garbage (see validate_x12)
        raise UnreadableRemittance(f"{unreadable}: {_pyx12_reason(exc)}") from None
    payments: list[ClaimPayment] = []
    header: dict[str, Any] = {}
    try:
        for node in reader.iter_segments("2100"):
            kind = node.id
            if kind == "GS" and node.get_value("GS08") != X12_835_VERSION:
                raise UnreadableRemittance(f"GS08 is {node.get_value('GS08')!r}: this is not "
                                           f"an {X12_835_VERSION} remittance (835)")
            if kind == "ST":  # each transaction has its own payment header
                header = {"currency": X12_CURRENCY, "payer_id": None}
            elif kind == "BPR":
                header["paid_on"] = _date(node.get_value("BPR16"), "BPR16")
            elif kind == "TRN":
                header["trace_number"] = node.get_value("TRN02") or ""
            elif kind == "CUR":
                header["currency"] = node.get_value("CUR02") or X12_CURRENCY
            elif kind == "REF" and node.get_value("REF01") == "2U":
                header["payer_id"] = node.get_value("REF02")
            elif kind == "2100":
                payments.append(_claim_payment(node, len(payments) + 1, header))
    except UnreadableRemittance:
        raise
    except Exception as exc:  # pyx12 raises many kinds on garbage (see validate_x12)
        raise UnreadableRemittance(f"{unreadable}: {_pyx12_reason(exc)}") from None
    finally:
        reader.close()
    if not payments:
        raise UnreadableRemittance("the 835 holds no claim payment (CLP)")
    return payments


def _pyx12_reason(exc: Exception) -> str:
    """pyx12's own errors say what and where; for anything else, say what it was."""
    return str(exc) if isinstance(exc, pyx12.errors.X12Error) else f"{type(exc).__name__}: {exc}"


def _date(value: str | None, where: str) -> date:
    try:
        return datetime.strptime(value or "", "%Y%m%d").date()
    except ValueError:
        raise UnreadableRemittance(f"{where} is {value!r}, not a date CCYYMMDD") from None


def _claim_payment(node: Any, position: int, header: Mapping[str, Any]) -> ClaimPayment:
    adjustments: list[Adjustment] = []
    remarks: list[str] = []
    lines: list[str] = []
    first_line: int | None = None
    for seg in node.iterate_segments():
        segment = seg["segment"]
        lines.append(segment.format())  # with its terminator
        first_line = first_line or seg.get("cur_line_number")
        seg_id = seg["id"]
        if seg_id == "CAS":
            group = segment.get_value("CAS01") or ""
            for n in range(2, 19, 3):  # up to six (reason, amount, quantity) triplets
                reason = segment.get_value(f"CAS{n:02d}")
                if reason:
                    adjustments.append(Adjustment(group, reason, _decimal(
                        segment.get_value(f"CAS{n + 1:02d}"), f"CAS{n + 1:02d}")))
        elif seg_id == "MOA":
            remarks += [segment.get_value(f"MOA{n:02d}") for n in range(3, 8)
                        if segment.get_value(f"MOA{n:02d}")]
        elif seg_id == "LQ" and segment.get_value("LQ01") == "HE":
            remarks.append(segment.get_value("LQ02"))
    if "trace_number" not in header or "paid_on" not in header:
        raise UnreadableRemittance("a claim payment comes before the BPR and TRN segments "
                                   "that say when and under which trace number it was paid")
    return ClaimPayment(
        position=position, claim_id=node.get_value("CLP01") or "",
        status_code=node.get_value("CLP02") or "",
        charge=_decimal(node.get_value("CLP03"), "CLP03"),
        paid=_decimal(node.get_value("CLP04"), "CLP04"),
        patient_responsibility=_decimal(node.get_value("CLP05"), "CLP05"),
        payer_claim_number=node.get_value("CLP07") or None,
        adjustments=tuple(adjustments), remarks=tuple(dict.fromkeys(remarks)),
        line=first_line, text="".join(lines), payer_id=header.get("payer_id"),
        trace_number=header["trace_number"], paid_on=header["paid_on"],
        currency=header["currency"])


#: CLP02 codes of a claim the payer processed (primary, secondary, tertiary, forwarded).
PROCESSED = frozenset({"1", "2", "3", "19", "20", "21"})
DENIED = "4"
REVERSAL = "22"


def adjudication(payment: ClaimPayment) -> dict[str, Any]:
    """The ClaimAdjudicated payload (without claim/payer ids) an 835 claim payment states."""
    denied = payment.status_code == DENIED or (
        payment.paid == 0 and payment.patient_responsibility == 0)
    if denied:
        status, allowed = "DENIED", Decimal(0)
    elif payment.paid + payment.patient_responsibility >= payment.charge:
        status, allowed = "APPROVED", payment.paid + payment.patient_responsibility
    else:
        status, allowed = "PARTIALLY_APPROVED", payment.paid + payment.patient_responsibility
    largest = payment.largest_adjustment
    return {"status": status, "allowed_amount": allowed.quantize(Decimal("0.01")),
            "currency": payment.currency,
            "denial_reason_code": largest.reason if largest and status != "APPROVED" else None,
            "remark_codes": list(payment.remarks) or None,
            "payer_claim_number": payment.payer_claim_number}


@dataclass(frozen=True)
class SubmittedClaim:
    """What the canonical log says about a claim: its therapy, payer and amount."""

    coi: str
    payer_id: str
    amount: Decimal
    currency: str


class ClaimIndex:
    """claim id -> the accepted ClaimSubmitted, folded from the canonical log (thread-safe)."""

    def __init__(self) -> None:
        self._claims: dict[str, SubmittedClaim] = {}
        self._lock = threading.Lock()

    def observe(self, record: VerifiedRecord) -> None:
        """A ``Connector.watch`` observer."""
        if record.event_type != "ClaimSubmitted":
            return
        p = record.payload
        with self._lock:
            self._claims[p["claim_id"]] = SubmittedClaim(record.coi, p["payer_id"], p["amount"],
                                                         p["currency"])

    def get(self, claim_id: str) -> SubmittedClaim | None:
        with self._lock:
            return self._claims.get(claim_id)


def payment_refusal(payment: ClaimPayment, claim: SubmittedClaim | None) -> Outcome | None:
    """The connector's refusal of a claim payment it cannot apply, or None if it can."""
    where = f"claim payment {payment.position} (CLP*{payment.claim_id}" + (
        f", line {payment.line})" if payment.line else ")")
    if claim is None:
        return Outcome.refuse(RULE, "UNKNOWN_CLAIM", (
            f"{where} names claim {payment.claim_id!r}, which no accepted ClaimSubmitted "
            "names; the payer paid a claim the hub never billed: check CLP01 against the "
            "claims sent"))
    if payment.status_code == REVERSAL:
        return Outcome.refuse(RULE, "REVERSAL_NOT_SUPPORTED", (
            f"{where} reverses an earlier payment (CLP02 = 22); the hub posts no reversals: "
            "post it by hand"))
    if payment.status_code not in PROCESSED | {DENIED}:
        return Outcome.refuse(RULE, "UNSUPPORTED_CLAIM_STATUS", (
            f"{where} has status CLP02 = {payment.status_code!r}, which is no payment decision "
            "on a claim (1-4, 19-21)"))
    if payment.payer_id is not None and payment.payer_id != claim.payer_id:
        return Outcome.refuse(RULE, "WRONG_PAYER", (
            f"{where} comes from payer {payment.payer_id} (REF*2U), but claim "
            f"{payment.claim_id} was billed to {claim.payer_id}"))
    if payment.currency != claim.currency:
        return Outcome.refuse(RULE, "WRONG_CURRENCY", (
            f"{where} is in {payment.currency}, but claim {payment.claim_id} was billed in "
            f"{claim.currency}"))
    if payment.charge != claim.amount:
        return Outcome.refuse(RULE, "CHARGE_MISMATCH", (
            f"{where} says the claim charged {payment.charge} (CLP03), but claim "
            f"{payment.claim_id} billed {claim.amount}; the payer answered another version "
            "of the claim"))
    return None


class RemittanceDrop(DropConnector):
    """Applies 835 files dropped into an inbox through a ``Connector`` (source ``payer``)."""

    source = "payer"
    suffixes = REMITTANCE_SUFFIXES
    rule = RULE
    entries = "claim_payments"
    default_actor = "payer-gateway"
    default_site = "PAYER-GATEWAY"

    def __init__(self, connector: Connector, inbox: Path, *, verdict_timeout_s: float = 30.0,
                 settle_s: float = 0.3, force_polling: bool = False) -> None:
        super().__init__(connector, inbox, verdict_timeout_s=verdict_timeout_s,
                         settle_s=settle_s, force_polling=force_polling)
        self.claims = ClaimIndex()
        connector.watch(self.claims.observe)  # before connector.start(): sees the whole log

    def handle(self, path: Path, data: bytes) -> FileResult:
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as exc:
            return self._unreadable(path, data, f"byte {exc.start} is not ASCII; X12 "
                                    "interchanges are ASCII text")
        checked = validate_x12(text)
        if not checked.valid:
            reason = "; ".join(str(f) for f in checked.findings[:20])
            return self._unreadable(path, data, f"pyx12 finds the interchange invalid: "
                                    f"{reason}", checked)
        try:
            payments = read_remittance(text)
        except UnreadableRemittance as exc:
            return self._unreadable(path, data, str(exc), checked)
        entries = self._apply(payments, f"file://{path}")
        extra = {".999": checked.acknowledgement.encode()} if checked.acknowledgement else {}
        return FileResult(self.result(path.name, hashlib.sha256(data).hexdigest(), entries),
                          extra_files=extra)

    def _apply(self, payments: list[ClaimPayment], endpoint: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        issued_at = now_us()
        for payment in payments:
            entry: dict[str, Any] = {"claim_payment": payment.position, "line": payment.line,
                                     "claim_id": payment.claim_id}
            entries.append(entry)
            claim = self.claims.get(payment.claim_id)
            refusal = payment_refusal(payment, claim)
            if refusal is not None:
                # on the log the refusal stands alone, so it says the file was not given up
                recorded = replace(refusal, reason=f"{refusal.reason}; the other claims of the "
                                                   "file go on")
                refusal_id = self.refuse(payment.text.encode(),
                                         f"{endpoint}#clp={payment.position}", recorded,
                                         coi=claim.coi if claim else None)
                entry.update(refusal.as_result(refused_by="connector"),
                             refusal_event_id=refusal_id)
                continue
            assert claim is not None  # payment_refusal refuses unknown claims
            entry["coi"] = claim.coi
            entry["events"] = [self.post(request)
                               for request in self._requests(payment, claim, issued_at)]
            statuses = {e["status"] for e in entry["events"]}
            entry["status"] = next((s.value for s in (Status.REFUSED, Status.PENDING,
                                                      Status.ACCEPTED, Status.ALREADY_ACCEPTED)
                                    if s in statuses), Status.ACCEPTED.value)
        return entries

    def _requests(self, payment: ClaimPayment, claim: SubmittedClaim, issued_at: int
                  ) -> list[EventRequest]:
        # Event ids from the payer's trace number, not the file: a remittance re-sent in a
        # new interchange (new ISA control number) still posts once.
        identity = ("835", claim.payer_id, payment.trace_number, payment.claim_id,
                    str(payment.position))
        ids = {kind: deterministic_event_id(*identity, kind)
               for kind in ("ClaimAdjudicated", "PaymentPosted")}
        requests = [EventRequest("ClaimAdjudicated", claim.coi, {
            "claim_id": payment.claim_id, "payer_id": claim.payer_id, **adjudication(payment)},
            occurred_at_us=issued_at, event_id=ids["ClaimAdjudicated"])]
        if payment.paid > 0:
            paid_on = datetime(payment.paid_on.year, payment.paid_on.month, payment.paid_on.day,
                               tzinfo=UTC)
            requests.append(EventRequest("PaymentPosted", claim.coi, {
                "claim_id": payment.claim_id, "payer_id": claim.payer_id,
                "amount": payment.paid.quantize(Decimal("0.01")), "currency": payment.currency,
                "remittance_ref": payment.trace_number, "paid_on": paid_on},
                occurred_at_us=issued_at, event_id=ids["PaymentPosted"]))
        return requests

    def _unreadable(self, path: Path, data: bytes, reason: str,
                    checked: X12Validation | None = None) -> FileResult:
        return self.unreadable(
            path, data, "INVALID_835", f"remittance {path.name} was not applied: {reason}",
            reason, details={"findings": [vars(f) for f in checked.findings] if checked else []},
            extra_files=({".999": checked.acknowledgement.encode()}
                         if checked and checked.acknowledgement else {}))

