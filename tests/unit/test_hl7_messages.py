"""HL7 v2 message checks, ACKs and mapping, without a broker.

Given a message, when it is checked and mapped for the connector's site, then it becomes
the expected event payload, or a problem naming segment, field and table 0357 code.
The builders here are shared with the MLLP integration tests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from pcvhub.config import KafkaSecurity, Settings
from pcvhub.connectors.core import Connector
from pcvhub.connectors.hl7.mapping import MessageMapper
from pcvhub.connectors.hl7.messages import HL7Problem, ack, check, decode_frame
from pcvhub.connectors.identity import Pseudonymiser
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.registry import KeyRegistry
from pcvhub.trust.signing import EventSigner, HybridKeyPair

SITE = "KYOTO01"
AUTHORITY = "KUH"


def now_dtm(offset_s: float = 0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return moment.strftime("%Y%m%d%H%M%S") + "+0000"


def msh(kind: str, control_id: str, facility: str = SITE, structure: str = "") -> str:
    return (f"MSH|^~\\&|EPIC|{facility}|PCVHUB|HUB|{now_dtm()}||{kind}{structure}|"
            f"{control_id}|P|2.5.1")


def pid(mrn: str, sex: str = "F", born: str = "19700101") -> str:
    return f"PID|1||{mrn}^^^{AUTHORITY}^MR||Doe^Jane||{born}|{sex}"


def adt_a01(control_id: str, mrn: str, trigger: str = "A01", sex: str = "F") -> str:
    return "\r".join([msh(f"ADT^{trigger}", control_id, structure="^ADT_A01"),
                      f"EVN|{trigger}|{now_dtm()}", pid(mrn, sex), "PV1|1|O"])


def orm_o01(control_id: str, mrn: str, placer: str = "PL-1", therapy: str = "PCV-MRNA") -> str:
    return "\r".join([msh("ORM^O01", control_id), pid(mrn),
                      f"ORC|NW|{placer}|||||||{now_dtm()}|||DR-TANAKA^Tanaka^Ken",
                      f"OBR|1|{placer}||{therapy}^Personalized neoantigen vaccine^99PCV"])


def oru_diagnosis(control_id: str, mrn: str) -> str:
    return "\r".join([
        msh("ORU^R01", control_id), pid(mrn),
        f"OBR|1|DX-1||PCV-DX^Cancer diagnosis^99PCV|||{now_dtm(-60)}",
        "OBX|1|CWE|29308-4^Diagnosis^LN||C43.5^Malignant melanoma of trunk^I10||||||F",
        "OBX|2|CWE|31205-8^Histology and behavior ICD-O-3^LN||8720/3^Melanoma^ICDO3||||||F",
        "OBX|3|CWE|PCV-TOPO^Primary site ICD-O-3^99PCV||C44.5^Skin of trunk^ICDO3||||||F",
        "OBX|4|CWE|21908-9^Stage group.clinical^LN||IIIB||||||F",
        "OBX|5|ST|PCV-STAGESYS^Staging system^99PCV||AJCC 8th edition||||||F",
        "OBX|6|ST|PCV-HLA^HLA type^99PCV||HLA-A*02:01~HLA-B*07:02||||||F"])


def oru_outcome(control_id: str, mrn: str) -> str:
    return "\r".join([
        msh("ORU^R01", control_id), pid(mrn),
        f"OBR|1|OC-1||PCV-OUTCOME^Outcome assessment^99PCV|||{now_dtm(-60)}",
        "OBX|1|ST|PCV-TIMEPOINT^Time point^99PCV||week-12||||||F",
        "OBX|2|CWE|PCV-RECIST^RECIST response^99PCV||PR||||||F",
        "OBX|3|CWE|PCV-CTDNA^ctDNA status^99PCV||NOT_DETECTED||||||F",
        "OBX|4|NM|PCV-CTDNA-MTM^ctDNA MTM/mL^99PCV||0.0||||||F",
        "OBX|5|CWE|PCV-VITAL^Vital status^99PCV||ALIVE||||||F"])


def ras_o17(control_id: str, mrn: str, dose_id: str = "DOSE-1") -> str:
    return "\r".join([
        msh("RAS^O17", control_id), pid(mrn),
        "ORC|RE|ADM-1", f"RXA|0|1|{now_dtm()}||PCV^Neoantigen vaccine^99PCV|1|mL|||"
        f"NURSE-SATO^Sato^Yui|||||{dose_id}|||||CP", "RXR|IM^Intramuscular^HL70162|LD"])


@pytest.fixture
def connector() -> Iterator[Connector]:
    signer = EventSigner("site-kyoto01-emr", "site-kyoto01-emr-k1", HybridKeyPair.generate())
    pseudonyms = Pseudonymiser.from_signer(
        EventSigner("hub-pseudonymiser", "hub-pseudonymiser-k1", HybridKeyPair.generate()))
    # No broker: mapping reads only the connector's identity and indexes.
    # no broker at all (nothing listens on port 9): plain settings, no credentials
    offline = Settings(bootstrap_servers="127.0.0.1:9", security=KafkaSecurity("PLAINTEXT"))
    unit = Connector(offline, "hl7", signer, SITE,
                     pseudonyms, KeyRegistry())
    yield unit
    unit.close()


def enrol(connector: Connector, mrn: str) -> str:
    """Put an accepted enrolment of ``mrn`` into the connector's patient index."""
    mapped = MessageMapper(connector).map(check(adt_a01("SETUP", mrn)))
    request = mapped.requests[0]
    issued = EventIssuer(connector.signer).issue("PatientEnrolled", request.coi,
                                                 request.payload)
    connector.patients.observe(issued.envelope, request.payload, accepted=True)
    return request.coi


