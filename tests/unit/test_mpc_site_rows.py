"""A party's rows: its own site's therapies from the projection, only with research consent.

Given the projected scripted scenario (therapy A at KYOTO01 with RESEARCH consent, C at
KYOTO01 without, B at OSAKA02 without), when a party reads its site's rows, then KYOTO01
gets A alone, reduced to what the study counts, and OSAKA02 gets nothing; once A's patient
withdraws research consent, the next run's rows no longer hold A. Only research consent the
patient signed with their own key, given and not withdrawn by the run's time, counts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pcvhub.mpc.records import TherapyRecord
from pcvhub.mpc.site_rows import site_rows_from_file
from pcvhub.projections.store import connect

from .test_projection_scenario import ScriptedLog, project, scripted_log

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def scripted() -> ScriptedLog:
    return scripted_log()


@pytest.fixture(scope="module")
def projected(scripted: ScriptedLog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("site-rows") / "hub.duckdb"
    project(path, scripted.gatekeep(), scripted.anchor)
    return path


def test_a_site_reads_only_its_own_consented_therapies(scripted: ScriptedLog,
                                                       projected: Path) -> None:
    (row,) = site_rows_from_file(projected, "KYOTO01", AS_OF)
    assert row.therapy == scripted.coi_a  # C, at the same site, has no research consent
    assert site_rows_from_file(projected, "OSAKA02", AS_OF) == []


def test_a_therapy_is_reduced_to_what_the_study_counts(projected: Path) -> None:
    (row,) = site_rows_from_file(projected, "KYOTO01", AS_OF)
    assert isinstance(row, TherapyRecord)
    assert (row.site_id, row.cancer_type) == ("KYOTO01", "C43")  # diagnosed C43.5
    assert row.best_response in {"CR", "PR", "SD", "PD", "NE"}
    assert row.worst_ctcae_grade is not None  # dosed: in the safety population
    assert row.survival_days is not None and not row.died


def test_a_withdrawal_removes_the_patient_from_the_next_run(tmp_path: Path) -> None:
    scripted = scripted_log()  # its own log: the one the other tests share stays as it was
    a = scripted.therapies["A"]
    scripted.accept(a, a.withdraw("RESEARCH"))
    path = tmp_path / "hub.duckdb"
    project(path, scripted.gatekeep(), scripted.anchor)
    assert site_rows_from_file(path, "KYOTO01", AS_OF) == []


def test_only_research_consent_the_patient_signed_and_active_at_the_run_counts(
        tmp_path: Path) -> None:
    """C's research consent is witnessed (not the patient's signature): never counted. A's
    counts from its grant until its withdrawal: a run before the grant or at and after the
    withdrawal does not hold A."""
    scripted = scripted_log()
    a, c = scripted.therapies["A"], scripted.therapies["C"]
    scripted.accept(c, c.witnessed_consent("RESEARCH"))
    withdrawal = scripted.accept(a, a.withdraw("RESEARCH"))
    path = tmp_path / "hub.duckdb"
    project(path, scripted.gatekeep(), scripted.anchor)
    con = connect(path, read_only=True)
    try:
        [(granted_at,)] = con.execute(
            "SELECT granted_at FROM consents WHERE coi = ? AND scope = 'RESEARCH'",
            [scripted.coi_a]).fetchall()
        signers = dict(con.execute("SELECT coi, signed_by FROM consents "
                                   "WHERE scope = 'RESEARCH'").fetchall())
    finally:
        con.close()
    assert signers == {scripted.coi_a: "PATIENT", scripted.coi_c: "WITNESSED"}
    withdrawn_at = datetime.fromtimestamp(withdrawal.occurred_at_us / 1e6, UTC)
    second = timedelta(seconds=1)

    def counted(at: datetime) -> list[str]:
        return [r.therapy for r in site_rows_from_file(path, "KYOTO01", at)]

    assert counted(granted_at - second) == []
    assert counted(granted_at) == [scripted.coi_a]
    assert counted(withdrawn_at - second) == [scripted.coi_a]
    assert counted(withdrawn_at) == [] == counted(withdrawn_at + 365 * 86_400 * second)
