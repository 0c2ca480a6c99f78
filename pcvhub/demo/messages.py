"""What the outside systems of the demo send, in their own formats.

The hospital's EMR speaks HL7 v2.5.1 (ADT^A01, ORU^R01, ORM^O01, RAS^O17) and FHIR R4
(Consent, Observation); the plant's MES and LIMS export CSV files; the payer answers with
X12 835 remittances. The hub's connectors read exactly these (see their docstrings for
the fields they take); the demo only writes them.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pcvhub.demo.cohort import AUTHORITY, Patient
from pcvhub.schemas.specifications import RECIPES
from pcvhub.times import utc_iso

SENDING_APPLICATION = "EPIC"


def when(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC)


def hl7_time(us: int) -> str:
    """An HL7 DTM with its UTC offset."""
    return when(us).strftime("%Y%m%d%H%M%S") + "+0000"


# -- HL7 v2 -----------------------------------------------------------------------------


def _msh(kind: str, control_id: str, site: str, at_us: int) -> str:
    return (f"MSH|^~\\&|{SENDING_APPLICATION}|{site}|PCVHUB|HUB|{hl7_time(at_us)}||{kind}|"
            f"{control_id}|P|2.5.1")


def _pid(patient: Patient) -> str:
    return (f"PID|1||{patient.mrn}^^^{AUTHORITY}^MR||{patient.family_name}^"
            f"{patient.given_name}||{patient.birth_date}|{patient.sex}")


def admit(patient: Patient, control_id: str, site: str, at_us: int) -> str:
    """ADT^A01: the patient is admitted to the vaccine programme (enrols the therapy)."""
    return "\r".join([_msh("ADT^A01^ADT_A01", control_id, site, at_us),
                      f"EVN|A01|{hl7_time(at_us)}", _pid(patient), "PV1|1|O|ONC^CLINIC 4"])


def diagnosis(patient: Patient, control_id: str, site: str, at_us: int) -> str:
    """ORU^R01 with a PCV-DX panel: the primary cancer (mCODE elements as OBX)."""
    c = patient.cancer
    hla = "~".join(patient.hla)
    return "\r".join([
        _msh("ORU^R01^ORU_R01", control_id, site, at_us), _pid(patient),
        f"OBR|1|DX-{patient.tag}||PCV-DX^Cancer diagnosis^99PCV|||{hl7_time(at_us)}",
        f"OBX|1|CWE|29308-4^Diagnosis^LN||{c.icd10}^{c.name}^I10||||||F",
        f"OBX|2|CWE|31205-8^Histology and behavior ICD-O-3^LN||{c.morphology}^^ICDO3||||||F",
        f"OBX|3|CWE|PCV-TOPO^Primary site ICD-O-3^99PCV||{c.topography}^^ICDO3||||||F",
        f"OBX|4|CWE|21908-9^Stage group.clinical^LN||{c.stage}||||||F",
        "OBX|5|ST|PCV-STAGESYS^Staging system^99PCV||AJCC 8th edition||||||F",
        f"OBX|6|ST|PCV-HLA^HLA type^99PCV||{hla}||||||F"])


def order(patient: Patient, control_id: str, site: str, at_us: int, placer: str,
          clinician: str) -> str:
    """ORM^O01 (new order) for the personalized mRNA vaccine."""
    return "\r".join([
        _msh("ORM^O01^ORM_O01", control_id, site, at_us), _pid(patient),
        f"ORC|NW|{placer}|||||||{hl7_time(at_us)}|||{clinician}^Okafor^Ada",
        f"OBR|1|{placer}||PCV-MRNA^Personalized neoantigen mRNA vaccine^99PCV"])


def administration(patient: Patient, control_id: str, site: str, at_us: int, *,
                   administration_id: str, dose_number: int, dose_id: str,
                   nurse: str) -> str:
    """RAS^O17: the dose was given (RXA-15 is the dose id on the vial label)."""
    return "\r".join([
        _msh("RAS^O17^RAS_O17", control_id, site, at_us), _pid(patient),
        f"ORC|RE|{administration_id}",
        f"RXA|0|{dose_number}|{hl7_time(at_us)}||PCV^Neoantigen mRNA vaccine^99PCV|0.5|mL|||"
        f"{nurse}^Lindqvist^Rut|||||{dose_id}|||||CP",
        "RXR|IM^Intramuscular^HL70162|LD"])


@dataclass(frozen=True)
class Ack:
    """An HL7 ACK as read back: MSA-1, MSA-2, MSA-3 and the ERR-8 texts."""

    code: str
    control_id: str
    text: str
    errors: tuple[str, ...]

    @classmethod
    def parse(cls, message: str) -> Ack:
        segments = [s.split("|") for s in message.split("\r") if s]
        msa = next(s for s in segments if s[0] == "MSA")
        errors = tuple(s[8] for s in segments if s[0] == "ERR" and len(s) > 8)
        return cls(msa[1], msa[2], msa[3] if len(msa) > 3 else "", errors)

    @property
    def reason(self) -> str:
        return "; ".join(self.errors) or self.text


# -- FHIR R4 ----------------------------------------------------------------------------


def _subject(patient: Patient) -> dict[str, Any]:
    return {"identifier": {"system": AUTHORITY, "value": patient.mrn}}


def consent(patient: Patient, scope: str, at_us: int) -> dict[str, Any]:
    """A signed consent of one scope (TREATMENT, GENOME_STORAGE, PAYER_SHARING, RESEARCH)."""
    legacy = "research" if scope == "RESEARCH" else "treatment"
    return {
        "resourceType": "Consent", "status": "active",
        "identifier": [{"system": "urn:pcc:consent", "value": f"{patient.mrn}-{scope}"}],
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": legacy}]},
        "category": [{"coding": [{"system": "urn:pcvhub:consent-scope", "code": scope}]}],
        "patient": _subject(patient), "dateTime": utc_iso(at_us),
        "sourceReference": {"reference": f"DocumentReference/consent-{patient.mrn}-{scope}"},
        "policyRule": {"text": "PCV programme consent form v3.2"},
    }


def outcome(patient: Patient, at_us: int, time_point: str, response: str,
            ctdna: str) -> dict[str, Any]:
    """An outcome assessment (RECIST response, ctDNA, vital status) as an Observation."""
    def coded(code: str, value: str) -> dict[str, Any]:
        return {"code": {"coding": [{"system": "urn:pcvhub", "code": code}]},
                "valueCodeableConcept": {"coding": [{"system": "urn:pcvhub", "code": value}]}}

    return {
        "resourceType": "Observation", "status": "final",
        "identifier": [{"system": "urn:pcc:assessment",
                        "value": f"{patient.mrn}-{time_point}"}],
        "code": {"coding": [{"system": "urn:pcvhub", "code": "PCV-OUTCOME"}]},
        "subject": _subject(patient), "effectiveDateTime": utc_iso(at_us),
        "component": [
            {"code": {"coding": [{"system": "urn:pcvhub", "code": "PCV-TIMEPOINT"}]},
             "valueString": time_point},
            coded("PCV-RECIST", response), coded("PCV-CTDNA", ctdna),
            coded("PCV-VITAL", "ALIVE"),
            {"code": {"coding": [{"system": "urn:pcvhub", "code": "PCV-CRITERIA"}]},
             "valueString": "RECIST 1.1"},
        ],
    }


# -- MES / LIMS files -----------------------------------------------------------------------

MES_COLUMNS = ("event", "coi", "occurred_at", "batch_id", "design_hash", "facility_id",
               "planned_dose_count", "batch_record_version", "step", "operator",
               "equipment_id", "parameter_hash", "test", "specification", "value", "unit",
               "result", "method_ref")
_EQUIPMENT = {"IVT mRNA synthesis": "BIOREACTOR-3", "purification": "TFF-2",
              "LNP formulation": "MIXER-1", "fill-finish": "FILL-02"}
#: (step, equipment) of the recipe of the demo's therapy type, in the recipe's order (R9)
MANUFACTURING_STEPS = tuple((step, _EQUIPMENT[step])
                            for step in RECIPES["individualized-neoantigen-mRNA"].steps)
#: (test, specification, value, unit, method): every result meets its specification
QC_TESTS = (("sterility", "no growth", "no growth", "", "Ph. Eur. 2.6.1"),
            ("endotoxin", "< 5", "0.8", "EU/mL", "Ph. Eur. 2.6.14"),
            # the value of the identity test is the digest of the sequence read from the
            # product: it must be the batch's design hash (``qc_results`` fills it in)
            ("identity", "sequence matches design", "", "", "NGS identity SOP-41"),
            ("mRNA integrity", ">= 80", "93", "%", "capillary electrophoresis SOP-12"))


def mes_file(rows: Iterable[dict[str, Any]]) -> bytes:
    """One MES / LIMS export: a CSV with every column, one record per row."""
    out = io.StringIO()
    writer = csv.DictWriter(out, MES_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue().encode()


def batch_started(coi: str, at_us: int, batch_id: str, design_hash: str,
                  doses: int) -> dict[str, Any]:
    return {"event": "ManufacturingStarted", "coi": coi, "occurred_at": utc_iso(at_us),
            "batch_id": batch_id, "design_hash": design_hash, "facility_id": "MFG-KOBE-1",
            "planned_dose_count": doses, "batch_record_version": "MBR-7"}


def batch_steps(coi: str, at_us: int, batch_id: str, operator: str) -> list[dict[str, Any]]:
    return [{"event": "ManufacturingStepCompleted", "coi": coi,
             "occurred_at": utc_iso(at_us + i * 3_600_000_000), "batch_id": batch_id,
             "step": step, "operator": operator, "equipment_id": equipment,
             "parameter_hash": hashlib.sha256(f"{batch_id}/{step}".encode()).hexdigest()}
            for i, (step, equipment) in enumerate(MANUFACTURING_STEPS)]


def qc_results(coi: str, at_us: int, batch_id: str,
               design_hash: str) -> list[dict[str, Any]]:
    return [{"event": "QcResultRecorded", "coi": coi,
             "occurred_at": utc_iso(at_us + i * 1_800_000_000), "batch_id": batch_id,
             "test": test, "specification": spec, "value": value or design_hash,
             "unit": unit or None,
             "result": "PASS", "method_ref": method}
            for i, (test, spec, value, unit, method) in enumerate(QC_TESTS)]


# -- X12 835 ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimPaid:
    """One claim payment of a remittance: paid in full (CLP02 1)."""

    claim_id: str
    charge: Decimal
    paid: Decimal
    member_id: str
    patient_pseudonym: str


@dataclass(frozen=True)
class Payer:
    payer_id: str
    name: str
    address: tuple[str, str, str, str]  # street, city, state, ZIP+4


def billed_claims(x12_837p: str) -> list[tuple[str, Decimal]]:
    """(claim id, charge) of every CLM segment of an 837P: what the payer was billed."""
    found = []
    for segment in x12_837p.replace("\n", "").split("~"):
        elements = segment.split("*")
        if elements[0] == "CLM":
            found.append((elements[1], Decimal(elements[2])))
    return found


def _amount(value: Decimal) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def remittance_835(payer: Payer, payee_name: str, payee_npi: str, receiver_id: str,
                   payments: Sequence[ClaimPaid], *, trace: str, paid_on: dt.date,
                   control_number: int) -> str:
    """An 005010X221A1 835: one payment (BPR, TRN) covering ``payments``."""
    day = paid_on.strftime("%Y%m%d")
    total = sum((p.paid for p in payments), Decimal(0))
    street, city, state, postal = payer.address
    body = [f"BPR*I*{_amount(total)}*C*ACH*CCP*01*999999999*DA*123456*1512345678**01*"
            f"999988880*DA*98765*{day}",
            f"TRN*1*{trace}*1512345678", f"DTM*405*{day}", f"N1*PR*{payer.name}",
            f"N3*{street}", f"N4*{city}*{state}*{postal}", f"REF*2U*{payer.payer_id}",
            "PER*BL*EDI DESK*TE*8005550000", f"N1*PE*{payee_name}*XX*{payee_npi}", "LX*1"]
    for p in payments:
        body += [f"CLP*{p.claim_id}*1*{_amount(p.charge)}*{_amount(p.paid)}**12*"
                 f"PCN{p.claim_id}*22*1",
                 f"NM1*QC*1*{p.patient_pseudonym}*****MI*{p.member_id}"]
    control = f"{control_number:09d}"
    short = day[2:]
    segments = [f"ISA*00*{' ' * 10}*00*{' ' * 10}*ZZ*{payer.payer_id:<15}*ZZ*"
                f"{receiver_id:<15}*{short}*0900*^*00501*{control}*0*P*:",
                f"GS*HP*{payer.payer_id}*{receiver_id}*{day}*0900*{control_number}*X*"
                "005010X221A1",
                "ST*835*0001", *body, f"SE*{len(body) + 2}*0001",
                f"GE*1*{control_number}", f"IEA*1*{control}"]
    return "~\n".join(segments) + "~\n"
