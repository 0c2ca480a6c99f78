"""Payer connector, no Kafka: 837P and FHIR Claim out, 835 remittances read and judged."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import pyx12.params
import pyx12.x12n_document
from fhir.resources.R4B.claim import Claim as FhirClaim

from pcvhub.connectors.payer import (
    ClaimNotBillable,
    ClaimOutbox,
    ClaimRecord,
    Interchange,
    Provider,
    SubmittedClaim,
    UnreadableRemittance,
    adjudication,
    fhir_claim,
    npi_is_valid,
    payment_refusal,
    read_remittance,
    render_837p,
    validate_x12,
)

CREATED = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)
CANCER_CENTER = Provider("1234567893", "PACIFIC CANCER CENTER", "123456789", "100 MAIN ST",
                         "SEATTLE", "WA", "981011234")
CLINIC = Provider("1245319599", "PACIFIC CANCER CLINIC", "987654321", "5 PINE ST", "SEATTLE",
                  "WA", "981015555")


def claim(claim_id: str = "CLM-1", **changes) -> ClaimRecord:
    base = ClaimRecord(
        claim_id=claim_id, coi="PCV-SEATTLE1-2026-0123456789ABX",
        administration_event_id="0190a3c4-0000-7000-8000-000000000001", payer_id="AETNA01",
        amount=Decimal("12500.00"), currency="USD", procedure_code="J3590",
        diagnosis_codes=("C43.5", "Z51.11"), service_date=date(2026, 1, 20),
        patient_pseudonym="PSN-a1b2c3d4", member_id="W123456789", billing_provider=CANCER_CENTER,
        payer_name="AETNA", procedure_modifiers=("JW",))
    return replace(base, **changes)


INTERCHANGE = Interchange("PCVHUB", "AETNA01", "PCVHUB BILLING", "BILLING DESK", "2065550100",
                          "AETNA", 42)


def pyx12_accepts(text: str) -> bool:
    """pyx12's own validator, called as its x12valid script does."""
    return pyx12.x12n_document.x12n_document(
        param=pyx12.params.params(), src_file=io.StringIO(text), fd_997=None, fd_html=None)


# -- 837P ----------------------------------------------------------------------------------

def test_an_837p_with_two_providers_passes_pyx12():
    claims = [claim("CLM-1"), claim("CLM-2", billing_provider=CLINIC, procedure_modifiers=(),
                                    diagnosis_codes=("C43.9",)), claim("CLM-3", units=2)]
    text = render_837p(claims, INTERCHANGE, CREATED)
    assert pyx12_accepts(text)
    checked = validate_x12(text)
    assert checked.valid and checked.findings == ()
    assert "AK9*A*1*1*1" in checked.acknowledgement  # pyx12's 999: accepted
    segments = text.split("~\n")
    assert segments[2] == "ST*837*0001*005010X222A1"
    assert [s for s in segments if s.startswith("HL*")] == [
        "HL*1**20*1", "HL*2*1*22*0", "HL*3*1*22*0", "HL*4**20*1", "HL*5*4*22*0"]
    assert "CLM*CLM-1*12500***22:B:1*Y*A*Y*Y" in segments
    assert "HI*ABK:C435*ABF:Z5111" in segments and "SV1*HC:J3590:JW*12500*UN*1***1" in segments
    assert "SV1*HC:J3590:JW*12500*UN*2***1" in segments
    assert "REF*6R*0190a3c4-0000-7000-8000-000000000001" in segments
    se = next(s for s in segments if s.startswith("SE*"))
    st_index = segments.index("ST*837*0001*005010X222A1")
    assert se == f"SE*{segments.index(se) - st_index + 1}*0001"


@pytest.mark.parametrize(("damage", "finding"), [
    (lambda t: t.replace("HI*ABK:C435*ABF:Z5111~\n", "", 1), "(HI) missing"),
    (lambda t: t.replace("CLM*CLM-1*12500", "CLM*CLM-1*12X00"), "CLM02"),
    (lambda t: re.sub(r"SE\*(\d+)\*", lambda m: f"SE*{int(m[1]) - 1}*", t), "SE count"),
])
def test_pyx12_finds_a_damaged_837p_invalid_and_says_where(damage, finding):
    text = damage(render_837p([claim()], INTERCHANGE, CREATED))
    assert not pyx12_accepts(text)
    checked = validate_x12(text)
    assert not checked.valid
    assert any(finding in str(f) for f in checked.findings), checked.findings


