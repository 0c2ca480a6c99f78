"""FHIR resources to events, and the history Bundle, without a broker.

Given a validated R4 resource for an enrolled patient, when it is mapped, then it
becomes the expected event; when an element the hub needs is missing or outside its
code system, the problem names that element by FHIRPath.
"""

from __future__ import annotations

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from pcvhub.connectors.fhir.app import fhir_path, history_bundle
from pcvhub.connectors.fhir.mapping import ResourceMapper, ResourceProblem
from pcvhub.trust.issuer import EventIssuer

from .test_hl7_messages import connector, enrol  # noqa: F401  (connector is a fixture)


def validated(document: dict):
    return get_fhir_model_class(document["resourceType"]).model_validate(document)


def subject(mrn: str) -> dict:
    return {"identifier": {"system": "KUH", "value": mrn}}


def test_each_resource_maps_to_its_event(connector):  # noqa: F811
    coi = enrol(connector, "MRN-F1")
    mapper = ResourceMapper(connector)
    consent = mapper.map(validated({
        "resourceType": "Consent", "status": "active", "scope": {"coding": [{"code": "x"}]},
        "category": [{"coding": [{"system": "urn:pcvhub:consent-scope",
                                  "code": "GENOME_STORAGE"}]}],
        "patient": subject("MRN-F1"), "sourceReference": {"reference": "DocumentReference/7"},
        "provision": {"period": {"end": "2031-01-01"}}}), "emr")
    assert (consent.request.event_type, consent.request.coi) == ("ConsentGranted", coi)
    assert consent.request.payload["scope"] == "GENOME_STORAGE"
    assert consent.request.payload["expires_at"] == 1_924_992_000_000_000
    withdrawn = mapper.map(validated({
        "resourceType": "Consent", "status": "inactive",
        "scope": {"coding": [{"code": "research"}]}, "category": [{"text": "research"}],
        "patient": {"reference": f"Patient/{coi}"},
        "sourceAttachment": {"url": "https://docs.example/withdrawal/1"}}), "emr")
    assert withdrawn.request.event_type == "ConsentWithdrawn"
    assert withdrawn.request.payload["scope"] == "RESEARCH"
    outcome = mapper.map(validated({
        "resourceType": "Observation", "status": "final", "subject": subject("MRN-F1"),
        "code": {"coding": [{"code": "PCV-OUTCOME"}]},
        "effectiveDateTime": "2026-03-01T09:00:00+09:00",
        "component": [
            {"code": {"coding": [{"code": "PCV-TIMEPOINT"}]}, "valueString": "week-12"},
            {"code": {"coding": [{"code": "PCV-RECIST"}]},
             "valueCodeableConcept": {"coding": [{"code": "SD"}]}},
            {"code": {"coding": [{"code": "PCV-CTDNA"}]},
             "valueCodeableConcept": {"coding": [{"code": "DETECTED"}]}},
            {"code": {"coding": [{"code": "PCV-CTDNA-MTM"}]}, "valueQuantity": {"value": 1.5}},
            {"code": {"coding": [{"code": "PCV-VITAL"}]},
             "valueCodeableConcept": {"coding": [{"code": "ALIVE"}]}}]}), "emr")
    p = outcome.request.payload
    assert (p["recist_response"], p["ctdna_status"], p["ctdna_mtm_per_ml"]) == \
        ("SD", "DETECTED", 1.5)
    assert outcome.request.occurred_at_us == p["assessed_at"] == 1_772_323_200_000_000
    assert outcome.request.event_id is None  # no identifier: a fresh id


def test_a_repeated_order_maps_to_one_event_id_per_caller(connector):  # noqa: F811
    enrol(connector, "MRN-F2")
    order = validated({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"type": {"coding": [{"code": "PLAC"}]}, "value": "PL-9"}],
        "code": {"coding": [{"code": "PCV-PEPTIDE"}]}, "subject": subject("MRN-F2"),
        "requester": {"reference": "Practitioner/42"}})
    mapper = ResourceMapper(connector)
    first, again = mapper.map(order, "emr"), mapper.map(order, "emr")
    assert first.request.event_id == again.request.event_id is not None
    assert mapper.map(order, "other-emr").request.event_id != first.request.event_id
    assert first.request.payload["therapy_type"] == "individualized-neoantigen-peptide"
    assert first.request.payload["ordering_clinician"] == "Practitioner/42"


@pytest.mark.parametrize("document, path", [
    ({"resourceType": "Condition", "subject": subject("MRN-F3"),
      "code": {"coding": [{"system": "http://snomed.info/sct", "code": "372244006"}]}},
     "Condition.code"),
    ({"resourceType": "MedicationAdministration", "status": "completed",
      "subject": subject("MRN-F3"), "medicationCodeableConcept": {"text": "PCV"},
      "effectiveDateTime": "2026-03-01T09:00:00Z",
      "identifier": [{"system": "urn:pcvhub:dose-id", "value": "DOSE-1"}]},
     "MedicationAdministration.identifier"),
    ({"resourceType": "Consent", "status": "proposed", "scope": {"coding": [{"code": "x"}]},
      "category": [{"coding": [{"system": "urn:pcvhub:consent-scope", "code": "TREATMENT"}]}],
      "patient": subject("MRN-F3"), "sourceReference": {"reference": "DocumentReference/1"}},
     "Consent.status"),
    ({"resourceType": "Observation", "status": "final", "subject": subject("UNKNOWN"),
      "code": {"coding": [{"code": "PCV-OUTCOME"}]}}, "Observation.subject"),
])
def test_problems_name_the_failing_element(connector, document, path):  # noqa: F811
    enrol(connector, "MRN-F3")
    with pytest.raises(ResourceProblem) as caught:
        ResourceMapper(connector).map(validated(document), "emr")
    assert caught.value.path == path


def test_model_errors_become_fhirpaths():
    with pytest.raises(ValidationError) as caught:
        validated({"resourceType": "Condition", "subject": {"reference": "Patient/1"},
                   "code": {"coding": [{"code": 5}]}, "onsetDateTime": "yesterday"})
    paths = {fhir_path("Condition", tuple(e["loc"])) for e in caught.value.errors()}
    assert paths == {"Condition.code.coding[0].code", "Condition.onsetDateTime"}


def test_history_is_a_valid_bundle_of_provenance(connector):  # noqa: F811
    coi = enrol(connector, "MRN-F4")
    issuer = EventIssuer(connector.signer)
    events = [issuer.issue("ConsentGranted", coi, {
        "scope": "TREATMENT", "consent_document_ref": "DocumentReference/1",
        "expires_at": None, "consent_form_version": None}).envelope for _ in range(2)]
    bundle = history_bundle(events, "https://127.0.0.1:1")
    resources = [e["resource"] for e in bundle["entry"]]
    assert [r["id"] for r in resources] == [e.event_id for e in events]
    assert all(r["resourceType"] == "Provenance" for r in resources)
    links = [{x["url"]: x.get("valueBase64Binary") for x in r["extension"]} for r in resources]
    assert links[1]["urn:pcvhub:fhir:prev-hash"] == links[0]["urn:pcvhub:fhir:chain-digest"]
