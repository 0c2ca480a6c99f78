"""What analysts and payers get: pseudonymised copies, never a raw patient identifier.

Given the projected scripted scenario, when copies are published for each scope, then no
copy holds a chain-of-identity id, a patient hash or (outside the payer's own) a claim
id; the research copy holds only therapies whose RESEARCH consent holds; a payer's copy
holds only that payer's rows.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from pcvhub.projections.publish import (
    KEY_FILE,
    Pseudonyms,
    Publisher,
    PublishError,
    pseudonym_key,
    snapshot,
    snapshot_file,
)
from pcvhub.projections.store import connect

from .test_projection_scenario import ScriptedLog, project, scripted_log

AS_OF = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def scripted() -> ScriptedLog:
    return scripted_log()


@pytest.fixture(scope="module")
def projected(scripted: ScriptedLog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("publish") / "hub.duckdb"
    project(path, scripted.gatekeep(), scripted.anchor)
    return path


@pytest.fixture(scope="module")
def published(projected: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published")
    con = connect(projected, read_only=True)
    try:
        written = Publisher(root / "data", root / "out", every=60).publish(con)
    finally:
        con.close()
    return {path.stem: path for path in written}


def raw_identifiers(scripted: ScriptedLog) -> set[str]:
    patients = {t.patient_hash for t in scripted.therapies.values()}
    return {scripted.coi_a, scripted.coi_b, scripted.coi_c, *patients}


def every_text(path: Path) -> Iterator[tuple[str, str, str]]:
    """(table, column, text) for every text value in a copy, lists flattened."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        for (table,) in con.execute("SHOW TABLES").fetchall():
            cursor = con.execute(f"SELECT * FROM {table}")
            names = [d[0] for d in cursor.description]
            for row in cursor.fetchall():
                for name, value in zip(names, row, strict=True):
                    for item in value if isinstance(value, list) else [value]:
                        if isinstance(item, str):
                            yield table, name, item
    finally:
        con.close()


def test_copies_are_published_for_every_scope_and_payer(published: dict[str, Path]) -> None:
    assert set(published) == {"operations", "research", "payer-NHI", "payer-KENPO"}


def test_no_copy_holds_a_raw_patient_or_therapy_identifier(
        scripted: ScriptedLog, published: dict[str, Path]) -> None:
    raw = raw_identifiers(scripted)
    for path in published.values():
        leaks = [(t, c, v) for t, c, v in every_text(path) if any(r in v for r in raw)]
        assert leaks == [], path


def test_claim_ids_are_pseudonymised_except_in_the_payers_own_copy(
        published: dict[str, Path]) -> None:
    claim_ids = {"CLM-1", "CLM-2", "KENPO-CLM-1"}
    ops = {v for _, _, v in every_text(published["operations"])}
    assert not ops & claim_ids
    nhi = duckdb.connect(str(published["payer-NHI"]), read_only=True)
    try:
        assert {r[0] for r in nhi.execute("SELECT claim_id FROM claims").fetchall()} == {
            "CLM-1", "CLM-2"}
    finally:
        nhi.close()


