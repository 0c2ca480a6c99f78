"""`pcvhub projections ...` on files (the commands that need Kafka are integration tests).

The commands are registered on a fresh Typer app with ``register``, exactly as
``pcvhub.cli`` adds them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pcvhub.cli_projections import register
from pcvhub.projections.digest import digest_file

from .test_projection_scenario import ScriptedLog, project, scripted_log


@pytest.fixture(scope="module")
def scripted() -> ScriptedLog:
    return scripted_log()


@pytest.fixture(scope="module")
def projected(scripted: ScriptedLog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "hub.duckdb"
    project(path, scripted.gatekeep(), scripted.anchor)
    return path


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PCVHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PCVHUB_TOPIC_PREFIX", "test")
    monkeypatch.setenv("COLUMNS", "250")  # rich tables and messages unwrapped
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_digest_prints_the_files_digest_and_each_table(cli, projected: Path) -> None:
    result = cli("projections", "digest", projected, "--tables")
    assert result.exit_code == 0, result.output
    digest = digest_file(projected)
    assert f"digest {digest.sha256}" in result.output
    envelopes = next(t for t in digest.tables if t.name == "envelopes")
    assert "envelopes" in result.output and f"{envelopes.rows:,}" in result.output


def test_digest_of_a_missing_file_says_so(cli, tmp_path: Path) -> None:
    result = cli("projections", "digest", tmp_path / "nothing.duckdb")
    assert result.exit_code == 1
    assert "no projection file at" in result.output


def test_a_file_held_by_a_running_projection_is_named_busy(cli, projected: Path,
                                                            tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('open', flush=True); time.sleep(60)", str(projected)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        result = cli("projections", "digest", projected)
        assert result.exit_code == 1
        assert "open in another process" in result.output
        assert "published snapshot" in result.output
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert cli("projections", "digest", projected).exit_code == 0


def test_audit_prints_the_chain_of_a_therapy(cli, scripted: ScriptedLog,
                                             projected: Path) -> None:
    result = cli("projections", "audit", scripted.coi_b, "--db", projected)
    assert result.exit_code == 0, result.output
    assert "PatientEnrolled" in result.output and "GENESIS" in result.output
    assert result.output.count("VERIFIED") >= len(scripted.therapies["B"].log)
    missing = cli("projections", "audit", "PCV-NOWHERE-2026-000000000000X", "--db", projected)
    assert missing.exit_code == 1 and "no record of therapy" in missing.output


def test_schema_lists_the_views_and_documents_their_columns(cli, projected: Path) -> None:
    listing = cli("projections", "schema", "--db", projected)
    assert listing.exit_code == 0, listing.output
    for view in ("audit_trail", "case_status", "inventory", "billing_claims", "qc_results",
                 "turnaround_by_site"):
        assert view in listing.output
    inventory = cli("projections", "schema", "inventory", "--db", projected)
    assert "placement_method" in inventory.output and "CONSIGNMENT" in inventory.output
    unknown = cli("projections", "schema", "nonsense", "--db", projected)
    assert unknown.exit_code == 1 and "no view 'nonsense'" in unknown.output


def test_snapshot_writes_a_copy_and_says_how_to_connect(cli, projected: Path,
                                                        tmp_path: Path) -> None:
    result = cli("projections", "snapshot", "--db", projected, "--scope", "payer:KENPO",
                 "--out", tmp_path / "kenpo.duckdb")
    assert result.exit_code == 0, result.output
    assert "duckdb -readonly" in result.output
    assert (tmp_path / "kenpo.duckdb").exists()
    refused = cli("projections", "snapshot", "--db", projected, "--scope", "all",
                  "--out", tmp_path / "x.duckdb")
    assert refused.exit_code == 1 and "unknown scope 'all'" in refused.output


def test_rebuild_refuses_to_overwrite_a_file(cli, projected: Path) -> None:
    result = cli("projections", "rebuild", "--out", projected)
    assert result.exit_code == 1
    assert "a rebuild writes a fresh file" in result.output
