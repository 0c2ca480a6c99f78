"""The FHIR R4 REST endpoint (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/docs``).

* ``POST /{type}`` for ServiceRequest, Condition, Observation, MedicationAdministration
  and Consent: the body is validated with the ``fhir.resources`` models, mapped to one
  event (see ``mapping``), signed and durably written; ``201 Created`` with the resource
  (its id is the event id) and a ``Location``. A repeated POST of a resource with the same
  identifiers maps to the same event id and answers ``200`` without writing again.
* ``GET /therapy/{coi}/history``: the therapy's accepted events as a FHIR ``Bundle`` of
  ``Provenance`` resources (who signed, when, with which Part 11 meaning, both signature
  halves and the hash-chain link), read from the canonical log.
* Every error is an ``OperationOutcome`` (the connector's
  :class:`~pcvhub.connectors.outcome.Outcome`, one issue per problem) whose
  ``issue.expression`` is the failing element's FHIRPath; every refused POST is recorded
  on the rejected topic with the exact body received.

Authentication: ``Authorization: Bearer <JWT>`` signed by the caller's registered Ed25519
key (SMART Backend Services style; see ``pcvhub.connectors.callers.issue_token``), with
``aud`` the base URL of this endpoint, checked against the key registry folded from the
log. The caller must belong to this connector's site (and, for a history, to the
therapy's site). Served over TLS with the deployment CA's server certificate, so the token
never crosses the wire in clear.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from pcvhub.connectors.callers import Caller, CallerCheck, CallerRefused
from pcvhub.connectors.core import Connector, therapy_log
from pcvhub.connectors.fhir.mapping import ResourceMapper, ResourceProblem
from pcvhub.connectors.outcome import Outcome, Problem, Status
from pcvhub.connectors.tls import LocalCA
from pcvhub.connectors.writer import IngressWriteError
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import SchemaValidationError
from pcvhub.schemas.envelope import Envelope
from pcvhub.times import utc_iso
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.issuer import now_us

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json"
RESOURCES = ("ServiceRequest", "Condition", "Observation", "MedicationAdministration",
             "Consent")
#: Part 11 meaning -> ISO/ASTM E1762-95 signature type (FHIR Provenance.signature.type)
SIGNATURE_TYPES = {
    "AUTHORED": ("1.2.840.10065.1.12.1.1", "Author's Signature"),
    "REVIEWED": ("1.2.840.10065.1.12.1.13", "Review Signature"),
    "APPROVED": ("1.2.840.10065.1.12.1.6", "Validation Signature"),
    "RESPONSIBLE": ("1.2.840.10065.1.12.1.6", "Validation Signature"),
    "VERIFIED": ("1.2.840.10065.1.12.1.5", "Verification Signature"),
}


def operation_outcome(status: int, outcome: Outcome,
                      headers: dict[str, str] | None = None) -> JSONResponse:
    """The OperationOutcome that says ``outcome``: one issue per problem (its FHIR issue
    type, the failing element's FHIRPath, what is wrong); a repeat, which has no problem,
    is one ``duplicate`` issue of its reason."""
    severity = "information" if outcome.accepted else "error"
    issues = outcome.problems or (Problem("", outcome.reason, "duplicate"
                                          if outcome.status is Status.ALREADY_ACCEPTED
                                          else "processing"),)
    body = {"resourceType": "OperationOutcome", "issue": [
        {"severity": severity, "code": issue.code, "diagnostics": issue.what,
         **({"expression": [issue.where]} if issue.where else {})} for issue in issues]}
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def fhir_refusal(code: str, *problems: Problem) -> Outcome:
    """The FHIR endpoint's own refusal (rule FHIR) with its ``code`` and problems."""
    return Outcome.refuse("FHIR", code, problems=problems)


def fhir_path(resource_type: str, location: tuple[Any, ...]) -> str:
    """A pydantic error location as a FHIRPath: (code, coding, 0, code) -> X.code.coding[0].code"""
    path = resource_type
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "resource_type":
            path += ".resourceType"
        else:
            path += f".{str(part).removesuffix('__ext')}"
    return path


def provenance(env: Envelope, base_url: str) -> dict[str, Any]:
    """One accepted event as a Provenance resource."""
    kind = load_catalog().short_name(env.event_type)
    meaning = env.meaning.value
    code, display = SIGNATURE_TYPES.get(meaning, SIGNATURE_TYPES["AUTHORED"])
    who = {"identifier": {"system": "urn:pcvhub:actor", "value": env.producer}}
    signatures = []
    if env.signature is not None:
        for fmt, data in (("ed25519", env.signature.ed25519),
                          ("ml-dsa-65", env.signature.ml_dsa_65)):
            signatures.append({
                "type": [{"system": "urn:iso-astm:E1762-95:2013", "code": code,
                          "display": f"{display} ({meaning})"}],
                "when": utc_iso(env.signed_at_us, "auto"), "who": who,
                "sigFormat": f"application/pcvhub.{fmt}",
                "data": base64.b64encode(data).decode()})
    return {
        "resourceType": "Provenance", "id": env.event_id,
        "target": [{"reference": f"urn:uuid:{env.event_id}", "display": kind}],
        "occurredDateTime": utc_iso(env.occurred_at_us, "auto"),
        "recorded": utc_iso(env.signed_at_us, "auto"),
        "activity": {"coding": [{"system": "urn:pcvhub:event-type", "code": kind}]},
        "agent": [{"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "author"}]}, "who": who}],
        "signature": signatures,
        "extension": [
            {"url": "urn:pcvhub:fhir:key-id", "valueString": env.key_id},
            {"url": "urn:pcvhub:fhir:prev-hash",
             "valueBase64Binary": base64.b64encode(env.prev_hash).decode()},
            {"url": "urn:pcvhub:fhir:chain-digest",
             "valueBase64Binary": base64.b64encode(chain_digest(env)).decode()},
        ],
    }


def history_bundle(events: list[Envelope], base_url: str) -> dict[str, Any]:
    bundle = {
        "resourceType": "Bundle", "type": "collection",
        "timestamp": utc_iso(now_us(), "auto"),
        "entry": [{"fullUrl": f"{base_url}/Provenance/{env.event_id}",
                   "resource": provenance(env, base_url)} for env in events],
    }
    Bundle.model_validate(bundle)  # what we publish is valid FHIR, checked by the models
    return bundle


def create_app(connector: Connector, base_url: str) -> FastAPI:
    """The FHIR app for one connector; ``base_url`` is its public address (token audience)."""
    app = FastAPI(title="pcvhub FHIR R4 connector", version="1",
                  description="POST clinical resources of one hospital site into the pcvhub "
                              "event log; GET a therapy's signed history as Provenance.")
    callers = CallerCheck(connector.registry, connector.site_id)
    mapper = ResourceMapper(connector)

    async def refused(request: Request, body: bytes, status: int, refusal: Outcome, *,
                      coi: str | None = None, event_type: str | None = None) -> JSONResponse:
        """Record the refusal durably, then answer with its OperationOutcome."""
        endpoint = f"{base_url}{request.url.path}"
        try:
            await asyncio.to_thread(connector.record_refusal, body, endpoint, refusal,
                                    coi=coi, event_type=event_type)
        except IngressWriteError as exc:
            log.error("could not record a refusal on %s: %s", endpoint, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return operation_outcome(status, refusal, headers=headers)

    async def authenticate(request: Request, body: bytes) -> Caller | JSONResponse:
        try:
            return callers.check_token(request.headers.get("authorization"), base_url)
        except CallerRefused as exc:
            log.warning("FHIR caller refused on %s: %s %s", request.url.path, exc.code,
                        exc.reason)
            status = 403 if exc.code == "WRONG_SITE" else 401
            return await refused(request, body, status, Outcome.refuse(
                "AUTH", exc.code, problems=(Problem("", exc.reason, "security"),)))

    async def create(request: Request, expected: str) -> JSONResponse:
        body = await request.body()
        caller = await authenticate(request, body)
        if isinstance(caller, JSONResponse):
            return caller
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            # ValueError: not UTF-8, not JSON, or a number of more than 4300 digits (Python's
            # int limit); RecursionError: arrays or objects nested too deeply to read
            return await refused(request, body, 400, fhir_refusal("FHIR_INVALID_JSON", Problem(
                "", f"the body is not valid JSON: {exc}", "structure")))
        if not isinstance(document, dict):
            return await refused(request, body, 400, fhir_refusal("FHIR_INVALID_JSON", Problem(
                "", "the body is not a JSON object (a FHIR resource)", "structure")))
        found = document.get("resourceType")
        if found != expected:
            return await refused(request, body, 400, fhir_refusal(
                "FHIR_WRONG_RESOURCE_TYPE", Problem(
                    f"{expected}.resourceType",
                    f"is {found!r}; POST {request.url.path} takes {expected}", "invalid")))
        try:
            resource = get_fhir_model_class(expected).model_validate(document)
        except RecursionError:  # the models validate nested elements recursively
            return await refused(request, body, 400, fhir_refusal("FHIR_INVALID_RESOURCE", Problem(
                expected, "is nested too deeply to be validated", "structure")))
        except ValidationError as exc:
            return await refused(request, body, 400, fhir_refusal("FHIR_INVALID_RESOURCE", *(
                Problem(fhir_path(expected, tuple(e["loc"])), e["msg"], "invalid")
                for e in exc.errors())))
        try:
            mapped = mapper.map(resource, caller.actor_id)
        except ResourceProblem as problem:
            return await refused(request, body, problem.status, problem.refusal())
        event = mapped.request
        if event.event_id is not None and connector.already_written(event.event_id):
            return operation_outcome(200, Outcome.already_accepted(
                f"{expected} already recorded as event {event.event_id}; not applied again"))
        try:
            (issued,) = await asyncio.to_thread(connector.emit, [event])
        except SchemaValidationError as exc:
            return await refused(request, body, 422, fhir_refusal(
                "FHIR_UNPROCESSABLE", Problem(expected, str(exc), "value")),
                coi=event.coi, event_type=event.event_type)
        except IngressWriteError as exc:
            # Nothing was stored and nothing refused (no rejected record): the client retries.
            log.error("FHIR %s not written: %s", expected, exc)
            return operation_outcome(503, fhir_refusal("FHIR_NOT_STORED", Problem(
                "", f"not stored, retry: {exc}", "transient")))
        event_id = issued.envelope.event_id
        created = {**document, "id": event_id}
        return JSONResponse(created, status_code=201, media_type=FHIR_JSON, headers={
            "Location": f"{base_url}/{expected}/{event_id}",
            "X-Pcvhub-Therapy": event.coi, "X-Pcvhub-Event-Type": event.event_type})

    body_doc = {"requestBody": {"required": True, "content": {FHIR_JSON: {"schema": {
        "type": "object", "description": "a FHIR R4 resource (JSON)"}}}}}
    responses = {201: {"description": "recorded: the resource, its id the event id"},
                 400: {"description": "OperationOutcome: not JSON, wrong type, invalid"},
                 401: {"description": "OperationOutcome: no valid bearer token"},
                 403: {"description": "OperationOutcome: caller of another site"},
                 422: {"description": "OperationOutcome: valid FHIR the hub cannot apply"}}
    for name in RESOURCES:
        def make(expected: str):  # one route per type, so OpenAPI lists each
            async def post(request: Request) -> JSONResponse:
                return await create(request, expected)
            post.__name__ = f"create_{expected}"
            post.__doc__ = f"Record a {expected} as a signed pcvhub event."
            return post
        app.post(f"/{name}", status_code=201, tags=["resources"], openapi_extra=body_doc,
                 responses=responses)(make(name))

    @app.get("/therapy/{coi}/history", tags=["history"],
             responses={200: {"description": "Bundle of Provenance, one per accepted event"},
                        404: {"description": "OperationOutcome: unknown therapy"}})
    async def history(coi: str, request: Request) -> JSONResponse:
        """A therapy's accepted events, in chain order, as a FHIR Bundle of Provenance."""
        caller = await authenticate(request, b"")
        if isinstance(caller, JSONResponse):
            return caller
        therapy = connector.patients.therapy(coi)
        if therapy is None or not therapy.accepted:
            return operation_outcome(404, fhir_refusal("FHIR_UNKNOWN_THERAPY", Problem(
                "", f"no accepted therapy {coi}", "not-found")))
        if therapy.site_id != caller.site_id:
            return await refused(request, b"", 403, Outcome.refuse("AUTH", "WRONG_SITE", problems=(
                Problem("", f"therapy {coi} is treated at site {therapy.site_id}; caller "
                        f"{caller.actor_id} is of site {caller.site_id}", "security"),)),
                coi=coi)
        events = await asyncio.to_thread(therapy_log, connector.settings, coi)
        return JSONResponse(history_bundle(events, base_url), media_type=FHIR_JSON)

    @app.get("/metadata", tags=["capabilities"])
    async def metadata() -> JSONResponse:
        """The CapabilityStatement: which resources this endpoint creates."""
        return JSONResponse({
            "resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
            "date": dt.date.today().isoformat(), "fhirVersion": "4.0.1",
            "format": ["json"], "rest": [{"mode": "server", "resource": [
                {"type": name, "interaction": [{"code": "create"}]} for name in RESOURCES]}],
        }, media_type=FHIR_JSON)

    return app


class FhirServer:
    """The FHIR app served by uvicorn over TLS on one host/port (0: a free port)."""

    def __init__(self, connector: Connector, ca: LocalCA, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.connector = connector
        self.ca = ca
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> FhirServer:
        # Bind first, so the token audience (the base URL) knows the port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        cert, key = self.ca.server_files()
        config = uvicorn.Config(
            create_app(self.connector, self.base_url), log_level="warning",
            ssl_certfile=str(cert), ssl_keyfile=str(key),
            ssl_keyfile_password=self.ca.passphrase.decode(), lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
            await asyncio.sleep(0.02)
        log.warning("FHIR endpoint on %s (bearer tokens, site %s)", self.base_url,
                    self.connector.site_id)
        return self

    async def close(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
