"""The QC specification panel of each therapy type: which tests a batch must pass before
the qualified person may release it, the limit each result is judged against, and the
storage range its samples, batches and doses must be kept in; and its manufacturing
recipe: the steps of the master batch record a batch goes through, in order, before QC.

The gatekeeper judges every ``QcResultRecorded`` by this table, not by the analyst's word:
the recorded specification and unit must be the panel's, the value must meet the limit
for a PASS and miss it for a FAIL (``Limit.meets``), and a release needs the latest result
of every test of the panel to be a PASS (``pcvhub.streams.case``). An identity test is
judged against the approved design itself: its value is the digest of the sequence read
from the product, which must be the batch's design hash.

Logger readings (``TemperatureLogRecorded``) are judged against the storage range by the
hub itself (``storage_excursion``): the holder uploads what the logger read, never its own
verdict on it.

Manufacturing steps (``ManufacturingStepCompleted``) are judged against the recipe: each
batch records the recipe's steps in its order, and QC results are recorded (and a batch
released) only once every step was recorded (``Recipe.next_step``, ``Recipe.missing``).

A therapy type without a panel has no release path, and one without a recipe no
manufacturing (fail closed): add both here, after review, before its first batch is made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from itertools import pairwise


class LimitKind(StrEnum):
    """How a result is compared with its limit."""

    OBSERVATION = "OBSERVATION"  # the value must read exactly as ``expected``
    AT_MOST = "AT_MOST"          # a number below ``bound`` (or at it, if inclusive)
    AT_LEAST = "AT_LEAST"        # a number above ``bound`` (or at it, if inclusive)
    DESIGN_MATCH = "DESIGN_MATCH"  # the sequence digest of the product is the design hash


class UnreadableValue(ValueError):
    """A result's value cannot be compared with its limit (the message says why)."""


@dataclass(frozen=True)
class Limit:
    """One test of a panel.

    :param test: the test's name, as ``QcResultRecorded.test`` names it.
    :param specification: the acceptance criterion as recorded (``QcResultRecorded
        .specification`` must be exactly this).
    :param kind: how the value is compared (``LimitKind``).
    :param unit: the unit a numeric value is in (None for an observation).
    :param bound: the numeric limit (AT_MOST, AT_LEAST).
    :param inclusive: whether a value at the bound passes.
    :param expected: the observation a pass reads as (OBSERVATION).
    """

    test: str
    specification: str
    kind: LimitKind
    unit: str | None = None
    bound: Decimal | None = None
    inclusive: bool = False
    expected: str | None = None

    def meets(self, value: str, *, design_hash: str) -> bool:
        """Whether ``value`` meets this limit (``design_hash``: the batch's design).

        :raises UnreadableValue: a numeric test's value is not a finite number.
        """
        if self.kind is LimitKind.OBSERVATION:
            return value.strip().lower() == (self.expected or "").lower()
        if self.kind is LimitKind.DESIGN_MATCH:
            return value.strip().lower() == design_hash.lower()
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            number = Decimal("NaN")
        if not number.is_finite() or self.bound is None:
            raise UnreadableValue(f"value {value!r} is not a number, but {self.test} is "
                                  f"measured in {self.unit}")
        if self.kind is LimitKind.AT_MOST:
            return number < self.bound or (self.inclusive and number == self.bound)
        return number > self.bound or (self.inclusive and number == self.bound)


@dataclass(frozen=True)
class SpecificationPanel:
    """Every test a batch of one therapy type must pass, by test name."""

    therapy_type: str
    limits: tuple[Limit, ...]
    storage_min_celsius: float
    storage_max_celsius: float

    def __post_init__(self) -> None:
        names = [limit.test for limit in self.limits]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"the QC panel of {self.therapy_type} must name each test once "
                             f"and at least one test; it names {names}")

    @property
    def tests(self) -> tuple[str, ...]:
        return tuple(limit.test for limit in self.limits)

    def limit(self, test: str) -> Limit | None:
        return next((limit for limit in self.limits if limit.test == test), None)


#: the panel of each therapy type (``PatientEnrolled.therapy_type``)
PANELS: Mapping[str, SpecificationPanel] = {panel.therapy_type: panel for panel in (
    # an individualised mRNA-LNP vaccine, released per patient lot
    SpecificationPanel("individualized-neoantigen-mRNA", (
        Limit("sterility", "no growth", LimitKind.OBSERVATION, expected="no growth"),
        Limit("endotoxin", "< 5", LimitKind.AT_MOST, unit="EU/mL", bound=Decimal(5)),
        Limit("identity", "sequence matches design", LimitKind.DESIGN_MATCH),
        Limit("mRNA integrity", ">= 80", LimitKind.AT_LEAST, unit="%", bound=Decimal(80),
              inclusive=True),
    ), storage_min_celsius=-80.0, storage_max_celsius=-60.0),
)}


@dataclass(frozen=True)
class Recipe:
    """The manufacturing steps of one therapy type's master batch record, in the order
    every batch goes through them (``ManufacturingStepCompleted.step`` names one)."""

    therapy_type: str
    steps: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.steps or len(set(self.steps)) != len(self.steps):
            raise ValueError(f"the recipe of {self.therapy_type} must name each step once "
                             f"and at least one step; it names {list(self.steps)}")

    def missing(self, done: Sequence[str]) -> tuple[str, ...]:
        """The steps of the recipe not among ``done``, in recipe order (a batch's record
        from before the recipe was enforced may hold a later step without the earlier)."""
        return tuple(step for step in self.steps if step not in done)

    def next_step(self, done: Sequence[str]) -> str | None:
        """The step a batch that recorded ``done`` records next, or None once every step
        is recorded."""
        missing = self.missing(done)
        return missing[0] if missing else None


#: the recipe of each therapy type (``PatientEnrolled.therapy_type``)
RECIPES: Mapping[str, Recipe] = {recipe.therapy_type: recipe for recipe in (
    # in vitro transcription, purification, lipid nanoparticle formulation, fill and finish
    Recipe("individualized-neoantigen-mRNA",
           ("IVT mRNA synthesis", "purification", "LNP formulation", "fill-finish")),
)}


def recipe_for(therapy_type: str | None) -> Recipe | None:
    """The recipe of ``therapy_type``, or None: a therapy type nobody specified."""
    return RECIPES.get(therapy_type or "")


def panel_for(therapy_type: str | None) -> SpecificationPanel | None:
    """The panel of ``therapy_type``, or None: a therapy type nobody specified."""
    return PANELS.get(therapy_type or "")


def storage_excursion(panel: SpecificationPanel,
                      readings: Sequence[tuple[int, float]]) -> str | None:
    """What the readings (event-time microseconds, degrees Celsius; in time order) show
    outside the panel's storage range, or None if every reading is inside it. A reading
    out of range counts until the next reading."""
    low, high = panel.storage_min_celsius, panel.storage_max_celsius
    outside = [(at, c) for at, c in readings if not low <= c <= high]
    if not outside:
        return None
    seconds = sum((nxt[0] - cur[0]) // 1_000_000 for cur, nxt in pairwise(readings)
                  if not low <= cur[1] <= high)
    coldest, warmest = min(c for _, c in outside), max(c for _, c in outside)
    return (f"{len(outside)} of {len(readings)} logger readings outside {low:g}..{high:g} C "
            f"({coldest:g}..{warmest:g} C, about {seconds} s)")
