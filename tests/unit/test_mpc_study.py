"""An approved study decides what a party computes; a malformed spec or row stops it early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcvhub.mpc.aggregates import Layout, aggregate
from pcvhub.mpc.records import CohortRowError, TherapyRecord
from pcvhub.mpc.study import (
    Statistic,
    StudyRefused,
    StudySpec,
    StudySpecError,
    authorise,
    parse_statistics,
)

SITES = ("KYOTO01", "OSAKA02", "TOKYO03")


def spec(**changes: object) -> StudySpec:
    fields: dict[str, object] = {
        "study_id": "STUDY-7", "sites": SITES, "cancer_types": ("C43", "C34"),
        "statistics": (Statistic.RESPONSE_BY_RECIST, Statistic.OVERALL_SURVIVAL_KM),
        "site_groups": {"KYOTO01": "kansai", "OSAKA02": "kansai", "TOKYO03": "kanto"}}
    return StudySpec(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_run_asking_for_an_unapproved_statistic_is_refused_naming_it() -> None:
    with pytest.raises(StudyRefused, match="does not approve vein_to_vein_quartiles"):
        authorise(spec(), "OSAKA02", [Statistic.RESPONSE_BY_RECIST,
                                      Statistic.VEIN_TO_VEIN_QUARTILES])


def test_a_run_computes_what_it_asks_in_the_spec_order_or_everything_approved() -> None:
    approved = spec()
    assert authorise(approved, "KYOTO01", []) == approved.statistics
    assert authorise(approved, "KYOTO01", [Statistic.OVERALL_SURVIVAL_KM]) == (
        Statistic.OVERALL_SURVIVAL_KM,)


def test_a_site_outside_the_study_is_refused() -> None:
    with pytest.raises(StudyRefused, match="site 'NAGOYA04' is not a party"):
        authorise(spec(), "NAGOYA04", [])


def test_an_unknown_statistic_name_is_refused_with_the_known_ones() -> None:
    with pytest.raises(StudyRefused, match="unknown statistic 'median_income'.*overall_surv"):
        parse_statistics(["median_income"])


@pytest.mark.parametrize(("changes", "message"), [
    ({"small_cell_threshold": 0}, "small_cell_threshold is 0"),
    ({"sites": ("KYOTO01", "KYOTO01")}, "sites must be 1 to 9 distinct"),
    ({"site_groups": {"NAGOYA04": "chubu"}}, "site_groups names sites outside"),
    ({"consent_scope": "PAYER_SHARING"}, "consent_scope is 'PAYER_SHARING'"),
    ({"survival_fraction_bits": 40}, "survival_fraction_bits is 40"),
])
def test_a_malformed_spec_names_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(StudySpecError, match=message):
        spec(**changes)


def test_the_spec_round_trips_through_json_with_the_same_digest(tmp_path: Path) -> None:
    approved = spec()
    path = tmp_path / "study.json"
    path.write_text(json.dumps(approved.to_json()))
    assert StudySpec.load(path) == approved
    assert StudySpec.load(path).digest() == approved.digest()
    assert spec(small_cell_threshold=6).digest() != approved.digest()


def test_a_spec_file_with_an_unknown_field_or_statistic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    path.write_text(json.dumps({**spec().to_json(), "approver": "someone"}))
    with pytest.raises(StudySpecError, match=r"unknown field\(s\) \['approver'\]"):
        StudySpec.load(path)
    path.write_text(json.dumps({**spec().to_json(), "statistics": ["mean_age"]}))
    with pytest.raises(StudySpecError, match="'mean_age' is not a valid Statistic"):
        StudySpec.load(path)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("best_response", "MR", "best_response = 'MR' is not a RECIST category"),
    ("worst_ctcae_grade", 6, "worst_ctcae_grade = 6 is not a CTCAE grade"),
    ("vein_to_vein_days", -3, "vein_to_vein_days = -3 must be whole days"),
    ("survival_days", 12.5, "survival_days = 12.5 must be whole days"),
])
def test_a_malformed_row_names_the_therapy_field_and_value(field: str, value: object,
                                                           message: str) -> None:
    with pytest.raises(CohortRowError, match=f"therapy 'T-9' at site 'KYOTO01': {message}"):
        TherapyRecord("T-9", "KYOTO01", "C43", **{field: value})  # type: ignore[arg-type]


def test_a_party_refuses_a_row_of_another_site() -> None:
    rows = [TherapyRecord("T-1", "KYOTO01", "C43"), TherapyRecord("T-2", "OSAKA02", "C43")]
    with pytest.raises(CohortRowError, match="'T-2': site_id 'OSAKA02' in the rows of site"):
        aggregate(rows, Layout(spec(), spec().statistics), "KYOTO01")


def test_a_site_counts_only_in_its_own_group_and_only_studied_cancers() -> None:
    approved = spec(statistics=(Statistic.RESPONSE_BY_RECIST,))
    layout = Layout(approved, approved.statistics)
    rows = [TherapyRecord("T-1", "TOKYO03", "C34", best_response="PR"),
            TherapyRecord("T-2", "TOKYO03", "C64", best_response="CR")]  # C64 not studied
    counts = aggregate(rows, layout, "TOKYO03").counts
    # strata: (kansai, C43), (kansai, C34), (kanto, C43), (kanto, C34); categories CR..NE
    assert layout.strata[3] == ("kanto", "C34")
    assert counts.tolist() == [0] * 15 + [0, 1, 0, 0, 0]
