"""Starting the dashboard: ``serve_dashboard``, ``DashboardServer`` and ``pcvhub dashboard``.

Given a projection file, when the dashboard is started the way the demo starts it (in
the background, on a free loopback port), then the URL it returns answers at once; the
command serves until SIGTERM and exits cleanly; a missing, foreign or busy file and a
port in use are refused with a sentence naming what is wrong.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import httpx
import pytest

from pcvhub.web import DashboardError, DashboardServer, create_app, serve_dashboard

from .test_web_scenario import WebScenario, web_scenario

LAUNCHER = ("import typer; from pcvhub.cli_web import register; "
            "app = typer.Typer(); register(app); app()")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> WebScenario:
    return web_scenario(tmp_path_factory.mktemp("server") / "hub.duckdb")


def test_serve_dashboard_returns_a_loopback_url_that_answers_at_once(
        scenario: WebScenario) -> None:
    url = serve_dashboard(scenario.path)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url) and not url.endswith(":0")
    health = httpx.get(f"{url}/health", timeout=10).json()
    therapies = duckdb.connect(str(scenario.path), read_only=True)
    try:
        count = therapies.execute("SELECT count(*) FROM case_status").fetchone()[0]
    finally:
        therapies.close()
    assert health == {"db": str(scenario.path), "therapies": count,
                      "log_records": health["log_records"]} and health["log_records"] > 0


def test_a_stopped_server_frees_its_port(scenario: WebScenario) -> None:
    with DashboardServer(scenario.path) as server:
        assert httpx.get(server.url, timeout=10).status_code == 200
        port = int(server.url.rsplit(":", 1)[1])
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)
    with DashboardServer(scenario.path, port=port) as again:  # the port can be taken again
        assert httpx.get(again.url, timeout=10).status_code == 200


def test_a_port_in_use_is_refused_with_the_port(scenario: WebScenario) -> None:
    with DashboardServer(scenario.path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            DashboardServer(scenario.path, port=port)
        assert httpx.get(server.url, timeout=10).status_code == 200


def test_a_missing_or_foreign_file_is_refused_when_the_dashboard_starts(
        tmp_path: Path) -> None:
    with pytest.raises(DashboardError, match=r"projection file .*nothing\.duckdb does not "
                                             r"exist: run `pcvhub project`"):
        create_app(tmp_path / "nothing.duckdb")
    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE case_status (coi VARCHAR)")
    con.close()
    with pytest.raises(DashboardError, match=r"is not a projection file \(it lacks view "
                                             r"case_status, view audit_trail"):
        create_app(foreign)
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database")
    with pytest.raises(DashboardError, match="cannot be opened as a DuckDB file"):
        create_app(text)


class Command:
    """`pcvhub dashboard` (registered on a fresh Typer app) in its own process."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, COLUMNS="300", PYTHONPATH=os.getcwd()))

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()


def test_the_command_serves_until_sigterm_and_stops_cleanly(scenario: WebScenario) -> None:
    command = Command("--db", str(scenario.path), "--port", "0")
    try:
        first = command.line()
        found = re.search(r"at (http://127\.0\.0\.1:\d+) ", first)
        assert found, first
        page = httpx.get(f"{found[1]}/therapies/{scenario.a.coi}", timeout=10)
        assert page.status_code == 200 and scenario.a.coi in page.text
        command.proc.send_signal(signal.SIGTERM)
        rest, _ = command.proc.communicate(timeout=30)
    finally:
        if command.proc.poll() is None:
            command.proc.kill()
    assert command.proc.returncode == 0
    assert "dashboard stopped" in rest


def test_the_command_refuses_a_file_that_is_not_there(tmp_path: Path) -> None:
    command = Command("--db", str(tmp_path / "gone.duckdb"), "--port", "0")
    out, _ = command.proc.communicate(timeout=60)
    assert command.proc.returncode == 1
    assert "error:" in out and "gone.duckdb does not exist" in out
