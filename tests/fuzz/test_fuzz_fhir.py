"""FHIR R4 POSTs: whatever the body, the endpoint answers 201 (or 200 for a repeat) or an
``OperationOutcome`` whose issue names the failing element by FHIRPath, never a 500.

The refusals of this edge are the model's ``ValidationError`` (400, turned into FHIRPaths
by ``fhir_path``) and the mapping's ``ResourceProblem`` (422), both recorded on the
rejected topic. The test drives the real FastAPI app in-process (httpx's ASGI transport)
with a valid bearer token of a registered EMR and an offline connector, so a body goes
through exactly what a POST goes through: JSON, resource type, model validation, mapping,
signing and Avro encoding of the event (or of the refusal).

Seeds are valid resources of every type the endpoint takes, for an enrolled patient
with a bedside identity check on the log (the demo's Consent and Observation, and a
ServiceRequest, Condition and MedicationAdministration as the unit tests build them).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pcvhub.connectors.callers import issue_token
from pcvhub.connectors.fhir.app import RESOURCES, create_app
from pcvhub.connectors.fhir.mapping import (
    HLA_EXTENSION,
    ICDO3_SYSTEM,
    MORPHOLOGY_EXTENSION,
)
from pcvhub.demo import messages as demo
from pcvhub.demo.cohort import AUTHORITY, build_cohort

from .mutate import json_bytes, mutated_bytes, mutated_json
from .offline import OfflineConnector
from .profiles import bounded, fuzz_settings, label

pytestmark = pytest.mark.fuzz

BASE_URL = "https://fhir.fuzz.invalid"
PATIENT = build_cohort(1).patients[0]
AT_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
SUBJECT = {"identifier": {"system": AUTHORITY, "value": PATIENT.mrn}}
#: OperationOutcome.issue.code values (FHIR value set issue-type) a refusal may carry.
ISSUE_TYPES = {"invalid", "structure", "required", "value", "code-invalid", "not-found",
               "business-rule"}

SEEDS: list[dict[str, Any]] = [
    demo.consent(PATIENT, "TREATMENT", AT_US),
    {**demo.consent(PATIENT, "RESEARCH", AT_US), "status": "inactive"},
    demo.outcome(PATIENT, AT_US, "week-12", "PR", "NOT_DETECTED"),
    {**demo.outcome(PATIENT, AT_US, "week-24", "SD", "DETECTED"), "component": [
        *demo.outcome(PATIENT, AT_US, "week-24", "SD", "DETECTED")["component"],
        {"code": {"coding": [{"code": "PCV-CTDNA-MTM"}]},
         "valueQuantity": {"value": 1.5, "unit": "MTM/mL"}}]},
    {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
     "identifier": [{"type": {"coding": [{"code": "PLAC"}]}, "value": "PL-9"},
                    {"type": {"coding": [{"code": "FILL"}]}, "value": "FL-9"}],
     "code": {"coding": [{"code": "PCV-PEPTIDE"}]}, "subject": SUBJECT,
     "requester": {"reference": "Practitioner/42"}, "authoredOn": "2026-01-05T10:00:00+09:00"},
    {"resourceType": "Condition", "subject": SUBJECT,
     "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "C43.5"}]},
     "bodySite": [{"coding": [{"system": ICDO3_SYSTEM, "code": "C44.5"}]}],
     "extension": [
         {"url": MORPHOLOGY_EXTENSION,
          "valueCodeableConcept": {"coding": [{"system": ICDO3_SYSTEM, "code": "8720/3"}]}},
         {"url": HLA_EXTENSION, "valueCodeableConcept": {"coding": [{"code": "HLA-A*02:01"}]}}],
     "stage": [{"summary": {"coding": [{"code": "IIIB"}]}, "type": {"text": "AJCC 8th"}}],
     "onsetDateTime": "2026-01-02", "recordedDate": "2026-01-03"},
    {"resourceType": "MedicationAdministration", "status": "completed", "subject": SUBJECT,
     "medicationCodeableConcept": {"text": "PCV"},
     "effectiveDateTime": "2026-03-01T09:00:00Z",
     "identifier": [{"system": "urn:pcvhub:dose-id", "value": "DOSE-1"},
                    {"system": "urn:pcvhub:administration-id", "value": "ADM-1"}],
     "extension": [{"url": "urn:pcvhub:fhir:dose-number", "valuePositiveInt": 1}],
     "performer": [{"actor": {"reference": "Practitioner/7"}}],
     "dosage": {"route": {"coding": [{"system": "http://snomed.info/sct",
                                      "code": "78421000"}]},
                "site": {"text": "left deltoid"}}},
]


def _fresh_connector() -> OfflineConnector:
    """A connector that knows the patient and the bedside check of DOSE-1, and nothing
    any earlier example wrote (a repeat of a seed would otherwise answer 200)."""
    connector = OfflineConnector("fhir")
    coi = connector.enrol(PATIENT.mrn)
    connector.verify_bedside(coi, PATIENT.mrn, "DOSE-1")
    return connector


async def _post(connector: OfflineConnector, kind: str, body: bytes) -> httpx.Response:
    app = create_app(connector, BASE_URL)
    token = issue_token(connector.caller, BASE_URL)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=BASE_URL) as client:
        return await client.post(f"/{kind}", content=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})


def answers_or_refuses(kind: str, body: bytes) -> None:
    """POST ``body`` to ``/{kind}``: 201, or an OperationOutcome naming the element, with
    the refusal recorded. An exception in the app fails here (the ASGI transport raises
    what the app raised instead of answering 500). The connector is fresh, so no POST is
    a repeat (200)."""
    connector = _fresh_connector()
    try:
        with bounded(20, f"POST /{kind}"):
            response = asyncio.run(_post(connector, kind, body))
    finally:
        connector.close()
    label(f"{kind} {response.status_code}")
    assert response.status_code in (201, 400, 422), response.text
    document = response.json()
    if response.status_code == 201:
        assert document["resourceType"] == kind
        (written,) = connector.written
        assert written.envelope.event_id == document["id"]
        assert not connector.refusals
        return
    assert document["resourceType"] == "OperationOutcome"
    issues = document["issue"]
    assert issues
    for issue in issues:
        assert (issue["severity"], issue["code"] in ISSUE_TYPES) == ("error", True), issue
        assert issue["diagnostics"].strip()
        # only a body that is not JSON, or no object, has no element to name
        if issue["code"] != "structure" or "expression" in issue:
            (path,) = issue["expression"]
            assert path.startswith(kind), (path, kind)
    assert len(connector.refusals) == 1  # recorded on the rejected topic, with the body
    assert not connector.written


def _kind_of(document: Any) -> str:
    kind = document.get("resourceType") if isinstance(document, dict) else None
    return kind if kind in RESOURCES else "Consent"


@st.composite
def posts(draw: st.DrawFn) -> tuple[str, bytes]:
    """(resource type of the route, body): a damaged resource, mostly (8 in 13) to its own
    route, where it gets past the resource type check."""
    document = draw(mutated_json(SEEDS))
    kind = draw(st.sampled_from([_kind_of(document)] * 8 + list(RESOURCES)))
    return kind, json_bytes(document)


def _deep_extension(depth: int) -> list[Any]:
    """Extensions within extensions, ``depth`` levels down (a valid shape, absurdly deep)."""
    extension: dict[str, Any] = {"url": "urn:x", "valueString": "x"}
    for _ in range(depth):
        extension = {"url": "urn:x", "extension": [extension]}
    return [extension]


def _seed_with(index: int, change: Callable[[dict[str, Any]], None]) -> tuple[str, bytes]:
    document = copy.deepcopy(SEEDS[index])
    change(document)
    return document["resourceType"], json_bytes(document)


# Inputs that broke this property before their fix (found by the fuzzing, or by probing
# the same property by hand): each made the app raise, which a server answers with 500.
FOUND = [
    # nested deeper than json.loads reads, then deeper than the models validate:
    # RecursionError from json.loads and from model_validate
    ("Consent", b"[" * 100_000),
    _seed_with(0, lambda d: d.update(extension=_deep_extension(300))),
    # a whole number of 5000 digits: ValueError from json.loads
    ("Consent", b'{"resourceType": "Consent", "x": ' + b"9" * 5000 + b"}"),
    # a year or a month where the hub needs a date (valid FHIR dateTime precisions, which
    # the models keep as text): AttributeError in the mapping
    _seed_with(2, lambda d: d.update(effectiveDateTime="2026")),
    _seed_with(0, lambda d: d.update(provision={"period": {"end": "2031-04"}})),
    # a valueQuantity without a value: TypeError from float(None)
    _seed_with(3, lambda d: d["component"][-1].update(valueQuantity={"unit": "MTM/mL"})),
]


@fuzz_settings(0.75)
@given(posts())
@example(FOUND[0])
@example(FOUND[1])
@example(FOUND[2])
@example(FOUND[3])
@example(FOUND[4])
@example(FOUND[5])
def test_damaged_resources_are_recorded_or_refused_with_a_fhirpath(posted):
    answers_or_refuses(*posted)


@fuzz_settings(0.25)
@given(st.sampled_from(SEEDS), st.data())
def test_damaged_json_text_is_recorded_or_refused(seed, data):
    body = data.draw(mutated_bytes([json.dumps(seed).encode()]))
    answers_or_refuses(seed["resourceType"], body)


def test_every_seed_is_recorded():
    """The seeds get past every check (else the fuzzing above would test the first)."""
    for seed in SEEDS:
        connector = _fresh_connector()
        response = asyncio.run(_post(connector, seed["resourceType"], json_bytes(seed)))
        connector.close()
        assert response.status_code == 201, response.text
