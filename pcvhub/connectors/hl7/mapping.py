"""From checked HL7 v2 messages to pcvhub events.

Messages and the events they become (fields read in brackets):

* ADT^A01, ADT^A04 (admit, register) -> PatientEnrolled for a patient not enrolled yet
  [PID-3 MRN and assigning authority, PID-7, PID-8, EVN-2].
* ADT^A08 (update patient) -> PatientEnrolled if not enrolled yet; else nothing: the hub
  keeps only the pseudonym, sex and birth date, and a change of those is acknowledged
  with an ERR warning (severity W), not applied.
* ORM^O01, OML^O21 (new order, ORC-1 NW) -> TherapyOrdered [ORC-2/3 placer and filler
  numbers, ORC-12 (or OBR-16) ordering provider, OBR-4 therapy code, ORC-9].
* ORU^R01, one event per OBR group by OBR-4.1: ``PCV-DX`` -> DiagnosisRecorded,
  ``PCV-OUTCOME`` -> OutcomeRecorded, ``PCV-AE`` -> AdverseEventReported [OBX per
  :data:`DIAGNOSIS_OBSERVATIONS`, :data:`OUTCOME_OBSERVATIONS`,
  :data:`ADVERSE_EVENT_OBSERVATIONS`; OBR-7].
* RAS^O17 -> DoseAdministered [ORC-2 administration id, RXA-2 dose number, RXA-3,
  RXA-10, RXA-15 dose id, RXA-20, RXR-1/2; the bedside identity check from the log].

Observation codes are LOINC where LOINC has one the hospitals already send (29308-4
diagnosis, 31205-8 ICD-O-3 histology and behaviour, 21908-9 / 21902-2 clinical and
pathological stage group) and the local coding system ``99PCV`` otherwise; OBX-3.1 alone
identifies the observation. The patient is always found through PID-3: the MRN is
pseudonymised with the hub's key and looked up with its assigning authority, so no MRN
leaves the connector.

Every event id is derived from the sender (MSH-3, MSH-4), MSH-10 and the event's index in
the message, so a repeated message maps to the same ids.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hl7

from pcvhub.connectors.core import Connector, EventRequest
from pcvhub.connectors.hl7.messages import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY_IDENTIFIER,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    HL7Problem,
    Location,
    Message,
    error,
    refuse,
    repetitions,
    required,
    timestamp,
    value,
)
from pcvhub.connectors.identity import deterministic_event_id
from pcvhub.connectors.patients import THERAPIES, EnrolledPatient
from pcvhub.ids import new_coi
from pcvhub.schemas.codec import to_us

DEFAULT_THERAPY_TYPE = "individualized-neoantigen-mRNA"

#: HL7 table 0001 (administrative sex) -> PatientEnrolled.sex
SEX = {"F": "FEMALE", "M": "MALE", "O": "OTHER", "A": "OTHER", "N": "OTHER", "U": "UNKNOWN",
       "": "UNKNOWN"}
#: HL7 table 0162 (route of administration) -> DoseAdministered.route
ROUTES = {"IM": "INTRAMUSCULAR", "SC": "SUBCUTANEOUS", "ID": "INTRADERMAL",
          "IV": "INTRAVENOUS"}
#: HL7 table 0163 (body site), the codes used for vaccine injections
BODY_SITES = {"LD": "left deltoid", "RD": "right deltoid", "LA": "left arm",
              "RA": "right arm", "LT": "left thigh", "RT": "right thigh",
              "LVL": "left vastus lateralis", "RVL": "right vastus lateralis",
              "LG": "left gluteus medius", "RG": "right gluteus medius"}

# OBX-3.1 -> payload field, per ORU panel (OBR-4.1)
DIAGNOSIS_OBSERVATIONS = {
    "29308-4": "icd10_code", "PCV-ICD10": "icd10_code",
    "31205-8": "icdo3_morphology", "PCV-MORPH": "icdo3_morphology",
    "PCV-TOPO": "icdo3_topography",
    "21908-9": "stage", "21902-2": "stage", "PCV-STAGE": "stage",
    "PCV-STAGESYS": "staging_system",
    "PCV-HLA": "hla_type",
}
OUTCOME_OBSERVATIONS = {
    "PCV-TIMEPOINT": "time_point", "PCV-RECIST": "recist_response",
    "PCV-CTDNA": "ctdna_status", "PCV-CTDNA-MTM": "ctdna_mtm_per_ml",
    "PCV-VITAL": "survival_status", "PCV-CRITERIA": "response_criteria",
}
ADVERSE_EVENT_OBSERVATIONS = {
    "PCV-AE-TERM": "term", "PCV-AE-GRADE": "ctcae_grade", "PCV-AE-SERIOUS": "serious",
    "PCV-AE-RELATED": "related_to_therapy", "PCV-AE-ONSET": "onset",
    "PCV-AE-CTCAE": "ctcae_version", "PCV-AE-MEDDRA": "meddra_code",
}
# Coded outcome values (the Avro enums), checked here so the ERR names the OBX.
CODED = {
    "recist_response": ("CR", "PR", "SD", "PD", "NE"),
    "ctdna_status": ("DETECTED", "NOT_DETECTED", "NOT_TESTED", "UNKNOWN"),
    "survival_status": ("ALIVE", "DECEASED", "LOST_TO_FOLLOW_UP", "UNKNOWN"),
    "related_to_therapy": ("NOT_RELATED", "UNLIKELY", "POSSIBLE", "PROBABLE", "DEFINITE",
                           "UNKNOWN"),
}


@dataclass(frozen=True)
class Mapped:
    """What a message becomes: events to write (maybe none), ACK text, warnings."""

    requests: list[EventRequest]
    note: str
    coi: str | None = None
    warnings: tuple[HL7Problem, ...] = ()


@dataclass
class MessageMapper:
    """Maps one checked message to events for the connector's site."""

    connector: Connector
    therapy_type: str = DEFAULT_THERAPY_TYPE

    def __post_init__(self) -> None:
        self._handlers: dict[str, Callable[[Message], Mapped]] = {
            "ADT^A01": self._admit, "ADT^A04": self._admit, "ADT^A08": self._update,
            "ORM^O01": self._order, "OML^O21": self._order,
            "ORU^R01": self._results, "RAS^O17": self._administration,
        }

    @property
    def supported(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    def map(self, message: Message) -> Mapped:
        handler = self._handlers.get(message.kind)
        if handler is None:
            known = {k.split("^")[0] for k in self._handlers}
            code = UNSUPPORTED_EVENT_CODE if message.message_type in known \
                else UNSUPPORTED_MESSAGE_TYPE
            raise refuse(code, Location("MSH", field=9),
                         f"MSH-9 is {message.kind}, which this listener does not take; it "
                         f"takes {', '.join(self._handlers)}")
        site = self.connector.site_id
        if message.sending_facility != site:
            raise refuse(TABLE_VALUE_NOT_FOUND, Location("MSH", field=4),
                         f"MSH-4 (sending facility) is {message.sending_facility!r}, but this "
                         f"listener serves site {site}; send it to your own site's listener")
        return handler(message)

    # -- helpers ------------------------------------------------------------------

    def event_id(self, message: Message, index: int = 0) -> str:
        """The id of the ``index``-th event of a message: the same for a repeated MSH-10."""
        return deterministic_event_id("hl7", message.sending_application,
                                      message.sending_facility, message.control_id, str(index))

    def _when(self, message: Message, segment: hl7.Segment | None, field_no: int,
              sequence: int = 1) -> int:
        """Event time from a segment's DTM field, else MSH-7, else now."""
        text = value(segment, field_no) if segment is not None else ""
        if text:
            return to_us(timestamp(text, Location(str(segment[0]), sequence, field_no)))
        if message.sent_at is not None:
            return to_us(message.sent_at)
        return to_us(dt.datetime.now(dt.UTC))

    def _patient_id(self, message: Message) -> tuple[str, str]:
        """(MRN, assigning authority) from the PID-3 repetition typed MR (else the first)."""
        pid = message.segment("PID")
        assert pid is not None
        count = repetitions(pid, 3)
        if count == 0:
            raise error(REQUIRED_FIELD_MISSING, Location("PID", field=3),
                        "PID-3 (patient identifier list) is empty; send the MRN with its "
                        "assigning authority, e.g. 12345^^^KUH^MR")
        chosen = next((r for r in range(1, count + 1) if value(pid, 3, r, 5) == "MR"), 1)
        mrn = value(pid, 3, chosen, 1)
        if not mrn:
            raise error(REQUIRED_FIELD_MISSING, Location("PID", field=3, repetition=chosen,
                                                         component=1),
                        "PID-3.1 (the MRN) is empty")
        authority = value(pid, 3, chosen, 4)
        if not authority:
            raise error(REQUIRED_FIELD_MISSING, Location("PID", field=3, repetition=chosen,
                                                         component=4),
                        "PID-3.4 (assigning authority) is empty; the hub needs it so that the "
                        "same MRN from two hospitals never collides")
        return mrn, authority

    def _enrolled(self, message: Message) -> EnrolledPatient:
        mrn, authority = self._patient_id(message)
        found = self.connector.patients.find(
            authority, self.connector.pseudonymiser.patient_hash(mrn))
        if found is None:
            raise error(UNKNOWN_KEY_IDENTIFIER, Location("PID", field=3),
                        f"the patient in PID-3 (assigning authority {authority}) is not "
                        "enrolled in the hub; send ADT^A01 for the patient first")
        return found

    # -- ADT ------------------------------------------------------------------------

    def _demographics(self, message: Message) -> tuple[str, dt.date | None]:
        pid = message.segment("PID")
        assert pid is not None
        sex_code = value(pid, 8).upper()
        if sex_code not in SEX:
            raise error(TABLE_VALUE_NOT_FOUND, Location("PID", field=8),
                        f"PID-8 (administrative sex) is {sex_code!r}, not a code of HL7 table "
                        "0001 (F, M, O, U, A, N)")
        born = value(pid, 7)
        birth_date = None
        if born:
            try:
                birth_date = dt.datetime.strptime(born[:8], "%Y%m%d").date()
            except ValueError:
                raise error(DATA_TYPE_ERROR, Location("PID", field=7),
                            f"PID-7 (date of birth) is {born!r}, not a date YYYYMMDD") from None
        return SEX[sex_code], birth_date

    def _admit(self, message: Message) -> Mapped:
        mrn, authority = self._patient_id(message)
        sex, birth_date = self._demographics(message)
        pseudonymiser = self.connector.pseudonymiser
        patient_hash = pseudonymiser.patient_hash(mrn)
        known = self.connector.patients.find(authority, patient_hash)
        if known is not None:
            return Mapped([], f"patient already enrolled as therapy {known.coi}", known.coi,
                          self._differences(known, sex, birth_date))
        site = self.connector.site_id
        coi = new_coi(site)
        payload = {"patient_hash": patient_hash, "site_id": site,
                   "mrn_assigning_authority": authority, "birth_date": birth_date,
                   "sex": sex, "therapy_type": self.therapy_type,
                   "pseudonym_key_id": pseudonymiser.key_id, "trial_id": None}
        when = self._when(message, message.segment("EVN", required=False), 2)
        return Mapped([EventRequest("PatientEnrolled", coi, payload, when,
                                    self.event_id(message, 0))],
                      f"patient enrolled as therapy {coi}", coi)

    def _update(self, message: Message) -> Mapped:
        return self._admit(message)

    @staticmethod
    def _differences(known: EnrolledPatient, sex: str, birth_date: dt.date | None
                     ) -> tuple[HL7Problem, ...]:
        """Warnings (ERR severity W) for demographics the hub recorded differently."""
        found = []
        if sex != "UNKNOWN" and sex != known.sex:
            found.append(error("103", Location("PID", field=8),
                               f"PID-8 says {sex}, the enrolment of {known.coi} recorded "
                               f"{known.sex}; the enrolment is not changed by an update"))
        if birth_date is not None and known.birth_date is not None \
                and birth_date != known.birth_date:
            found.append(error("102", Location("PID", field=7),
                               f"PID-7 differs from the birth date the enrolment of "
                               f"{known.coi} recorded; the enrolment is not changed"))
        return tuple(found)

    # -- orders ---------------------------------------------------------------------

    def _order(self, message: Message) -> Mapped:
        patient = self._enrolled(message)
        orc = message.segment("ORC")
        obr = message.segment("OBR")
        assert orc is not None and obr is not None
        control = value(orc, 1)
        if control != "NW":
            raise error(TABLE_VALUE_NOT_FOUND, Location("ORC", field=1),
                        f"ORC-1 (order control) is {control!r}; the hub takes new orders (NW) "
                        "only: cancel or change an order with the hub's clinicians")
        placer = required(orc, 2, "placer order number")
        clinician = value(orc, 12) or value(obr, 16)
        if not clinician:
            raise error(REQUIRED_FIELD_MISSING, Location("ORC", field=12),
                        "ORC-12 (ordering provider) and OBR-16 are both empty; the hub must "
                        "know who ordered the therapy")
        therapy_code = required(obr, 4, "universal service identifier")
        therapy_type = THERAPIES.get(therapy_code)
        if therapy_type is None:
            raise error(TABLE_VALUE_NOT_FOUND, Location("OBR", field=4, component=1),
                        f"OBR-4.1 is {therapy_code!r}, not a therapy the hub orders; use one "
                        f"of {', '.join(THERAPIES)}")
        payload = {"order_id": f"{self.connector.site_id}-{placer}",
                   "ordering_clinician": clinician, "site_id": self.connector.site_id,
                   "therapy_type": therapy_type, "placer_order_number": placer,
                   "filler_order_number": value(orc, 3) or None}
        when = self._when(message, orc, 9)
        return Mapped([EventRequest("TherapyOrdered", patient.coi, payload, when,
                                    self.event_id(message, 0))],
                      f"therapy ordered for {patient.coi}", patient.coi)

    # -- results --------------------------------------------------------------------

    def _results(self, message: Message) -> Mapped:
        patient = self._enrolled(message)
        groups = self._observation_groups(message)
        if not groups:
            raise error(REQUIRED_FIELD_MISSING, Location("OBR"),
                        "ORU^R01 holds no OBR segment: nothing to record")
        requests = []
        for index, (obr_seq, obr, observations) in enumerate(groups):
            panel = value(obr, 4)
            build = {"PCV-DX": self._diagnosis, "PCV-OUTCOME": self._outcome,
                     "PCV-AE": self._adverse_event}.get(panel)
            if build is None:
                raise error(TABLE_VALUE_NOT_FOUND, Location("OBR", obr_seq, 4, component=1),
                            f"OBR-4.1 is {panel!r}; the hub takes result panels PCV-DX "
                            "(diagnosis), PCV-OUTCOME (outcome assessment) and PCV-AE "
                            "(adverse event)")
            event_type, payload = build(obr_seq, observations)
            when = self._when(message, obr, 7, obr_seq)
            if event_type == "OutcomeRecorded" and value(obr, 7):
                payload["assessed_at"] = when
            if event_type == "DiagnosisRecorded" and value(obr, 7):
                payload["diagnosed_on"] = when
            requests.append(EventRequest(event_type, patient.coi, payload, when,
                                         self.event_id(message, index)))
        kinds = ", ".join(r.event_type for r in requests)
        return Mapped(requests, f"{kinds} recorded for {patient.coi}", patient.coi)

    @staticmethod
    def _observation_groups(message: Message
                            ) -> list[tuple[int, hl7.Segment, list[tuple[int, hl7.Segment]]]]:
        """(OBR sequence, OBR, [(OBX sequence, OBX)]) in message order."""
        groups: list[tuple[int, hl7.Segment, list[tuple[int, hl7.Segment]]]] = []
        counts = {"OBR": 0, "OBX": 0}
        for segment in message.parsed:
            kind = str(segment[0])
            if kind in counts:
                counts[kind] += 1
            if kind == "OBR":
                groups.append((counts["OBR"], segment, []))
            elif kind == "OBX" and groups:
                groups[-1][2].append((counts["OBX"], segment))
        return groups

    def _read(self, observations: list[tuple[int, hl7.Segment]], table: dict[str, str],
              panel: str) -> dict[str, list[tuple[int, str]]]:
        """field -> [(OBX sequence, value), ...] for a panel; unknown codes are refused."""
        found: dict[str, list[tuple[int, str]]] = {}
        for seq, obx in observations:
            code = value(obx, 3)
            name = table.get(code)
            if name is None:
                raise error(TABLE_VALUE_NOT_FOUND, Location("OBX", seq, 3, component=1),
                            f"OBX-3.1 is {code!r}, not an observation of panel {panel}; "
                            f"expected one of {', '.join(sorted(table))}")
            for rep in range(1, max(repetitions(obx, 5), 1) + 1):
                text = value(obx, 5, rep)
                if text:
                    found.setdefault(name, []).append((seq, text))
        return found

    def _one(self, found: dict[str, list[tuple[int, str]]], name: str, what: str,
             panel: str, optional: bool = False) -> str | None:
        values = found.get(name)
        if not values:
            if optional:
                return None
            raise error(REQUIRED_FIELD_MISSING, Location("OBX", field=5),
                        f"panel {panel} has no OBX with {what} ({name}); the hub needs it")
        seq, text = values[0]
        allowed = CODED.get(name)
        if allowed is not None and text.upper() not in allowed:
            raise error(TABLE_VALUE_NOT_FOUND, Location("OBX", seq, 5, component=1),
                        f"OBX-5 of {what} is {text!r}; use one of {', '.join(allowed)}")
        return text.upper() if allowed is not None else text

    def _diagnosis(self, obr_seq: int, observations: list[tuple[int, hl7.Segment]]
                   ) -> tuple[str, dict[str, Any]]:
        found = self._read(observations, DIAGNOSIS_OBSERVATIONS, "PCV-DX")
        payload = {
            "icd10_code": self._one(found, "icd10_code", "the ICD-10 diagnosis", "PCV-DX"),
            "icdo3_morphology": self._one(found, "icdo3_morphology", "the ICD-O-3 morphology",
                                          "PCV-DX"),
            "icdo3_topography": self._one(found, "icdo3_topography", "the ICD-O-3 topography",
                                          "PCV-DX"),
            "stage": self._one(found, "stage", "the stage group", "PCV-DX"),
            "hla_type": [text for _, text in found.get("hla_type", [])],
            "diagnosed_on": None,
            "staging_system": self._one(found, "staging_system", "", "PCV-DX", optional=True),
        }
        return "DiagnosisRecorded", payload

    def _outcome(self, obr_seq: int, observations: list[tuple[int, hl7.Segment]]
                 ) -> tuple[str, dict[str, Any]]:
        found = self._read(observations, OUTCOME_OBSERVATIONS, "PCV-OUTCOME")
        level = self._one(found, "ctdna_mtm_per_ml", "", "PCV-OUTCOME", optional=True)
        if level is not None:
            seq = found["ctdna_mtm_per_ml"][0][0]
            level = _number(level, Location("OBX", seq, 5), "the ctDNA level")
        payload = {
            "time_point": self._one(found, "time_point", "the protocol time point",
                                    "PCV-OUTCOME"),
            "recist_response": self._one(found, "recist_response", "the RECIST response",
                                         "PCV-OUTCOME"),
            "ctdna_status": self._one(found, "ctdna_status", "the ctDNA status", "PCV-OUTCOME"),
            "ctdna_mtm_per_ml": level,
            "survival_status": self._one(found, "survival_status", "the vital status",
                                         "PCV-OUTCOME"),
            "assessed_at": None,
            "response_criteria": self._one(found, "response_criteria", "", "PCV-OUTCOME",
                                           optional=True),
        }
        return "OutcomeRecorded", payload

    def _adverse_event(self, obr_seq: int, observations: list[tuple[int, hl7.Segment]]
                       ) -> tuple[str, dict[str, Any]]:
        panel = "PCV-AE"
        found = self._read(observations, ADVERSE_EVENT_OBSERVATIONS, panel)
        grade_text = self._one(found, "ctcae_grade", "the CTCAE grade", panel)
        seq = found["ctcae_grade"][0][0]
        grade = _number(grade_text, Location("OBX", seq, 5), "the CTCAE grade")
        if grade not in (1, 2, 3, 4, 5):
            raise error(DATA_TYPE_ERROR, Location("OBX", seq, 5),
                        f"OBX-5 of the CTCAE grade is {grade_text!r}; a grade is 1 to 5")
        serious = self._one(found, "serious", "whether it is serious (Y/N)", panel)
        if serious not in ("Y", "N"):
            seq = found["serious"][0][0]
            raise error(TABLE_VALUE_NOT_FOUND, Location("OBX", seq, 5),
                        f"OBX-5 of 'serious' is {serious!r}; use Y or N (HL7 table 0136)")
        onset_text = self._one(found, "onset", "the onset date/time", panel)
        onset_seq = found["onset"][0][0]
        payload = {
            "term": self._one(found, "term", "the CTCAE term", panel),
            "ctcae_grade": int(grade),
            "serious": serious == "Y",
            "related_to_therapy": self._one(found, "related_to_therapy",
                                            "the relatedness to the therapy", panel),
            "onset": to_us(timestamp(str(onset_text), Location("OBX", onset_seq, 5))),
            "ctcae_version": self._one(found, "ctcae_version", "", panel, optional=True),
            "meddra_code": self._one(found, "meddra_code", "", panel, optional=True),
        }
        return "AdverseEventReported", payload

    # -- administration -------------------------------------------------------------------

    def _administration(self, message: Message) -> Mapped:
        patient = self._enrolled(message)
        orc = message.segment("ORC")
        rxa = message.segment("RXA")
        rxr = message.segment("RXR")
        assert orc is not None and rxa is not None and rxr is not None
        administration_id = required(orc, 2, "placer order number of the administration")
        number_text = required(rxa, 2, "administration sub-id counter: the dose number")
        dose_number = _number(number_text, Location("RXA", field=2), "the dose number")
        if dose_number != int(dose_number) or dose_number < 1:
            raise error(DATA_TYPE_ERROR, Location("RXA", field=2),
                        f"RXA-2 is {number_text!r}; the dose number counts from 1")
        required(rxa, 3, "date/time start of administration")
        dose_id = required(rxa, 15, "substance lot number: the dose id on the vial label")
        administered_by = required(rxa, 10, "administering provider")
        status = value(rxa, 20) or "CP"
        if status != "CP":
            raise error(TABLE_VALUE_NOT_FOUND, Location("RXA", field=20),
                        f"RXA-20 (completion status) is {status!r}; the hub records completed "
                        "administrations (CP) only")
        route_code = required(rxr, 1, "route")
        site_code = value(rxr, 2)
        check_id = self.connector.bedside.latest(patient.coi, dose_id)
        if check_id is None:
            raise error(UNKNOWN_KEY_IDENTIFIER, Location("RXA", field=15),
                        f"no bedside identity check (IdentityVerified, step BEDSIDE, result "
                        f"MATCH) of dose {dose_id} for therapy {patient.coi} is on the log; "
                        "scan the wristband and the vial before giving the dose")
        payload = {"dose_id": dose_id, "administration_id": administration_id,
                   "dose_number": int(dose_number), "identity_check_event_id": check_id,
                   "route": ROUTES.get(route_code.upper(), "OTHER"),
                   "administered_by": administered_by,
                   "body_site": BODY_SITES.get(site_code.upper(), value(rxr, 2, 1, 2)
                                               or site_code or None)}
        when = self._when(message, rxa, 3)
        return Mapped([EventRequest("DoseAdministered", patient.coi, payload, when,
                                    self.event_id(message, 0))],
                      f"dose {dose_number:g} administered for {patient.coi}", patient.coi)


def _number(text: str | None, where: Location, what: str) -> float:
    try:
        number = float(str(text))
    except ValueError:
        number = math.nan
    if not math.isfinite(number):  # float() also reads "nan", "inf" and "1e400" (inf)
        raise error(DATA_TYPE_ERROR, where, f"{where} ({what}) is {text!r}, not a number")
    return number
