"""From validated FHIR R4 resources to pcvhub events.

Resources are validated with the ``fhir.resources`` R4B models (R4B is R4 plus errata
for the resources used here; ServiceRequest, Condition, Observation,
MedicationAdministration and Consent have the same R4 shape). The models parse types,
cardinalities and choice types; what they cannot know (which code system, which
element this hub needs) is checked here, and every refusal names the element by its
FHIRPath, e.g. ``Condition.stage[0].summary``.

Resources and the events they become [elements read]:

* ServiceRequest (intent order) -> TherapyOrdered [code PCV-MRNA/PCV-PEPTIDE/PCV-DC,
  identifier of type PLAC / FILL, requester, authoredOn].
* Condition (mCODE primary cancer condition) -> DiagnosisRecorded [code (ICD-10),
  bodySite (ICD-O-3 topography), extension mcode-histology-morphology-behavior (ICD-O-3),
  stage[0].summary and stage[0].type, extension urn:pcvhub:fhir:hla-type, onsetDateTime].
* Observation with code PCV-OUTCOME -> OutcomeRecorded [components PCV-TIMEPOINT,
  PCV-RECIST, PCV-CTDNA, PCV-CTDNA-MTM, PCV-VITAL, PCV-CRITERIA; effectiveDateTime].
* MedicationAdministration (completed) -> DoseAdministered [identifiers
  urn:pcvhub:dose-id and urn:pcvhub:administration-id, extension
  urn:pcvhub:fhir:dose-number, performer, dosage.route / site, effectiveDateTime; the
  bedside identity check from the log].
* Consent -> ConsentGranted (status active) or ConsentWithdrawn (inactive) [category
  urn:pcvhub:consent-scope (or scope treatment / research), sourceReference or
  sourceAttachment, provision.period.end, policyRule, dateTime].

The patient is named by ``subject`` / ``patient``: either an identifier whose system is
the MRN's assigning authority (the PID-3.4 of the HL7 feed) and whose value is the MRN,
or a reference ``Patient/<CoI>`` of a therapy the hub already knows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.resource import Resource

from pcvhub.connectors.core import Connector, EventRequest
from pcvhub.connectors.identity import deterministic_event_id
from pcvhub.connectors.outcome import Outcome, Problem
from pcvhub.connectors.patients import THERAPIES, EnrolledPatient
from pcvhub.schemas.codec import to_us
from pcvhub.schemas.policy import ConsentScope

HLA_EXTENSION = "urn:pcvhub:fhir:hla-type"
DOSE_NUMBER_EXTENSION = "urn:pcvhub:fhir:dose-number"
MORPHOLOGY_EXTENSION = ("http://hl7.org/fhir/us/mcode/StructureDefinition/"
                        "mcode-histology-morphology-behavior")
DOSE_ID_SYSTEM = "urn:pcvhub:dose-id"
ADMINISTRATION_ID_SYSTEM = "urn:pcvhub:administration-id"
CONSENT_SCOPE_SYSTEM = "urn:pcvhub:consent-scope"
OUTCOME_CODE = "PCV-OUTCOME"
ICD10_SYSTEMS = ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm")
ICDO3_SYSTEM = "urn:oid:2.16.840.1.113883.6.43.1"
#: SNOMED CT and HL7 v3 RouteOfAdministration codes -> DoseAdministered.route
ROUTES = {"78421000": "INTRAMUSCULAR", "34206005": "SUBCUTANEOUS",
          "372464004": "INTRADERMAL", "47625008": "INTRAVENOUS",
          "IM": "INTRAMUSCULAR", "SQ": "SUBCUTANEOUS", "SC": "SUBCUTANEOUS",
          "IDINJ": "INTRADERMAL", "IV": "INTRAVENOUS", "IVINJ": "INTRAVENOUS"}
CONSENT_SCOPES = tuple(ConsentScope)
OUTCOME_CODED = {
    "recist_response": ("CR", "PR", "SD", "PD", "NE"),
    "ctdna_status": ("DETECTED", "NOT_DETECTED", "NOT_TESTED", "UNKNOWN"),
    "survival_status": ("ALIVE", "DECEASED", "LOST_TO_FOLLOW_UP", "UNKNOWN"),
}
OUTCOME_COMPONENTS = {"PCV-TIMEPOINT": "time_point", "PCV-RECIST": "recist_response",
                      "PCV-CTDNA": "ctdna_status", "PCV-CTDNA-MTM": "ctdna_mtm_per_ml",
                      "PCV-VITAL": "survival_status", "PCV-CRITERIA": "response_criteria"}


class ResourceProblem(Exception):
    """A valid FHIR resource the hub cannot apply; ``path`` is the failing element."""

    def __init__(self, path: str, reason: str, code: str = "value",
                 status: int = 422, reason_code: str = "FHIR_UNPROCESSABLE") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.code = code  # OperationOutcome issue code
        self.status = status
        self.reason_code = reason_code

    def refusal(self) -> Outcome:
        """The connector's refusal: one problem at the failing element."""
        return Outcome.refuse("FHIR", self.reason_code,
                              problems=(Problem(self.path, self.reason, self.code),))


