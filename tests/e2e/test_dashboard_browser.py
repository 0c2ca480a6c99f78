"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright.

Given a small scripted run projected into a DuckDB file (the web scenario of
``tests/unit/test_web_scenario``: real signed events judged by the real gatekeeper code,
with a quarantined dose refused at dispensing and a batch made from an unapproved design
refused), when a person opens the dashboard, goes to the therapy list and opens a
therapy, then the page shows the chain of identity sample -> sequencing -> design ->
batch -> dose -> patient with who signed each step and its verification, and the fault
the gatekeeper caught; the charts render; the browser fetches nothing from anywhere but
the dashboard and logs no error. Screenshots of the therapy pages are saved under
``test-output/`` for people to look at.

A last test runs the scripted scenario through Kafka: a real gatekeeper worker answers
it, ``rebuild`` replays the topics into a fresh projection file (a snapshot no runner
holds), and the browser reads that file's dashboard.

Chromium must be installed (``apt-get install -y chromium``, as ``.ci/run`` does): without
it these tests fail and say so. Playwright drives that binary; it never downloads a
browser of its own.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from pcvhub.clock import SimulationClock
from pcvhub.projections.runner import rebuild
from pcvhub.projections.store import connect
from pcvhub.streams.sandbox import Sandbox
from pcvhub.web import DashboardServer

from ..unit.test_projection_scenario import scripted_log
from ..unit.test_web_scenario import WebScenario, web_scenario
from ..unit.therapy_builder import DAY_US, T0_US, Hub

CHROMIUM = Path(os.environ.get("PCVHUB_CHROMIUM", "/usr/bin/chromium"))
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
CHAIN = ["Tumour sample", "Sequencing", "Vaccine design", "Batch", "Doses", "Patient"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> WebScenario:
    return web_scenario(tmp_path_factory.mktemp("browser") / "hub.duckdb")


@pytest.fixture(scope="module")
def dashboard(scenario: WebScenario) -> Iterator[str]:
    with DashboardServer(scenario.path) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: the browser tests need "
                    "Debian's chromium (`apt-get install -y chromium`; .ci/run installs it), "
                    "or PCVHUB_CHROMIUM set to another Chromium binary", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


class Visit:
    """A browser page that records what it fetched from elsewhere and what it logged."""

    def __init__(self, browser: Browser, origin: str) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1440, "height": 1000})
        self.origin = origin
        self.elsewhere: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", self._request)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", lambda r: r.status >= 400 and self.errors.append(
            f"{r.status} {r.url}"))

    def _request(self, request: Request) -> None:
        if not request.url.startswith(self.origin + "/"):
            self.elsewhere.append(request.url)

    def close(self) -> None:
        self.page.close()
        assert self.elsewhere == [], "the page fetched from elsewhere"
        assert self.errors == [], "the browser logged errors"


@pytest.fixture
def visit(browser: Browser, dashboard: str) -> Iterator[Visit]:
    opened = Visit(browser, dashboard)
    yield opened
    opened.close()


def open_therapy_from_the_list(visit: Visit, coi: str) -> Page:
    page = visit.page
    page.goto(visit.origin + "/")
    page.get_by_role("link", name="Therapies", exact=True).click()
    expect(page.get_by_role("heading", name="Therapies", exact=True)).to_be_visible()
    page.get_by_role("link", name=coi, exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Therapy {coi}")
    return page


def link_card(page: Page, title: str):  # noqa: ANN201 - a Playwright locator
    return page.locator("li.link-card").filter(
        has=page.locator("span.link-title", has_text=title))


def step_row(page: Page, link: str, step: str):  # noqa: ANN201 - a Playwright locator
    """The row of ``step`` in the step-by-step table of ``link``."""
    return page.locator(f"#link-{link} tr").filter(
        has=page.locator("td.step", has_text=re.compile(f"^{re.escape(step)}$")))


def test_a_therapy_shows_its_chain_of_identity_and_the_fault_caught(
        scenario: WebScenario, visit: Visit) -> None:
    a = scenario.a
    page = open_therapy_from_the_list(visit, a.coi)

    titles = page.locator("li.link-card span.link-title").all_inner_texts()
    assert titles == CHAIN
    for title in ("Tumour sample", "Sequencing", "Vaccine design", "Batch", "Patient"):
        expect(link_card(page, title)).to_have_class("link-card state-holds")
    expect(link_card(page, "Doses")).to_have_class("link-card state-caught")
    expect(link_card(page, "Doses")).to_contain_text("1 refused, chain held")

    nurse, qp = a.actors["nurse"], a.actors["qp"]
    sample = step_row(page, "sample", "collected")
    expect(sample).to_contain_text(a.sample_id)
    expect(sample).to_contain_text(nurse.actor_id)
    expect(sample).to_contain_text(f"key {nurse.key_id}")
    expect(sample).to_contain_text("✓ verified")
    released = step_row(page, "batch", "released")
    expect(released).to_contain_text(qp.actor_id)
    expect(released).to_contain_text("responsible")
    given = step_row(page, "patient", "dose 1 given")
    expect(given).to_contain_text("after a matching identity check")
    expect(page.locator("#verification-summary")).to_contain_text(
        f"{len(a.log)} / {len(a.log)} events verified")

    fault = page.locator("#faults tr", has_text="DOSE_QUARANTINED").first
    expect(fault).to_be_visible()
    expect(fault).to_contain_text(f"dose {scenario.log.quarantined_dose}")
    expect(fault).to_contain_text("is quarantined after a temperature excursion")
    expect(page.locator("#link-dose .refusal-inline")).to_contain_text("DOSE_QUARANTINED")

    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=OUTPUT / "therapy-page.png", full_page=True)
    page.screenshot(path=OUTPUT / "therapy-page-top.png")
    assert (OUTPUT / "therapy-page.png").stat().st_size > 50_000