@pytest.mark.parametrize(("changes", "problem"), [
    ({"currency": "JPY"}, "currency is JPY; X12 837P amounts are US dollars"),
    ({"billing_provider": replace(CANCER_CENTER, npi="1234567890")}, "not a valid NPI"),
    ({"diagnosis_codes": ("melanoma",)}, "'melanoma', which is not an ICD-10-CM code"),
    ({"diagnosis_codes": ()}, "must hold 1 to 12"),
    ({"patient_pseudonym": "PSN*1"}, "contains an X12 delimiter"),
    ({"procedure_modifiers": ("JW", "KX", "GA", "GY", "59")}, "more than the 4 modifiers"),
    ({"amount": Decimal("12.345")}, "whole cents"),
    ({"claim_id": "C" * 21}, "1 to 20 characters"),
])
def test_what_an_837p_cannot_carry_is_refused_by_field(changes, problem):
    with pytest.raises(ClaimNotBillable, match=problem.replace("(", r"\(")):
        render_837p([claim(**changes)], INTERCHANGE, CREATED)


def test_one_837p_goes_to_one_payer():
    with pytest.raises(ClaimNotBillable, match="goes to one payer"):
        render_837p([claim(), claim("CLM-2", payer_id="UHC01")], INTERCHANGE, CREATED)


def test_npi_check_digit():
    assert npi_is_valid("1234567893") and npi_is_valid("1245319599")
    assert not npi_is_valid("1234567890") and not npi_is_valid("123456789")


# -- FHIR Claim --------------------------------------------------------------------------

def test_a_fhir_claim_validates_and_carries_the_claim():
    resource = fhir_claim(claim(currency="JPY", amount=Decimal("1250000")), CREATED)
    document = json.loads(resource.model_dump_json())
    again = FhirClaim.model_validate(document)  # the written JSON reads back as a Claim
    assert again.id == "CLM-1" and document["use"] == "claim"
    assert document["total"] == {"value": 1250000, "currency": "JPY"}
    assert document["provider"]["identifier"]["value"] == "1234567893"
    assert [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in document["diagnosis"]] \
        == ["C43.5", "Z51.11"]
    item = document["item"][0]
    assert item["productOrService"]["coding"][0]["code"] == "J3590"
    assert item["modifier"][0]["coding"][0]["code"] == "JW"
    assert item["extension"][0]["valueString"] == claim().administration_event_id
    assert document["patient"]["identifier"]["value"] == "PSN-a1b2c3d4"


def test_a_projection_row_maps_to_a_claim_record():
    row = {"claim_id": "CLM-9", "coi": "PCV-X", "administration_event_id": "e1",
           "payer_id": "AETNA01", "amount": "99.50", "currency": "USD",
           "procedure_code": "J3590", "diagnosis_codes": ["C43.5"],
           "service_date": datetime(2026, 1, 20, 8, tzinfo=UTC),
           "patient_pseudonym": "PSN-1", "member_id": "M1", "procedure_modifiers": None,
           "units": None, **{f"billing_provider_{k}": v for k, v in vars(CLINIC).items()}}
    record = ClaimRecord.from_row(row)
    assert record.amount == Decimal("99.50") and record.service_date == date(2026, 1, 20)
    assert record.billing_provider == CLINIC and record.units == 1
    assert record.procedure_modifiers == () and record.diagnosis_codes == ("C43.5",)


def test_the_outbox_writes_837p_per_payer_and_fhir_per_claim(tmp_path):
    outbox = ClaimOutbox(tmp_path, "PCVHUB", "PCVHUB BILLING", "BILLING DESK", "2065550100")
    claims = [claim("CLM-1"), claim("CLM-2", payer_id="UHC01", payer_name="UHC"),
              claim("CLM-3", currency="JPY", amount=Decimal("1250000"))]
    written = outbox.write(claims, CREATED)
    assert len(written.x12_files) == 2 and len(written.fhir_files) == 3
    assert written.not_in_x12 == ("CLM-3",)
    for path in written.x12_files:
        assert pyx12_accepts(path.read_text())
    assert "CLM-3" not in "".join(p.read_text() for p in written.x12_files)
    first = {p.name: p.read_bytes() for p in written.x12_files}
    again = outbox.write(claims, CREATED)  # the same claims: the same interchanges
    assert {p.name: p.read_bytes() for p in again.x12_files} == first


# -- 835 ------------------------------------------------------------------------------------

