"""The FHIR R4 endpoint on loopback, driven by HTTPS requests with signed bearer tokens.

Given a deployment whose gatekeeper worker registered the site's connector and EMR, and a
patient enrolled through the HL7 mapping, when the EMR POSTs a Consent and a
ServiceRequest, then each is 201 with its event on the FHIR ingress topic and accepted onto
the canonical log after the HL7 enrolment (one chain, two connectors); a repeat is not
written twice; every bad request gets an OperationOutcome naming the failing element, is
recorded on the rejected topic with its exact body, and the next valid POST succeeds; the
therapy's history comes back as a Bundle of Provenance matching the canonical log.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import httpx
import pytest

from pcvhub.connectors.callers import issue_token
from pcvhub.connectors.fhir import FhirServer
from pcvhub.connectors.hl7 import MessageMapper
from pcvhub.connectors.hl7.messages import check
from pcvhub.connectors.tls import LocalCA
from pcvhub.streams.sandbox import PASSPHRASE

from ..unit.test_hl7_messages import adt_a01
from .test_serve_deployment import (  # noqa: F401  (deployment is a fixture)
    CONNECTOR_ACTOR,
    BackgroundLoop,
    deployment,
)

pytestmark = pytest.mark.kafka


class Api:
    """A FHIR server in a background loop and an HTTPS client for it."""

    def __init__(self, deployment) -> None:  # noqa: F811
        self.deployment = deployment
        self.loop = BackgroundLoop()
        self.connector = deployment.connector("fhir")
        ca = LocalCA(deployment.hub.settings.data_dir / "tls", PASSPHRASE.encode())
        self.server = self.loop.run(FhirServer(self.connector, ca).start())
        self.http = httpx.Client(base_url=self.server.base_url, timeout=60,
                                 verify=deployment.tls_client(None))

    def post(self, kind: str, body: dict | bytes, caller=None, audience=None) -> httpx.Response:
        caller = self.deployment.emr if caller is None else caller
        token = issue_token(caller, audience or self.server.base_url)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(f"/{kind}", content=content, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})

    def close(self) -> None:
        self.http.close()
        self.loop.run(self.server.close())
        self.loop.close()


@pytest.fixture(scope="module")
def api(deployment):  # noqa: F811
    serving = Api(deployment)
    yield serving
    serving.close()


@pytest.fixture(scope="module")
def enrolled(deployment, api):  # noqa: F811
    """A patient enrolled through the HL7 mapping, accepted, known to the FHIR connector."""
    mrn = f"MRN-{uuid.uuid4().hex[:8]}"
    hl7 = deployment.connector("hl7", settle_s=0)
    (request,) = MessageMapper(hl7).map(check(adt_a01(f"FHIR-{mrn}", mrn))).requests
    (issued,) = hl7.emit([request])
    assert not api.connector.wait_accepted([issued.envelope.event_id], 120), \
        deployment.hub.worker_log()
    return mrn, request.coi


def subject(mrn: str) -> dict:
    return {"identifier": {"system": "KUH", "value": mrn}}


def consent(mrn: str) -> dict:
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"code": "treatment"}]},
            "category": [{"coding": [{"system": "urn:pcvhub:consent-scope",
                                      "code": "TREATMENT"}]}],
            "patient": subject(mrn),
            "dateTime": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "sourceReference": {"reference": "DocumentReference/consent-1"},
            "policyRule": {"text": "v3.2"}}


def service_request(mrn: str, placer: str) -> dict:
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}]},
                "value": placer}],
            "code": {"coding": [{"system": "urn:pcvhub:therapy", "code": "PCV-MRNA"}]},
            "subject": subject(mrn), "requester": {"identifier": {"value": "DR-TANAKA"}}}


def condition(mrn: str) -> dict:
    return {"resourceType": "Condition", "subject": subject(mrn),
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "C43.5"}]},
            "bodySite": [{"coding": [{"system": "urn:oid:2.16.840.1.113883.6.43.1",
                                      "code": "C44.5"}]}],
            "extension": [{"url": "http://hl7.org/fhir/us/mcode/StructureDefinition/"
                                  "mcode-histology-morphology-behavior",
                           "valueCodeableConcept": {"coding": [{"code": "8720/3"}]}}],
            "stage": [{"summary": {"coding": [{"code": "IIIB"}]}}]}


def refusal_of(deployment, body: bytes) -> dict:  # noqa: F811
    found = [p for env, kind, p in deployment.records("rejected")
             if kind == "EventRejected" and p["original"] == body
             and env.producer == CONNECTOR_ACTOR]
    assert len(found) == 1, f"{len(found)} refusals recorded for {body[:60]!r}"
    return found[0]


def test_consent_and_order_are_created_written_and_accepted_after_the_hl7_enrolment(
        api, deployment, enrolled):  # noqa: F811
    mrn, coi = enrolled
    granted = api.post("Consent", consent(mrn))
    assert granted.status_code == 201, granted.text
    placer = f"PL-{uuid.uuid4().hex[:6]}"
    ordered = api.post("ServiceRequest", service_request(mrn, placer))
    assert ordered.status_code == 201, ordered.text
    assert ordered.headers["X-Pcvhub-Therapy"] == coi
    assert ordered.headers["Location"].endswith(f"/ServiceRequest/{ordered.json()['id']}")
    ids = [granted.json()["id"], ordered.json()["id"]]
    missing = api.connector.wait_accepted(ids, 120)
    assert not missing, [p["reason"] for _, kind, p in deployment.records("rejected")
                         if p["rejected_event_id"] in missing]
    chain = [kind for env, kind, _ in deployment.records("events") if env.coi == coi]
    assert chain == ["PatientEnrolled", "ConsentGranted", "TherapyOrdered"]
    again = api.post("ServiceRequest", service_request(mrn, placer))
    assert again.status_code == 200 and again.json()["issue"][0]["code"] == "duplicate"
    written = [env for env, kind, p in deployment.records("ingress.fhir")
               if kind == "TherapyOrdered" and p["placer_order_number"] == placer]
    assert len(written) == 1

    history = api.http.get(f"/therapy/{coi}/history", headers={
        "Authorization": f"Bearer {issue_token(deployment.emr, api.server.base_url)}"})
    assert history.status_code == 200, history.text
    bundle = history.json()
    assert bundle["resourceType"] == "Bundle"
    provenance = [e["resource"] for e in bundle["entry"]]
    canonical = [env for env, _, _ in deployment.records("events") if env.coi == coi]
    assert [p["id"] for p in provenance] == [env.event_id for env in canonical]
    assert [p["activity"]["coding"][0]["code"] for p in provenance] == chain
    first = provenance[0]
    assert base64.b64decode(first["signature"][0]["data"]) == canonical[0].signature.ed25519
    assert first["agent"][0]["who"]["identifier"]["value"] == CONNECTOR_ACTOR


@pytest.mark.parametrize("name, kind, body, status, expression", [
    ("invalid JSON", "Condition", b'{"resourceType": "Condition", "subject": ', 400, None),
    ("wrong resource type", "Condition", json.dumps({"resourceType": "Observation"}).encode(),
     400, "Condition.resourceType"),
    ("invalid element", "Condition", None, 400, "Condition.code.coding[0].code"),
    ("unknown patient", "Condition", json.dumps(condition("NOBODY")).encode(), 422,
     "Condition.subject"),
    ("unknown therapy code", "ServiceRequest", None, 422, "ServiceRequest.code.coding[0].code"),
])
def test_bad_requests_get_an_operation_outcome_are_recorded_and_the_api_keeps_serving(
        api, deployment, enrolled, name, kind, body, status, expression):  # noqa: F811
    mrn, _ = enrolled
    if name == "invalid element":
        broken = condition(mrn)
        broken["code"]["coding"][0]["code"] = 5
        body = json.dumps(broken).encode()
    if name == "unknown therapy code":
        order = service_request(mrn, "PL-X")
        order["code"]["coding"][0]["code"] = "CHEMO"
        body = json.dumps(order).encode()
    answer = api.post(kind, body)
    assert answer.status_code == status, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    if expression is not None:
        assert expression in [e for i in outcome["issue"] for e in i.get("expression", [])]
    recorded = refusal_of(deployment, body)
    assert recorded["source_topic"] == f"{api.server.base_url}/{kind}"
    assert recorded["reason"]
    valid = api.post("Condition", condition(mrn))
    assert valid.status_code == 201, valid.text


def test_unauthenticated_wrong_site_and_wrong_audience_callers_are_refused(
        api, deployment, enrolled):  # noqa: F811
    mrn, _ = enrolled
    body = json.dumps(condition(mrn)).encode()
    anonymous = api.http.post("/Condition", content=body)
    assert anonymous.status_code == 401
    assert anonymous.json()["issue"][0]["code"] == "security"
    elsewhere = api.post("Condition", body, audience="https://127.0.0.1:1")
    assert elsewhere.status_code == 401
    stranger = api.post("Condition", body, caller=deployment.stranger)
    assert stranger.status_code == 403 and "OSAKA02" in stranger.text
    reasons = {p["reason_code"] for env, kind, p in deployment.records("rejected")
               if kind == "EventRejected" and p["original"] == body}
    assert {"UNAUTHENTICATED", "WRONG_SITE"} <= reasons
    assert api.post("Condition", body).status_code in (200, 201)