def problem_of(connector: Connector, text: str) -> HL7Problem:
    with pytest.raises(HL7Problem) as caught:
        MessageMapper(connector).map(check(decode_frame(text.encode())))
    return caught.value


def test_admit_of_a_new_patient_enrols_a_pseudonym_not_the_mrn(connector):
    mapped = MessageMapper(connector).map(check(adt_a01("C1", "MRN-1", sex="M")))
    (request,) = mapped.requests
    assert request.event_type == "PatientEnrolled"
    p = request.payload
    assert p["patient_hash"] == connector.pseudonymiser.patient_hash("MRN-1") != "MRN-1"
    assert "MRN-1" not in repr(p)
    assert (p["site_id"], p["mrn_assigning_authority"], p["sex"]) == (SITE, AUTHORITY, "MALE")
    assert p["birth_date"] == dt.date(1970, 1, 1)
    assert request.coi.startswith(f"PCV-{SITE}-")


def test_repeated_control_id_maps_to_the_same_event_id_and_another_does_not(connector):
    mapper = MessageMapper(connector)
    first = mapper.map(check(adt_a01("C1", "MRN-1"))).requests[0].event_id
    again = mapper.map(check(adt_a01("C1", "MRN-1"))).requests[0].event_id
    other = mapper.map(check(adt_a01("C2", "MRN-1"))).requests[0].event_id
    assert first == again != other


def test_update_of_an_enrolled_patient_writes_nothing_and_warns_of_a_changed_sex(connector):
    coi = enrol(connector, "MRN-2")
    mapped = MessageMapper(connector).map(check(adt_a01("C3", "MRN-2", "A08", sex="M")))
    assert mapped.requests == [] and mapped.coi == coi
    (warning,) = mapped.warnings
    assert warning.where is not None and (warning.where.segment, warning.where.field) == \
        ("PID", 8)