def remittance_835(claims: list[tuple[str, str, str, str, str]], *, trace: str = "EFT0001",
                   payer_ref: str | None = None, currency: str | None = None,
                   paid_on: str = "20260301", extra_segments: tuple[str, ...] = ()) -> str:
    """An 005010X221A1 835 paying ``claims``: (claim id, CLP02, charge, paid, CAS segments
    separated by ``|``); CLP05 is what the PR adjustments leave the patient to pay."""
    body = [f"BPR*I*{sum(Decimal(c[3]) for c in claims)}*C*ACH*CCP*01*999999999*DA*123456*"
            f"1512345678**01*999988880*DA*98765*{paid_on}",
            f"TRN*1*{trace}*1512345678"]
    if currency:
        body.append(f"CUR*PR*{currency}")
    body += ["DTM*405*20260301", "N1*PR*AETNA"]
    body += ["N3*1 PAYER WAY", "N4*HARTFORD*CT*061560001"]
    if payer_ref:
        body.append(f"REF*2U*{payer_ref}")
    body += ["PER*BL*EDI DESK*TE*8005550000", "N1*PE*PACIFIC CANCER CENTER*XX*1234567893",
             "LX*1"]
    for claim_id, status, charge, paid, cas in claims:
        adjustments = [c for c in cas.split("|") if c]
        patient_owes = sum(Decimal(c.split("*")[3]) for c in adjustments if c[4:6] == "PR")
        body += [f"CLP*{claim_id}*{status}*{charge}*{paid}*{patient_owes or ''}*12*"
                 f"PCN{claim_id}*22*1", *adjustments]
        body += ["NM1*QC*1*PSN-a1b2c3d4*****MI*W123456789", *extra_segments]
    segments = ["ISA*00*          *00*          *ZZ*AETNA01        *ZZ*PCVHUB         *260301*"
                "0900*^*00501*000000101*0*P*:", "GS*HP*AETNA01*PCVHUB*20260301*0900*101*X*"
                "005010X221A1", "ST*835*0001", *body, f"SE*{len(body) + 2}*0001", "GE*1*101",
                "IEA*1*000000101"]
    return "~\n".join(segments) + "~\n"


def test_an_835_is_read_into_claim_payments():
    text = remittance_835([
        ("CLM-1", "1", "12500", "12500", ""),
        ("CLM-2", "1", "12500", "9000", "CAS*CO*45*3000|CAS*PR*2*500"),
        ("CLM-3", "4", "12500", "0", "CAS*CO*50*12500"),
    ], payer_ref="AETNA01", extra_segments=("MOA***M15*N115",))
    assert validate_x12(text).valid, validate_x12(text).findings
    full, partial, denied = read_remittance(text)
    assert (full.claim_id, full.paid, full.trace_number, full.paid_on, full.currency,
            full.payer_id) == ("CLM-1", Decimal(12500), "EFT0001", date(2026, 3, 1), "USD",
                               "AETNA01")
    assert adjudication(full) == {"status": "APPROVED", "allowed_amount": Decimal("12500.00"),
                                  "currency": "USD", "denial_reason_code": None,
                                  "remark_codes": ["M15", "N115"],
                                  "payer_claim_number": "PCNCLM-1"}
    assert [(a.group, a.reason, a.amount) for a in partial.adjustments] == [
        ("CO", "45", Decimal(3000)), ("PR", "2", Decimal(500))]
    assert adjudication(partial)["status"] == "PARTIALLY_APPROVED"
    assert adjudication(partial)["allowed_amount"] == Decimal("9500.00")  # paid + patient
    assert adjudication(partial)["denial_reason_code"] == "45"
    assert adjudication(denied)["status"] == "DENIED"
    assert adjudication(denied)["allowed_amount"] == Decimal("0.00")
    assert adjudication(denied)["denial_reason_code"] == "50"
    assert denied.text.startswith("CLP*CLM-3*4*12500*0") and denied.line is not None


def test_a_remittance_for_what_was_never_billed_is_refused_with_its_reason():
    text = remittance_835([("CLM-1", "1", "12500", "12500", ""),
                           ("CLM-7", "22", "12500", "-12500", "")], payer_ref="UHC01")
    known = SubmittedClaim("PCV-X", "AETNA01", Decimal("12500.00"), "USD")
    first, reversal = read_remittance(text)
    refused = payment_refusal(first, None)
    code, reason = refused.code, refused.reason
    assert code == "UNKNOWN_CLAIM" and "'CLM-1', which no accepted ClaimSubmitted" in reason
    assert payment_refusal(first, known).code == "WRONG_PAYER"
    assert payment_refusal(replace(first, payer_id=None), known) is None
    assert payment_refusal(reversal, known).code == "REVERSAL_NOT_SUPPORTED"
    assert payment_refusal(replace(first, payer_id=None, charge=Decimal(99)), known).code == \
        "CHARGE_MISMATCH"
    assert payment_refusal(replace(first, payer_id=None, currency="JPY"), known).code == \
        "WRONG_CURRENCY"


@pytest.mark.parametrize(("text", "problem"), [
    ("this is not X12", "not an X12 interchange"),
    (render_837p([claim()], INTERCHANGE, CREATED), "not an 005010X221A1 remittance"),
])
def test_what_is_not_an_835_is_unreadable(text, problem):
    with pytest.raises(UnreadableRemittance, match=problem):
        read_remittance(text)


def test_an_invalid_835_is_found_invalid_with_its_place():
    text = remittance_835([("CLM-1", "1", "12500", "12500", "")]).replace(
        "ST*835*0001", "ST*835*0001*005010X221A1")
    checked = validate_x12(text)
    assert not checked.valid
    assert any("ST03" in f.message and "Not Used" in f.message for f in checked.findings)
    assert not validate_x12("ISA*garbage~").valid
