"""What a study may compute: the approved study specification every party checks first.

A :class:`StudySpec` is what a researcher asks for and an ethics approver approves: the
statistics, the sites (one computation party each, in party order), how sites are grouped
in the tables, the consent scope that admits a therapy, and the small-cell threshold. Its
fields are plain values so that it maps one to one onto the payload of the study events
that will carry it (``StudyRequested`` holds the spec, ``StudyApproved`` names its
:meth:`StudySpec.digest`); nothing here knows about events, roles or signatures yet.

A party is given the approved spec and the statistics a run asks for; :func:`authorise`
refuses the run, on every party independently, if it asks for anything the spec does not
approve or if the party's site is not one of the study's sites.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

SPEC_VERSION = 1
#: the consent scopes a study may name; only RESEARCH exists in the log today
CONSENT_SCOPES = ("RESEARCH",)
#: an upper bound on therapies per site: keeps every secret sum inside the chosen bit lengths
MAX_THERAPIES_PER_SITE = 100_000
MAX_PARTIES = 9


class Statistic(StrEnum):
    """The statistics a study can ask for (their definitions live in :mod:`.plaintext`)."""

    RESPONSE_BY_RECIST = "response_by_recist"
    ADVERSE_EVENTS_BY_CTCAE = "adverse_events_by_ctcae"
    VEIN_TO_VEIN_QUARTILES = "vein_to_vein_quartiles"
    TIME_TO_FIRST_DOSE_QUARTILES = "time_to_first_dose_quartiles"
    OVERALL_SURVIVAL_KM = "overall_survival_km"


class StudySpecError(ValueError):
    """A study specification is malformed; the message names the field."""


class StudyRefused(PermissionError):
    """A party refuses to compute: the run is not covered by the approved study."""


@dataclass(frozen=True)
class StudySpec:
    """An approved study: what may be computed, over which sites, under which rules.

    :param study_id: the study's identifier (the study chain's id, later).
    :param statistics: the statistics approved.
    :param sites: the hospital sites taking part, in party order (party i is ``sites[i]``).
    :param site_groups: site -> group label the tables are stratified by; a site not named
        here is in group ``"all"``.
    :param cancer_types: the ICD-10 categories (``C43``) studied, in table order; therapies
        of other cancers are outside the study.
    :param consent_scope: the consent a therapy must hold when the study runs.
    :param small_cell_threshold: a published count must be 0 or at least this.
    :param day_bins: histogram bins (whole days 0 .. day_bins-1, the last also holding
        every longer time) for the turnaround quartiles.
    :param survival_bucket_days: width of a Kaplan-Meier time bucket, in days.
    :param survival_buckets: number of Kaplan-Meier buckets (the curve's horizon).
    :param survival_fraction_bits: binary digits of the fixed-point survival probabilities.
    """

    study_id: str
    statistics: tuple[Statistic, ...]
    sites: tuple[str, ...]
    cancer_types: tuple[str, ...]
    small_cell_threshold: int = 5
    site_groups: Mapping[str, str] = field(default_factory=dict)
    consent_scope: str = "RESEARCH"
    day_bins: int = 1024
    survival_bucket_days: int = 30
    survival_buckets: int = 60
    survival_fraction_bits: int = 24
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "statistics", tuple(Statistic(s) for s in self.statistics))
        object.__setattr__(self, "sites", tuple(self.sites))
        object.__setattr__(self, "cancer_types", tuple(self.cancer_types))
        object.__setattr__(self, "site_groups", dict(sorted(self.site_groups.items())))
        self._check()

    def _check(self) -> None:
        def bad(name: str, why: str) -> StudySpecError:
            return StudySpecError(f"study {self.study_id!r}: {name} {why}")

        if not self.study_id:
            raise bad("study_id", "is empty")
        if self.version != SPEC_VERSION:
            raise bad("version", f"is {self.version}; this party reads version {SPEC_VERSION}")
        if not self.statistics or len(set(self.statistics)) != len(self.statistics):
            raise bad("statistics", f"must be non-empty and distinct: {list(self.statistics)}")
        if not 1 <= len(self.sites) <= MAX_PARTIES or len(set(self.sites)) != len(self.sites):
            raise bad("sites", f"must be 1 to {MAX_PARTIES} distinct sites: {list(self.sites)}")
        unknown = sorted(set(self.site_groups) - set(self.sites))
        if unknown:
            raise bad("site_groups", f"names sites outside the study: {unknown}")
        if not self.cancer_types or len(set(self.cancer_types)) != len(self.cancer_types):
            raise bad("cancer_types", f"must be non-empty and distinct: {list(self.cancer_types)}")
        if self.consent_scope not in CONSENT_SCOPES:
            raise bad("consent_scope", f"is {self.consent_scope!r}; known: {CONSENT_SCOPES}")
        bounds = {"small_cell_threshold": (1, 1000), "day_bins": (2, 4096),
                  "survival_bucket_days": (1, 3650), "survival_buckets": (1, 4096),
                  "survival_fraction_bits": (8, 24)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise bad(name, f"is {value!r}; must be a whole number from {low} to {high}")

    # -- layout shared by every party ------------------------------------------------------

    @property
    def groups(self) -> tuple[str, ...]:
        """The site groups in table order (sorted labels)."""
        return tuple(sorted({self.group_of(site) for site in self.sites}))

    def group_of(self, site: str) -> str:
        return self.site_groups.get(site, "all")

    def party_of(self, site: str) -> int:
        try:
            return self.sites.index(site)
        except ValueError:
            raise StudyRefused(f"site {site!r} is not a party to study {self.study_id!r} "
                               f"(its sites: {', '.join(self.sites)})") from None

    # -- the wire form (the future event payload) ------------------------------------------

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["statistics"] = [s.value for s in self.statistics]
        raw["sites"], raw["cancer_types"] = list(self.sites), list(self.cancer_types)
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], where: str = "study") -> StudySpec:
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(raw) - known)
        if extra:
            raise StudySpecError(f"{where}: unknown field(s) {extra}; known: {sorted(known)}")
        try:
            statistics = [Statistic(s) for s in raw.get("statistics", ())]
        except ValueError as exc:
            raise StudySpecError(f"{where}: statistics: {exc}; known: "
                                 f"{[s.value for s in Statistic]}") from None
        try:
            return cls(**{**raw, "statistics": tuple(statistics)})
        except TypeError as exc:
            raise StudySpecError(f"{where}: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> StudySpec:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StudySpecError(f"{path}: not a readable JSON study spec: {exc}") from None
        if not isinstance(raw, dict):
            raise StudySpecError(f"{path}: a study spec is a JSON object")
        return cls.from_json(raw, where=str(path))

    def canonical(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON: what an approval names, what parties compare."""
        return hashlib.sha256(b"pcvhub/study-spec\x00" + self.canonical()).digest()


def parse_statistics(names: Iterable[str]) -> tuple[Statistic, ...]:
    """Statistic names from a command line; an unknown name is refused by name."""
    chosen = []
    for name in names:
        try:
            chosen.append(Statistic(name))
        except ValueError:
            raise StudyRefused(f"unknown statistic {name!r}; known: "
                               f"{', '.join(s.value for s in Statistic)}") from None
    return tuple(chosen)


def authorise(approved: StudySpec, site: str, requested: Iterable[Statistic]
              ) -> tuple[Statistic, ...]:
    """The statistics this party may compute for a run, or :class:`StudyRefused`.

    Every party calls this on its own copy of the approved spec before it opens a
    connection, so a run that asks for more than was approved is refused by all of them.
    """
    approved.party_of(site)
    wanted = tuple(dict.fromkeys(requested)) or approved.statistics
    refused = [s.value for s in wanted if s not in approved.statistics]
    if refused:
        raise StudyRefused(f"study {approved.study_id!r} does not approve "
                           f"{', '.join(refused)} (approved: "
                           f"{', '.join(s.value for s in approved.statistics)}); "
                           f"site {site} refuses the run")
    return tuple(s for s in approved.statistics if s in wanted)
