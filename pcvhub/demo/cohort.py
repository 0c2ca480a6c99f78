"""The synthetic cohort: who the patients are, when each step of their therapy happens,
and which of them carry the faults the hub must catch.

Everything here is decided up front and reproducibly (a seeded generator per patient), so
two runs of the same size drive the same story; only identifiers the hub allocates (the
chain-of-identity ids) and the wall-clock dates differ.

Time. Therapies happen over simulated weeks that end a few days before today: a patient
is enrolled on day ``start_day`` of the cohort, and each later step is a whole number of
days after the step before it, at a plausible hour. The demo advances the whole cohort one
simulated day at a time and moves the gatekeeper's simulation clock with it (see
``pcvhub.demo.driver``); the durations below keep every therapy inside its deadlines
(``pcvhub.streams.timers.DEFAULT_POLICY``), so a valid therapy raises no alert.

Besides the cohort, one more referral stalls on purpose (``Cohort.stalled``): its sample
reaches the sequencing lab and nothing is ever written for it again, so only the
gatekeeper's timer sweep can notice it, with the turnaround alert the demo then expects.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

# -- the faults ----------------------------------------------------------------------------


class Fault(StrEnum):
    """A fault injected into one therapy; the hub must catch each one and say why."""

    EXCURSION_THEN_DISPENSE = "temperature excursion, then an attempt to dispense"
    DESIGN_ALTERED = "design altered after approval"
    CLAIM_NEVER_GIVEN = "claim for a dose never given"
    WRONG_PATIENT = "dose scanned for the wrong patient"
    UNREGISTERED_SIGNER = "message from an unregistered signer"
    DUPLICATE_HL7 = "duplicate HL7 message"
    COURIER_WITHOUT_RELEASE = "courier takes custody without the pharmacy's release"
    RELEASE_AFTER_FAILED_STERILITY = "release with a failed sterility test"
    #: not an event at all: a therapy nobody writes for any more (``Cohort.stalled``)
    STALLED = "therapy stalled at the sequencing lab"


#: the faults injected by sending something; spread over the cohort (``assign_faults``)
SENT_FAULTS = tuple(f for f in Fault if f is not Fault.STALLED)


# -- the patients ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cancer:
    """A diagnosis as the EMR sends it (ICD-10, ICD-O-3 morphology and site, stage)."""

    icd10: str
    name: str
    morphology: str
    topography: str
    stage: str


CANCERS = (
    Cancer("C43.5", "Malignant melanoma of trunk", "8720/3", "C44.5", "IIIB"),
    Cancer("C34.1", "Malignant neoplasm of upper lobe, bronchus or lung", "8140/3", "C34.1",
           "IIIA"),
    Cancer("C25.0", "Malignant neoplasm of head of pancreas", "8500/3", "C25.0", "IIB"),
    Cancer("C18.7", "Malignant neoplasm of sigmoid colon", "8140/3", "C18.7", "IIIC"),
    Cancer("C64.1", "Malignant neoplasm of right kidney", "8312/3", "C64.9", "III"),
)
HLA_ALLELES = ("HLA-A*02:01", "HLA-A*24:02", "HLA-A*11:01", "HLA-B*07:02", "HLA-B*44:02",
               "HLA-B*35:01", "HLA-C*07:02", "HLA-C*04:01", "HLA-C*03:04")
GIVEN = ("Ana", "Ben", "Chloe", "Dev", "Emi", "Femi", "Grace", "Hiro", "Ines", "Jon", "Kaia",
         "Luis", "Mina", "Noor", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara")
FAMILY = ("Abe", "Berg", "Cruz", "Dahl", "Eze", "Fox", "Gold", "Hale", "Ito", "Jain", "Kim",
          "Lund", "Mori", "Nash", "Ortiz", "Park", "Quist", "Rao", "Silva", "Tanaka")


@dataclass(frozen=True)
class Timeline:
    """Days from enrolment to each step (one patient's pace through the therapy)."""

    collect: int
    lab_receipt: int
    sequenced: int
    designed: int
    approved_first: int
    approved_second: int
    manufacturing: int
    steps_done: int
    qc_done: int
    released: int
    shipped: int
    received: int
    dose_1: int
    claim_1: int
    outcome_1: int
    dose_2: int
    claim_2: int
    outcome_2: int

    @property
    def last_day(self) -> int:
        return self.outcome_2


def _timeline(rng: random.Random) -> Timeline:
    """Step durations within the timers' deadlines: sample -> design well under 28 days,
    approval -> release under 21, release -> first dose under 14, each outcome 14 days
    after its dose (follow-up due at 42), doses 21 days apart."""
    day = 0
    marks: dict[str, int] = {}
    for name, low, high in (
        ("collect", 2, 4), ("lab_receipt", 1, 1), ("sequenced", 6, 9), ("designed", 3, 5),
        ("approved_first", 1, 1), ("approved_second", 1, 2), ("manufacturing", 1, 2),
        ("steps_done", 3, 4), ("qc_done", 4, 6), ("released", 1, 2), ("shipped", 1, 1),
        ("received", 1, 2), ("dose_1", 2, 4),
    ):
        day += rng.randint(low, high)
        marks[name] = day
    dose_1 = marks["dose_1"]
    return Timeline(**marks, claim_1=dose_1 + 1, outcome_1=dose_1 + 14, dose_2=dose_1 + 21,
                    claim_2=dose_1 + 22, outcome_2=dose_1 + 35)


@dataclass(frozen=True)
class Patient:
    """One patient of the cohort, as the hospital knows them (the hub sees a pseudonym)."""

    index: int
    mrn: str
    given_name: str
    family_name: str
    sex: str  # HL7 table 0001: F, M
    birth_date: str  # YYYYMMDD
    cancer: Cancer
    hla: tuple[str, ...]
    start_day: int  # cohort day of enrolment
    minute: int  # minutes after 08:00 the patient's appointments start, to spread them
    timeline: Timeline
    research_consent: bool
    faults: frozenset[Fault] = field(default_factory=frozenset)
    #: the payer has not remitted this patient's second claim by the end of the demo (every
    #: fifth patient's, and the last enrolled patient's, whose claim is the most recent)
    second_claim_outstanding: bool = False

    @property
    def tag(self) -> str:
        return f"P{self.index + 1:03d}"

    @property
    def stalls(self) -> bool:
        """Nothing is written for this therapy after its sample reached the lab."""
        return Fault.STALLED in self.faults

    def day(self, step: str) -> int:
        """Cohort day of a step of the timeline ("enrol" is day 0 of the therapy)."""
        return self.start_day + (0 if step == "enrol" else getattr(self.timeline, step))


@dataclass(frozen=True)
class Cohort:
    """The patients whose therapies complete, and the one referral that stalls."""

    patients: tuple[Patient, ...]
    #: the MRN of the patient in the next bed, whose wristband is scanned by mistake
    neighbours: dict[int, str]
    stalled: Patient

    @property
    def therapies(self) -> tuple[Patient, ...]:
        """Everyone the demo drives: the cohort, then the stalled referral."""
        return (*self.patients, self.stalled)

    @property
    def days(self) -> int:
        """Cohort days from the first enrolment to the last outcome, inclusive."""
        return max(p.day("outcome_2") for p in self.patients) + 1

    def carrying(self, fault: Fault) -> Patient:
        return next(p for p in self.patients if fault in p.faults)


#: MRN assigning authority of the demo hospital (PID-3.4, FHIR identifier system)
AUTHORITY = "PCC"
#: a visitor's wristband, for a cohort of one (no one else to mix the patient up with)
VISITOR_MRN = "PCC-V000001"


def assign_faults(patients: int) -> dict[int, set[Fault]]:
    """Spread the sent faults over the cohort (patient index -> faults): fault ``k`` of the
    ``n`` goes to patient ``k * patients // n``, so a large cohort has one fault per faulty
    therapy and a small one doubles them up."""
    faults: dict[int, set[Fault]] = {}
    for k, fault in enumerate(SENT_FAULTS):
        faults.setdefault(k * patients // len(SENT_FAULTS), set()).add(fault)
    return faults


def build_cohort(patients: int, seed: int = 7) -> Cohort:
    """``patients`` patients enrolled over up to three weeks (two days apart at most), and
    the referral that stalls (enrolled on day 0, so its deadline passes while the cohort
    still runs)."""
    if patients < 1:
        raise ValueError(f"a cohort needs at least one patient, not {patients}")
    spread = min(21, 2 * (patients - 1))
    faults = assign_faults(patients)
    built = [_patient(i, seed, (i * spread) // max(patients - 1, 1) if patients > 1 else 0,
                      frozenset(faults.get(i, ())), i % 5 == 4 or i == patients - 1)
             for i in range(patients)]
    neighbours = {p.index: (built[(p.index + 1) % patients].mrn if patients > 1
                            else VISITOR_MRN) for p in built}
    stalled = _patient(patients, seed, 0, frozenset({Fault.STALLED}), False)
    return Cohort(tuple(built), neighbours, stalled)


def _patient(i: int, seed: int, start_day: int, faults: frozenset[Fault],
             second_claim_outstanding: bool) -> Patient:
    rng = random.Random(seed * 100_003 + i)
    hla = tuple(sorted({rng.choice(HLA_ALLELES[:3]), rng.choice(HLA_ALLELES[3:6]),
                        rng.choice(HLA_ALLELES[6:])}))
    return Patient(
        index=i, mrn=f"PCC-{400_101 + 37 * i:07d}",
        given_name=GIVEN[i % len(GIVEN)], family_name=FAMILY[(i * 7) % len(FAMILY)],
        sex="F" if i % 2 == 0 else "M",
        birth_date=f"{rng.randint(1948, 1985)}{rng.randint(1, 12):02d}"
                   f"{rng.randint(1, 28):02d}",
        cancer=CANCERS[i % len(CANCERS)], hla=hla, start_day=start_day,
        minute=(i * 13) % 120, timeline=_timeline(rng),
        research_consent=rng.random() < 0.7, faults=faults,
        second_claim_outstanding=second_claim_outstanding)
