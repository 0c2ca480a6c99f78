"""The patient index: which therapy an enrolled patient's pseudonym belongs to.

Filled from PatientEnrolled events (the accepted ones on the canonical log, and a
connector's own ones not judged yet), so HL7 and FHIR find a patient by the MRN's
assigning authority and pseudonym, never by the MRN itself. :data:`THERAPIES` maps the
order codes the hospitals send to the therapy types the hub knows.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any

from pcvhub.schemas.envelope import Envelope

__all__ = ["THERAPIES", "EnrolledPatient", "PatientIndex"]


@dataclass(frozen=True)
class EnrolledPatient:
    """What the hub holds about a patient: the pseudonym, never the MRN or the name."""

    coi: str
    site_id: str
    authority: str
    patient_hash: str
    sex: str
    birth_date: dt.date | None
    accepted: bool  # on the canonical log (False: written by us, not judged yet)


class PatientIndex:
    """(MRN assigning authority, patient_hash) -> the therapy's enrolment. Thread-safe.

    Filled from PatientEnrolled events: accepted ones read from the canonical log, and the
    connector's own not yet judged ones (from its ingress topic and from ``emit``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_patient: dict[tuple[str, str], EnrolledPatient] = {}
        self._by_coi: dict[str, EnrolledPatient] = {}

    def observe(self, env: Envelope, payload: dict[str, Any], accepted: bool) -> None:
        """Fold one PatientEnrolled; an accepted enrolment replaces a pending one."""
        patient = EnrolledPatient(
            env.coi, payload["site_id"], payload["mrn_assigning_authority"],
            payload["patient_hash"], str(payload["sex"]), payload.get("birth_date"), accepted)
        key = (patient.authority, patient.patient_hash)
        with self._lock:
            known = self._by_patient.get(key)
            if known is not None and known.accepted and not accepted:
                return  # the log already settled this patient's therapy
            self._by_patient[key] = patient
            self._by_coi[patient.coi] = patient

    def find(self, authority: str, patient_hash: str) -> EnrolledPatient | None:
        with self._lock:
            return self._by_patient.get((authority, patient_hash))

    def therapy(self, coi: str) -> EnrolledPatient | None:
        with self._lock:
            return self._by_coi.get(coi)


#: Order codes (HL7 OBR-4.1, FHIR ServiceRequest.code) -> TherapyOrdered.therapy_type
THERAPIES = {
    "PCV-MRNA": "individualized-neoantigen-mRNA",
    "PCV-PEPTIDE": "individualized-neoantigen-peptide",
    "PCV-DC": "individualized-neoantigen-dendritic-cell",
}