def test_order_diagnosis_outcome_and_administration_map_to_their_events(connector):
    coi = enrol(connector, "MRN-3")
    mapper = MessageMapper(connector)
    (order,) = mapper.map(check(orm_o01("C4", "MRN-3", placer="PL-77"))).requests
    assert (order.event_type, order.coi) == ("TherapyOrdered", coi)
    assert order.payload["placer_order_number"] == "PL-77"
    assert order.payload["ordering_clinician"] == "DR-TANAKA"
    assert order.payload["therapy_type"] == "individualized-neoantigen-mRNA"
    (diagnosis,) = mapper.map(check(oru_diagnosis("C5", "MRN-3"))).requests
    assert diagnosis.payload["icd10_code"] == "C43.5"
    assert diagnosis.payload["icdo3_morphology"] == "8720/3"
    assert diagnosis.payload["stage"] == "IIIB"
    assert diagnosis.payload["hla_type"] == ["HLA-A*02:01", "HLA-B*07:02"]
    (outcome,) = mapper.map(check(oru_outcome("C6", "MRN-3"))).requests
    assert (outcome.payload["recist_response"], outcome.payload["ctdna_mtm_per_ml"]) == \
        ("PR", 0.0)
    # an administration needs the bedside identity check that the log holds
    problem = problem_of(connector, ras_o17("C7", "MRN-3"))
    assert (problem.ack, problem.code, str(problem.where)) == ("AE", "204", "RXA-15")
    check_event = EventIssuer(connector.signer).issue("IdentityVerified", coi, {
        "patient_hash": connector.pseudonymiser.patient_hash("MRN-3"), "step": "BEDSIDE",
        "method": "WRISTBAND_BARCODE", "result": "MATCH", "dose_id": "DOSE-1",
        "sample_id": None})
    connector.bedside.observe(check_event.envelope, "IdentityVerified",
                              {"step": "BEDSIDE", "result": "MATCH", "dose_id": "DOSE-1"})
    (given,) = mapper.map(check(ras_o17("C8", "MRN-3"))).requests
    assert given.payload["identity_check_event_id"] == check_event.envelope.event_id
    assert (given.payload["route"], given.payload["body_site"], given.payload["dose_number"]) \
        == ("INTRAMUSCULAR", "left deltoid", 1)


@pytest.mark.parametrize("text, ack_code, code, where", [
    (adt_a01("C1", "M").replace("|C1|", "||"), "AR", "101", "MSH-10"),
    (adt_a01("C1", "M").replace("ADT^A01", "ADT^A99"), "AR", "201", "MSH-9"),
    (adt_a01("C1", "M").replace("ADT^A01", "QRY^Q01"), "AR", "200", "MSH-9"),
    (adt_a01("C1", "M").replace("PID|1||", "PID#1##"), "AR", "100", "PID (segment #3)"),
    (adt_a01("C1", "M").replace("^~\\&", "^~"), "AR", "102", "MSH-2"),
    (adt_a01("C1", "M").replace("|2.5.1", "|2.1"), "AR", "203", "MSH-12"),
    (adt_a01("C1", "M").replace(f"|{SITE}|", "|OSAKA02|", 1), "AR", "103", "MSH-4"),
    (adt_a01("C1", "M").replace("M^^^KUH^MR", ""), "AE", "101", "PID-3"),
    (adt_a01("C1", "M").replace("^^^KUH^MR", "^^^^MR"), "AE", "101", "PID-3.4"),
    (adt_a01("C1", "M").replace("|19700101|F", "|19700101|X"), "AE", "103", "PID-8"),
    (orm_o01("C1", "UNKNOWN-MRN"), "AE", "204", "PID-3"),
])
def test_bad_messages_name_segment_field_and_code(connector, text, ack_code, code, where):
    problem = problem_of(connector, text)
    assert (problem.ack, problem.code, str(problem.where)) == (ack_code, code, where)


def test_unknown_panel_and_bad_coded_value_are_refused_at_their_obx(connector):
    enrol(connector, "MRN-4")
    panel = problem_of(connector, oru_outcome("C1", "MRN-4").replace("PCV-OUTCOME", "CBC"))
    assert (panel.code, str(panel.where)) == ("103", "OBR-4.1")
    value = problem_of(connector, oru_outcome("C2", "MRN-4").replace("||PR|", "||GOOD|"))
    assert (value.code, str(value.where)) == ("103", "OBX-5.1 (segment #2)")


def test_ack_carries_msa_and_an_err_naming_the_location(connector):
    problem = problem_of(connector, adt_a01("C1", "M").replace("|19700101|F", "|1970|F"))
    text = ack("AE", problem.refusal(), control_id="C1", ack_control_id="A1")
    segments = text.strip("\r").split("\r")
    assert segments[0].startswith("MSH|^~\\&|PCVHUB|HUB|") and "|ACK^^ACK|A1|P|2.5.1" in \
        segments[0]
    assert segments[1].startswith("MSA|AE|C1|")
    err = segments[2].split("|")
    assert err[2] == "PID^1^7" and err[3] == "102^Data type error^HL70357" and err[4] == "E"
    assert "PID-7" in err[8]