@dataclass(frozen=True)
class MappedResource:
    request: EventRequest
    patient: EnrolledPatient


def _us(moment: dt.datetime | dt.date | str | None, path: str) -> int | None:
    """Event-time microseconds of a FHIR date or dateTime: a date is its midnight UTC, a
    dateTime without an offset is read as UTC (as the HL7 feed's DTM is); a year or a
    month alone (the models keep those as text) is refused at ``path``."""
    if moment is None:
        return None
    if isinstance(moment, str):  # the models keep a year ("2026") or a month as text
        raise ResourceProblem(path, f"is {moment!r}; the hub records dates to the day at "
                                    "least (YYYY-MM-DD)")
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return to_us(moment)


def _codes(concept: Any) -> list[tuple[str, str]]:
    """(system, code) of each coding of a CodeableConcept (None-safe)."""
    if concept is None:
        return []
    return [(c.system or "", c.code or "") for c in (concept.coding or [])]


def _first_code(concept: Any, path: str, systems: tuple[str, ...] | None = None) -> str:
    for system, code in _codes(concept):
        if code and (systems is None or system in systems):
            return code
    where = f" from {' or '.join(systems)}" if systems else ""
    raise ResourceProblem(path, f"no coding{where} with a code", "required")


class ResourceMapper:
    """Maps one validated resource to one event of the connector's site."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self._handlers: dict[str, Callable[[Resource, EnrolledPatient], EventRequest]] = {
            "ServiceRequest": self._service_request,
            "Condition": self._condition,
            "Observation": self._observation,
            "MedicationAdministration": self._administration,
            "Consent": self._consent,
        }

    @property
    def supported(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    def map(self, resource: Resource, caller_id: str) -> MappedResource:
        kind = resource.get_resource_type()
        subject_path = f"{kind}.patient" if kind == "Consent" else f"{kind}.subject"
        subject = resource.patient if kind == "Consent" else resource.subject
        patient = self._patient(subject, subject_path)
        request = self._handlers[kind](resource, patient)
        key = self._business_key(resource)
        event_id = deterministic_event_id("fhir", caller_id, kind, key) if key else None
        return MappedResource(EventRequest(request.event_type, request.coi, request.payload,
                                           request.occurred_at_us, event_id), patient)

    @staticmethod
    def _business_key(resource: Resource) -> str:
        """The resource's own identifiers (system|value): a repeated POST maps to one event."""
        identifiers = getattr(resource, "identifier", None) or []
        if not isinstance(identifiers, list):
            identifiers = [identifiers]
        return ",".join(sorted(f"{i.system or ''}|{i.value}" for i in identifiers if i.value))

    def _patient(self, reference: Any, path: str) -> EnrolledPatient:
        if reference is None:
            raise ResourceProblem(path, "the patient is required", "required")
        patients = self.connector.patients
        if reference.identifier is not None and reference.identifier.value:
            authority = reference.identifier.system or ""
            if not authority:
                raise ResourceProblem(f"{path}.identifier.system", "the MRN's assigning "
                                      "authority is required (the PID-3.4 of the HL7 feed)",
                                      "required")
            found = patients.find(authority, self.connector.pseudonymiser.patient_hash(
                reference.identifier.value))
        elif reference.reference and reference.reference.startswith("Patient/"):
            found = patients.therapy(reference.reference.removeprefix("Patient/"))
        else:
            raise ResourceProblem(path, "name the patient by identifier (system = assigning "
                                  "authority, value = MRN) or as Patient/<chain-of-identity id>",
                                  "required")
        if found is None:
            raise ResourceProblem(path, "the patient is not enrolled in the hub; enrol the "
                                  "patient (HL7 ADT^A01) first", "not-found", 422,
                                  "FHIR_UNKNOWN_PATIENT")
        return found

    # -- one handler per resource type ---------------------------------------------

    def _service_request(self, r: Any, patient: EnrolledPatient) -> EventRequest:
        if r.intent != "order":
            raise ResourceProblem("ServiceRequest.intent", f"is {r.intent!r}; the hub takes "
                                  "orders (intent order) only")
        code = _first_code(r.code, "ServiceRequest.code")
        therapy = THERAPIES.get(code)
        if therapy is None:
            raise ResourceProblem("ServiceRequest.code.coding[0].code", f"{code!r} is not a "
                                  f"therapy the hub orders; use one of {', '.join(THERAPIES)}",
                                  "code-invalid")
        placer = filler = None
        for ident in r.identifier or []:
            kinds = {c for _, c in _codes(ident.type)}
            if "PLAC" in kinds:
                placer = ident.value
            elif "FILL" in kinds:
                filler = ident.value
        if not placer:
            raise ResourceProblem("ServiceRequest.identifier", "an identifier of type PLAC "
                                  "(placer order number) is required", "required")
        requester = r.requester
        clinician = None
        if requester is not None:
            clinician = (requester.identifier.value if requester.identifier is not None
                         else requester.reference)
        if not clinician:
            raise ResourceProblem("ServiceRequest.requester", "who ordered the therapy is "
                                  "required", "required")
        site = self.connector.site_id
        return EventRequest("TherapyOrdered", patient.coi, {
            "order_id": f"{site}-{placer}", "ordering_clinician": clinician,
            "site_id": site, "therapy_type": therapy, "placer_order_number": placer,
            "filler_order_number": filler}, _us(r.authoredOn, "ServiceRequest.authoredOn"))

    def _condition(self, r: Any, patient: EnrolledPatient) -> EventRequest:
        icd10 = _first_code(r.code, "Condition.code", ICD10_SYSTEMS)
        if not r.bodySite:
            raise ResourceProblem("Condition.bodySite", "the primary site (ICD-O-3 "
                                  "topography) is required", "required")
        topography = _first_code(r.bodySite[0], "Condition.bodySite[0]", (ICDO3_SYSTEM,))
        morphology = None
        hla: list[str] = []
        for ext in r.extension or []:
            if ext.url == MORPHOLOGY_EXTENSION:
                morphology = _first_code(ext.valueCodeableConcept,
                                         "Condition.extension(histology-morphology-behavior)")
            elif ext.url == HLA_EXTENSION:
                hla += [c for _, c in _codes(ext.valueCodeableConcept) if c]
        if morphology is None:
            raise ResourceProblem("Condition.extension", f"the extension {MORPHOLOGY_EXTENSION}"
                                  " (ICD-O-3 morphology) is required", "required")
        if not r.stage or r.stage[0].summary is None:
            raise ResourceProblem("Condition.stage[0].summary", "the stage group is required",
                                  "required")
        summary = r.stage[0].summary
        stage = next((c for _, c in _codes(summary) if c), None) or summary.text
        if not stage:
            raise ResourceProblem("Condition.stage[0].summary", "has neither code nor text",
                                  "required")
        system = r.stage[0].type.text if r.stage[0].type is not None else None
        onset = getattr(r, "onsetDateTime", None)
        recorded = _us(r.recordedDate, "Condition.recordedDate")
        diagnosed_on = _us(onset, "Condition.onsetDateTime") if onset else recorded
        return EventRequest("DiagnosisRecorded", patient.coi, {
            "icd10_code": icd10, "icdo3_morphology": morphology,
            "icdo3_topography": topography, "stage": stage, "hla_type": hla,
            "diagnosed_on": diagnosed_on, "staging_system": system}, recorded)

    def _observation(self, r: Any, patient: EnrolledPatient) -> EventRequest:
        code = _first_code(r.code, "Observation.code")
        if code != OUTCOME_CODE:
            raise ResourceProblem("Observation.code", f"{code!r}: the hub takes outcome "
                                  f"assessments ({OUTCOME_CODE}); send diagnoses as Condition",
                                  "code-invalid")
        found: dict[str, Any] = {}
        for i, component in enumerate(r.component or []):
            path = f"Observation.component[{i}]"
            name = OUTCOME_COMPONENTS.get(_first_code(component.code, f"{path}.code"))
            if name is None:
                raise ResourceProblem(f"{path}.code", "not an outcome component; expected one "
                                      f"of {', '.join(OUTCOME_COMPONENTS)}", "code-invalid")
            if component.valueCodeableConcept is not None:
                value: Any = _first_code(component.valueCodeableConcept,
                                         f"{path}.valueCodeableConcept")
            elif component.valueQuantity is not None:
                if component.valueQuantity.value is None:
                    raise ResourceProblem(f"{path}.valueQuantity.value", "is required",
                                          "required")
                value = float(component.valueQuantity.value)
            else:
                value = component.valueString
            allowed = OUTCOME_CODED.get(name)
            if allowed is not None and str(value).upper() not in allowed:
                raise ResourceProblem(f"{path}.value[x]", f"{value!r}; use one of "
                                      f"{', '.join(allowed)}", "code-invalid")
            found[name] = str(value).upper() if allowed else value
        for name in ("time_point", "recist_response", "ctdna_status", "survival_status"):
            if found.get(name) in (None, ""):
                code_of = next(k for k, v in OUTCOME_COMPONENTS.items() if v == name)
                raise ResourceProblem("Observation.component", f"a component {code_of} "
                                      f"({name}) is required", "required")
        effective = _us(r.effectiveDateTime, "Observation.effectiveDateTime")
        return EventRequest("OutcomeRecorded", patient.coi, {
            "time_point": found["time_point"], "recist_response": found["recist_response"],
            "ctdna_status": found["ctdna_status"],
            "ctdna_mtm_per_ml": found.get("ctdna_mtm_per_ml"),
            "survival_status": found["survival_status"], "assessed_at": effective,
            "response_criteria": found.get("response_criteria")}, effective)

    def _administration(self, r: Any, patient: EnrolledPatient) -> EventRequest:
        if r.status != "completed":
            raise ResourceProblem("MedicationAdministration.status", f"is {r.status!r}; the "
                                  "hub records completed administrations only")
        ids = {i.system: i.value for i in r.identifier or []}
        dose_id, administration_id = ids.get(DOSE_ID_SYSTEM), ids.get(ADMINISTRATION_ID_SYSTEM)
        for system, value in ((DOSE_ID_SYSTEM, dose_id),
                              (ADMINISTRATION_ID_SYSTEM, administration_id)):
            if not value:
                raise ResourceProblem("MedicationAdministration.identifier",
                                      f"an identifier with system {system} is required",
                                      "required")
        number = next((e.valuePositiveInt for e in r.extension or []
                       if e.url == DOSE_NUMBER_EXTENSION), None)
        if number is None:
            raise ResourceProblem("MedicationAdministration.extension", f"the extension "
                                  f"{DOSE_NUMBER_EXTENSION} (valuePositiveInt) is required",
                                  "required")
        performer = r.performer[0].actor if r.performer else None
        by = None
        if performer is not None:
            by = performer.identifier.value if performer.identifier else performer.reference
        if not by:
            raise ResourceProblem("MedicationAdministration.performer[0].actor", "who gave "
                                  "the dose is required", "required")
        if r.dosage is None or r.dosage.route is None:
            raise ResourceProblem("MedicationAdministration.dosage.route", "the route is "
                                  "required", "required")
        route = ROUTES.get(_first_code(r.dosage.route, "MedicationAdministration.dosage.route"),
                           "OTHER")
        site = r.dosage.site.text if r.dosage.site is not None else None
        if r.dosage.site is not None and not site:
            site = next((c for _, c in _codes(r.dosage.site) if c), None)
        check = self.connector.bedside.latest(patient.coi, dose_id or "")
        if check is None:
            raise ResourceProblem("MedicationAdministration.identifier",
                                  f"no bedside identity check (IdentityVerified, BEDSIDE, "
                                  f"MATCH) of dose {dose_id} for therapy {patient.coi} is on "
                                  "the log; scan the wristband and the vial first",
                                  "business-rule", 422, "FHIR_NO_IDENTITY_CHECK")
        moment, moment_path = r.effectiveDateTime, "MedicationAdministration.effectiveDateTime"
        if moment is None and r.effectivePeriod is not None:
            moment = r.effectivePeriod.start
            moment_path = "MedicationAdministration.effectivePeriod.start"
        return EventRequest("DoseAdministered", patient.coi, {
            "dose_id": dose_id, "administration_id": administration_id,
            "dose_number": int(number), "identity_check_event_id": check, "route": route,
            "administered_by": by, "body_site": site}, _us(moment, moment_path))

    def _consent(self, r: Any, patient: EnrolledPatient) -> EventRequest:
        scope = None
        for concept in r.category or []:
            for system, code in _codes(concept):
                if system == CONSENT_SCOPE_SYSTEM:
                    scope = code
        if scope is None:
            legacy = {"treatment": "TREATMENT", "research": "RESEARCH"}
            scope = next((legacy[c] for _, c in _codes(r.scope) if c in legacy), None)
        if scope not in CONSENT_SCOPES:
            raise ResourceProblem("Consent.category", f"a coding of {CONSENT_SCOPE_SYSTEM} "
                                  f"with one of {', '.join(CONSENT_SCOPES)} is required (or "
                                  "Consent.scope treatment / research)", "required")
        document = None
        if r.sourceReference is not None:
            document = r.sourceReference.reference
        elif r.sourceAttachment is not None:
            document = r.sourceAttachment.url
        if not document:
            raise ResourceProblem("Consent.source[x]", "a reference to the signed consent "
                                  "document is required", "required")
        when = _us(r.dateTime, "Consent.dateTime")
        if r.status == "active":
            end = r.provision.period.end if r.provision and r.provision.period else None
            version = r.policyRule.text if r.policyRule is not None else None
            expires = _us(end, "Consent.provision.period.end")
            return EventRequest("ConsentGranted", patient.coi, {
                "scope": scope, "consent_document_ref": document, "expires_at": expires,
                "consent_form_version": version}, when)
        if r.status == "inactive":
            return EventRequest("ConsentWithdrawn", patient.coi, {
                "scope": scope, "consent_document_ref": document, "reason": None,
                "granted_event_id": None}, when)
        raise ResourceProblem("Consent.status", f"is {r.status!r}; the hub records active "
                              "(granted) and inactive (withdrawn) consents", "code-invalid")
