"""One therapy as a study counts it: the row a party reads from its own site's projection.

Each field is already reduced to what a statistic needs (best response, worst grade,
whole days), so that the aggregation in :mod:`.aggregates` is a plain count. A row that
breaks a rule raises :class:`CohortRowError` naming the therapy, the field and the value:
a malformed row stops the party before anything is shared.
"""

from __future__ import annotations

from dataclasses import dataclass

#: RECIST 1.1 categories, best first: the best overall response is the first one reached
RECIST = ("CR", "PR", "SD", "PD", "NE")
#: worst CTCAE grade per dosed therapy; 0: dosed, no adverse event reported
CTCAE_GRADES = (0, 1, 2, 3, 4, 5)
MAX_DAYS = 100 * 366


class CohortRowError(ValueError):
    """A therapy row cannot be counted; the message says which row, field and value."""


@dataclass(frozen=True)
class TherapyRecord:
    """A therapy of one site as the study sees it (never leaves the party).

    :param therapy: the therapy's pseudonym at this site (for error messages only).
    :param site_id: the hospital site that enrolled the patient.
    :param cancer_type: ICD-10 category of the diagnosis (``C43``), ``None`` if none recorded.
    :param best_response: best RECIST response over the assessments, ``None`` if never assessed.
    :param worst_ctcae_grade: worst CTCAE grade among adverse events if the therapy was dosed
        (0: dosed, none reported); ``None`` if never dosed (outside the safety population).
    :param vein_to_vein_days: whole days from tumour sample collection to first dose.
    :param time_to_first_dose_days: whole days from enrolment to first dose.
    :param survival_days: whole days from enrolment to death or to the last assessment
        (censored); ``None`` without any follow-up.
    :param died: the survival time ends in death (else it is censored).
    """

    therapy: str
    site_id: str
    cancer_type: str | None
    best_response: str | None = None
    worst_ctcae_grade: int | None = None
    vein_to_vein_days: int | None = None
    time_to_first_dose_days: int | None = None
    survival_days: int | None = None
    died: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> CohortRowError:
            return CohortRowError(f"therapy {self.therapy!r} at site {self.site_id!r}: "
                                  f"{name} = {getattr(self, name)!r} {why}")

        if self.best_response is not None and self.best_response not in RECIST:
            raise bad("best_response", f"is not a RECIST category {RECIST}")
        grade = self.worst_ctcae_grade
        if grade is not None and (not _whole(grade) or grade not in CTCAE_GRADES):
            raise bad("worst_ctcae_grade", "is not a CTCAE grade 1-5 (or 0: dosed, none)")
        for name in ("vein_to_vein_days", "time_to_first_dose_days", "survival_days"):
            value = getattr(self, name)
            if value is not None and (not _whole(value) or not 0 <= value <= MAX_DAYS):
                raise bad(name, f"must be whole days from 0 to {MAX_DAYS}")
        if self.died and self.survival_days is None:
            raise bad("died", "is set but survival_days is missing")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