def test_a_payer_copy_holds_only_that_payers_rows(published: dict[str, Path]) -> None:
    kenpo_text = {v for _, _, v in every_text(published["payer-KENPO"])}
    assert "KENPO-CLM-1" in kenpo_text
    assert not kenpo_text & {"CLM-1", "CLM-2", "NHI"}
    con = duckdb.connect(str(published["payer-KENPO"]), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM milestones").fetchone()[0] == 0
        assert con.execute("SELECT status FROM claims").fetchall() == [("APPROVED",)]
    finally:
        con.close()


def test_the_research_copy_holds_only_consented_therapies(
        scripted: ScriptedLog, published: dict[str, Path]) -> None:
    con = duckdb.connect(str(published["research"]), read_only=True)
    try:
        therapies = {r[0] for r in con.execute("SELECT therapy FROM case_status").fetchall()}
        outcome_therapies = {r[0] for r in con.execute("SELECT therapy FROM outcomes")
                             .fetchall()}
        tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    finally:
        con.close()
    assert len(therapies) == 1  # only A granted RESEARCH consent
    assert outcome_therapies == therapies
    assert not tables & {"billing_claims", "inventory", "alerts"}


def test_research_consent_withdrawn_removes_the_therapy(tmp_path: Path) -> None:
    withdrawn = scripted_log()
    a = withdrawn.therapies["A"]
    withdrawn.accept(a, a.withdraw("RESEARCH"))
    project(tmp_path / "hub.duckdb", withdrawn.gatekeep(), withdrawn.anchor)
    out = snapshot_file(tmp_path / "hub.duckdb", tmp_path / "data", "research",
                        tmp_path / "research.duckdb", as_of=AS_OF)
    con = duckdb.connect(str(out), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM case_status").fetchone()[0] == 0
    finally:
        con.close()


def test_pseudonyms_are_stable_within_a_scope_and_differ_between_scopes(
        scripted: ScriptedLog, projected: Path, tmp_path: Path) -> None:
    first = snapshot_file(projected, tmp_path / "data", "operations", tmp_path / "1.duckdb")
    again = snapshot_file(projected, tmp_path / "data", "operations", tmp_path / "2.duckdb")
    payer = snapshot_file(projected, tmp_path / "data", "payer:NHI", tmp_path / "3.duckdb")

    def therapies(path: Path, table: str) -> set[str]:
        con = duckdb.connect(str(path), read_only=True)
        try:
            return {r[0] for r in con.execute(f"SELECT therapy FROM {table}").fetchall()}
        finally:
            con.close()

    ops = therapies(first, "billing_claims")
    assert ops == therapies(again, "billing_claims")
    assert not ops & therapies(payer, "claims")
    secret = pseudonym_key(tmp_path / "data")
    assert Pseudonyms.for_scope(secret, "operations").of("therapy", scripted.coi_a) in ops


def test_the_pseudonym_key_is_created_once_and_readable_by_its_owner_only(
        tmp_path: Path) -> None:
    secret = pseudonym_key(tmp_path)
    assert pseudonym_key(tmp_path) == secret and len(secret) == 32
    mode = stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    (tmp_path / KEY_FILE).write_bytes(b"short")
    with pytest.raises(PublishError, match="not a 32-byte pseudonym key"):
        pseudonym_key(tmp_path)


def test_parquet_copies_are_one_file_per_table(projected: Path, tmp_path: Path) -> None:
    out = snapshot_file(projected, tmp_path / "data", "payer:NHI", tmp_path / "nhi", "parquet")
    assert sorted(p.name for p in out.iterdir()) == [
        "claims.parquet", "milestones.parquet", "receivables_ageing.parquet",
        "snapshot_info.parquet"]
    claims = duckdb.sql(f"SELECT claim_id FROM '{out}/claims.parquet' ORDER BY 1").fetchall()
    assert claims == [("CLM-1",), ("CLM-2",)]
    again = snapshot_file(projected, tmp_path / "data", "payer:NHI", tmp_path / "nhi",
                          "parquet")  # replaces the folder
    assert again == out and len(list(out.iterdir())) == 4


def test_an_unknown_scope_or_format_is_refused_with_the_choices(projected: Path,
                                                                 tmp_path: Path) -> None:
    con = connect(projected, read_only=True)
    try:
        with pytest.raises(PublishError, match="operations, research or payer:<PAYER_ID>"):
            snapshot(con, b"k" * 32, "everyone", tmp_path / "x.duckdb")
        with pytest.raises(PublishError, match="duckdb or parquet"):
            snapshot(con, b"k" * 32, "operations", tmp_path / "x.csv", "csv")
    finally:
        con.close()
    assert not (tmp_path / "x.duckdb").exists()


def test_the_publisher_waits_its_interval(projected: Path, tmp_path: Path) -> None:
    now = [0.0]
    publisher = Publisher(tmp_path / "data", tmp_path / "out", every=60, clock=lambda: now[0])

    class Open:  # what the runner hands over between batches: its open store
        con = connect(projected, read_only=True)

    try:
        publisher(Open)  # type: ignore[arg-type]
        first = (tmp_path / "out" / "operations.duckdb").stat().st_ino
        now[0] = 30.0
        publisher(Open)  # type: ignore[arg-type]
        assert (tmp_path / "out" / "operations.duckdb").stat().st_ino == first
        now[0] = 61.0
        publisher(Open)  # type: ignore[arg-type]
        assert (tmp_path / "out" / "operations.duckdb").stat().st_ino != first  # replaced
    finally:
        Open.con.close()