def test_a_batch_of_an_unapproved_design_shows_as_refused_on_its_link(
        scenario: WebScenario, visit: Visit) -> None:
    page = open_therapy_from_the_list(visit, scenario.d.coi)
    expect(link_card(page, "Vaccine design")).to_have_class("link-card state-holds")
    expect(link_card(page, "Batch")).to_have_class("link-card state-caught")
    expect(link_card(page, "Batch")).to_contain_text("1 refused")
    fault = page.locator("#faults tr", has_text="DESIGN_ALTERED_AFTER_APPROVAL").first
    expect(fault).to_contain_text("is not a design of therapy")
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=OUTPUT / "therapy-page-design-altered.png", full_page=True)


def test_a_forged_record_breaks_the_link_and_the_verification_tile(
        scenario: WebScenario, visit: Visit) -> None:
    page = open_therapy_from_the_list(visit, scenario.c.coi)
    expect(link_card(page, "Tumour sample")).to_have_class("link-card state-broken")
    expect(page.locator("#link-sample tr", has_text="stranger")).to_contain_text(
        "✗ unregistered key")
    expect(page.locator("#verification-summary")).to_have_class("tile alarm")


def test_the_charts_render_in_the_browser(visit: Visit) -> None:
    page = visit.page
    for url in ("/billing", "/turnaround", "/inventory"):
        page.goto(visit.origin + url)
        charts = page.locator("figure.chart img")
        assert charts.count() >= 1, url
        for i in range(charts.count()):
            chart = charts.nth(i)
            chart.scroll_into_view_if_needed()
            loaded = chart.evaluate("img => img.complete && img.naturalWidth > 0")
            assert loaded, f"chart {chart.get_attribute('src')} did not render"


def test_the_alerts_page_shows_each_alerts_age_beside_its_owner_and_resolution(
        scenario: WebScenario, browser: Browser, tmp_path: Path) -> None:
    con = connect(scenario.path, read_only=True)
    try:
        code, raised_at = con.execute("SELECT code, raised_at FROM alerts WHERE status = 'OPEN' "
                                      "ORDER BY raised_at DESC LIMIT 1").fetchone()
    finally:
        con.close()
    clock = SimulationClock(tmp_path)  # the deployment's clock: two days after the alert
    clock.set(int((raised_at + timedelta(days=2)).timestamp() * 1_000_000))
    with DashboardServer(scenario.path, clock=clock) as server:
        visit = Visit(browser, server.url)
        try:
            page = visit.page
            page.goto(server.url + "/")
            page.get_by_role("link", name="Alerts & refusals", exact=True).click()
            open_alerts = page.locator("#open")
            headers = open_alerts.locator("thead th").all_inner_texts()
            assert headers[-3:] == ["age", "owner", "resolution"], headers
            row = open_alerts.locator("tr", has_text=code).first
            expect(row.locator("td.age")).to_have_text("2 days")
            expect(row.locator("td.owner")).to_have_text("nobody yet")
            expect(page.locator("p.clock")).to_contain_text("simulation clock")
        finally:
            visit.close()


@pytest.mark.kafka
def test_after_a_run_through_kafka_the_dashboard_shows_what_the_worker_decided(
        kafka, settings, tmp_path: Path, browser: Browser) -> None:  # noqa: ANN001
    sandbox = Sandbox.create(settings, kafka.bootstrap_servers, tmp_path)
    try:
        builder = Hub()
        gatekeeper = sandbox.install_identities(builder.registrar.issuer.signer,
                                                valid_from_us=T0_US - 365 * DAY_US)
        scripted = scripted_log(builder, gatekeeper)
        worker = sandbox.start_worker()
        sandbox.send(scripted.registrations)
        registered = len(scripted.registrations)
        assert sandbox.wait_answered(registered, 120, worker) == registered, \
            sandbox.worker_log()
        sandbox.send(scripted.ingress)
        answered = registered + len(scripted.ingress)
        assert sandbox.wait_answered(answered, 180, worker) == answered, sandbox.worker_log()
        deadline = time.monotonic() + 30  # the two alerts follow the refusal and the timer
        while sandbox.count("alerts") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        snapshot = tmp_path / "snapshot.duckdb"
        rebuild(sandbox.settings, snapshot)
    finally:
        sandbox.stop_all()

    a = scripted.therapies["A"]
    with DashboardServer(snapshot) as server:
        visit = Visit(browser, server.url)
        try:
            page = open_therapy_from_the_list(visit, a.coi)
            assert page.locator("li.link-card span.link-title").all_inner_texts() == CHAIN
            expect(link_card(page, "Doses")).to_have_class("link-card state-caught")
            expect(step_row(page, "patient", "dose 2 given")).to_contain_text("✓ verified")
            expect(page.locator("#faults tr", has_text="DOSE_QUARANTINED").first).to_contain_text(
                "is quarantined after a temperature excursion")
            expect(page.locator("#verification-summary")).to_contain_text(
                f"{len(a.log)} / {len(a.log)} events verified")
            OUTPUT.mkdir(exist_ok=True)
            page.screenshot(path=OUTPUT / "therapy-page-after-kafka-run.png", full_page=True)
        finally:
            visit.close()
