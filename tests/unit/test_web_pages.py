"""The dashboard's pages, over HTTP from a real uvicorn server on loopback.

Given the web scenario projected into a DuckDB file (see ``test_web_scenario``), when a
person reads the dashboard, then each page shows what the projection views hold (the
expected values are read from the file or the scenario, never typed in), the therapy
page shows the chain of identity with who signed each step and the verification state,
the caught faults are shown where they happened, no page shows a patient pseudonym,
values from the log are escaped, and the file is never written.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from pcvhub.clock import SimulationClock
from pcvhub.projections.digest import digest_file
from pcvhub.projections.projection import Projection
from pcvhub.projections.store import connect
from pcvhub.trust.registry import KeyRegistry
from pcvhub.web import DashboardServer
from pcvhub.web.app import age, duration, money, when

from .test_web_scenario import (
    LATE_REASON,
    MARKUP_SAMPLE,
    WebScenario,
    parse,
    web_scenario,
)

PAGES = ("/", "/therapies", "/inventory", "/billing", "/alerts", "/turnaround")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> WebScenario:
    return web_scenario(tmp_path_factory.mktemp("web") / "hub.duckdb")


@pytest.fixture(scope="module")
def web(scenario: WebScenario) -> Iterator[httpx.Client]:
    with DashboardServer(scenario.path) as server, httpx.Client(base_url=server.url,
                                                                timeout=30) as client:
        yield client


def rows(path: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    con = connect(path, read_only=True)
    try:
        cursor = con.execute(sql, list(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def page(web: httpx.Client, url: str) -> Any:
    response = web.get(url)
    assert response.status_code == 200, (url, response.text[:500])
    assert response.headers["content-type"].startswith("text/html")
    return parse(response.text)


# -- therapies -------------------------------------------------------------------------------

def test_the_therapy_list_shows_each_therapy_with_its_stage_and_next_step(
        scenario: WebScenario, web: httpx.Client) -> None:
    listed = {r[0]: r for r in page(web, "/therapies").by_id("therapy-list").rows()}
    expected = rows(scenario.path, "SELECT * FROM case_status")
    assert set(listed) == {t["coi"] for t in expected}
    for therapy in expected:
        row = listed[therapy["coi"]]
        assert row[1:4] == [therapy["site_id"], therapy["stage"].replace("_", " ").lower(),
                            therapy["next_step"]]
        assert row[-3] == str(therapy["rejections"])


def test_the_therapy_list_filters_by_site_and_stage(scenario: WebScenario,
                                                    web: httpx.Client) -> None:
    at_osaka = page(web, "/therapies?site=OSAKA02").by_id("therapy-list").rows()
    assert [r[0] for r in at_osaka] == [scenario.log.coi_b]
    approved = page(web, "/therapies?stage=APPROVED").by_id("therapy-list").rows()
    assert [r[0] for r in approved] == [scenario.d.coi]
    nothing = page(web, "/therapies?site=OSAKA02&stage=APPROVED")
    assert "No therapy matches these filters" in nothing.text


def chain(web: httpx.Client, coi: str) -> dict[str, tuple[str, list[list[str]]]]:
    """link key -> (state shown on the strip, rows of its step-by-step table)."""
    therapy = page(web, f"/therapies/{coi}")
    strip = {card.find_all("span", "link-title")[0].text: card
             for card in therapy.find_all("li", "link-card")}
    assert list(strip) == ["Tumour sample", "Sequencing", "Vaccine design", "Batch", "Doses",
                           "Patient"]
    found = {}
    for key, card in zip(("sample", "sequencing", "design", "batch", "dose", "patient"),
                         strip.values(), strict=True):
        state = card.attrs["class"].split("state-")[1]
        found[key] = (state, therapy.by_id(f"link-{key}").rows())
    return found


def test_the_chain_of_identity_names_each_item_and_who_signed_it(
        scenario: WebScenario, web: httpx.Client) -> None:
    a = scenario.a
    links = chain(web, a.coi)

    def signer(name: str) -> tuple[str, str]:
        party = a.actors[name]
        return party.actor_id, party.key_id

    def signed(link: str, step: str) -> list[tuple[str, str, str]]:
        """(signer cell, meaning, verification) of each row of ``step`` in ``link``."""
        return [(r[3], r[4], r[6]) for r in links[link][1] if r[0] == step]

    sample = signed("sample", "collected")
    assert len(sample) == 1 and all(part in sample[0][0] for part in signer("nurse"))
    assert a.sample_id in links["sample"][1][0][1]
    sequenced = next(r for r in links["sequencing"][1] if r[0] == "sequenced")
    assert a.sequencing_hash[:12] in sequenced[1]
    approvals = signed("design", "approved")
    assert [any(signer(who)[0] in cell for cell, _, _ in approvals)
            for who in ("approver1", "approver2")] == [True, True]
    assert {meaning for _, meaning, _ in approvals} == {"approved"}
    released = signed("batch", "released")
    assert signer("qp")[0] in released[0][0] and released[0][1] == "responsible"
    given = [r for r in links["patient"][1] if r[0].startswith("dose ")]
    assert [r[1].split()[0] for r in given] == [a.dose(1), a.dose(2)]
    checks = [r for r in links["patient"][1] if r[0] == "identity checked"]
    assert checks and all("the patient checked is the patient enrolled" in r[2]
                          for r in checks)
    every_step = [r for _, steps in links.values() for r in steps]
    assert {r[6] for r in every_step} == {"✓ verified linked"}
    assert {links[k][0] for k in links} == {"holds", "caught"}


def test_the_verification_state_of_a_therapy_counts_its_verified_events(
        scenario: WebScenario, web: httpx.Client) -> None:
    for therapy in (scenario.a, scenario.c):
        trail = rows(scenario.path, "SELECT verification FROM audit(?) WHERE entry = 'EVENT'",
                     therapy.coi)
        verified = sum(r["verification"] == "VERIFIED" for r in trail)
        tile = page(web, f"/therapies/{therapy.coi}").by_id("verification-summary")
        assert f"{verified} / {len(trail)} events verified" in tile.text
        assert ("alarm" in tile.attrs["class"]) == (verified < len(trail))


def test_a_record_forged_onto_the_log_breaks_the_link_it_claims(
        scenario: WebScenario, web: httpx.Client) -> None:
    links = chain(web, scenario.c.coi)
    assert links["sample"][0] == "broken"
    forged = next(r for r in links["sample"][1] if "stranger" in r[3])
    # quarantined by the log reader: in no payload table, shown as what breaks the link
    assert forged[0] == "SampleReceived (quarantined)" and "unregistered key" in forged[6]
    assert [links[k][0] for k in ("sequencing", "design", "batch", "dose", "patient")] == [
        "pending"] * 5


def test_a_caught_fault_is_shown_on_the_link_it_aimed_at_with_its_reason(
        scenario: WebScenario, web: httpx.Client) -> None:
    refusal = rows(scenario.path, "SELECT * FROM rejections WHERE rejected_event_id = ?",
                   scenario.log.refused_dispense_id)[0]
    therapy = page(web, f"/therapies/{scenario.a.coi}")
    faults = therapy.by_id("faults").rows()
    shown = next(r for r in faults if r[0].startswith("Dose dispensed"))
    assert shown[2] == "R6 DOSE_QUARANTINED" and shown[3] == refusal["reason"]
    assert chain(web, scenario.a.coi)["dose"][0] == "caught"
    on_link = therapy.by_id("link-dose").find_all("p", "refusal-inline")
    assert len(on_link) == 1 and "DOSE_QUARANTINED" in on_link[0].text
    alert = next(r for r in faults if "DOSE_QUARANTINED" in r)
    assert alert[:2] == ["critical", "open"]
    quarantined = next(r for r in therapy.by_id("link-dose").rows()
                       if r[0] == "temperature excursion")
    assert scenario.log.quarantined_dose in quarantined[1]


def test_a_batch_of_an_unapproved_design_is_shown_refused_and_never_made(
        scenario: WebScenario, web: httpx.Client) -> None:
    links = chain(web, scenario.d.coi)
    assert links["design"][0] == "holds" and links["batch"] == ("caught", [])
    faults = page(web, f"/therapies/{scenario.d.coi}").by_id("faults").rows()
    refused = next(r for r in faults if r[0].startswith("Manufacturing started"))
    assert refused[2] == "R5 DESIGN_ALTERED_AFTER_APPROVAL"
    assert scenario.a.actors["manufacturer"].actor_id in refused[1]


def test_the_timeline_lists_every_entry_of_the_audit_trail_in_order(
        scenario: WebScenario, web: httpx.Client) -> None:
    trail = rows(scenario.path, "SELECT * FROM audit(?)", scenario.a.coi)
    shown = page(web, f"/therapies/{scenario.a.coi}").by_id("timeline").rows()
    assert len(shown) == len(trail)
    for row, entry in zip(shown, trail, strict=True):
        assert row[0] == (str(entry["chain_seq"]) if entry["entry"] == "EVENT" else "")
        assert (entry["actor"] or "unknown") in row[4]
        if entry["entry"] != "EVENT":
            assert entry["outcome"] in row[6]


def test_a_record_written_past_the_gatekeeper_is_shown_as_not_accepted_by_it(
        scenario: WebScenario, web: httpx.Client) -> None:
    """Signed by a registered key and linked, but put on the log with broker access: the
    timeline says it was not accepted by the gatekeeper, and the therapy is not verified."""
    trail = rows(scenario.path, "SELECT * FROM audit(?) WHERE event_id = ?", scenario.e.coi,
                 scenario.unsealed_id)
    assert [t["verification"] for t in trail] == ["UNSEALED"]
    therapy = page(web, f"/therapies/{scenario.e.coi}")
    [row] = [r for r in therapy.by_id("timeline").rows() if "UNSEALED" in r[6]]
    assert "not accepted by the gatekeeper" in row[6] and "accepted" != row[6].strip()
    assert "Consent withdrawn" in row[2] or "ConsentWithdrawn" in row[2]
    assert "alarm" in therapy.by_id("verification-summary").attrs["class"]


def test_a_late_entry_is_shown_as_late_with_its_reason(scenario: WebScenario,
                                                      web: httpx.Client) -> None:
    """Accepted, and the timeline says it was entered late, when, and the signed reason."""
    [entry] = rows(scenario.path, "SELECT * FROM audit(?) WHERE event_id = ?", scenario.e.coi,
                   scenario.late_id)
    assert (entry["outcome"], entry["verification"]) == ("ACCEPTED LATE ENTRY", "VERIFIED")
    assert LATE_REASON in entry["detail"] and "late entry signed at" in entry["detail"]
    therapy = page(web, f"/therapies/{scenario.e.coi}")
    # exactly one row of E's timeline is late: this one, with its reason
    [row] = [r for r in therapy.by_id("timeline").rows() if "LATE ENTRY" in r[6]]
    assert LATE_REASON in row[6]
    assert "Consent granted" in row[2] or "ConsentGranted" in row[2]


def test_a_therapy_with_only_refused_events_shows_its_refusals(
        scenario: WebScenario, web: httpx.Client) -> None:
    therapy = page(web, f"/therapies/{scenario.coi_f}")
    assert "No event of this therapy was accepted" in therapy.text
    faults = therapy.by_id("faults").rows()
    assert [(r[0].split()[:2], r[2]) for r in faults] == [
        (["Patient", "enrolled"], "R1 UNREGISTERED_KEY")]
    assert {state for state, _ in chain(web, scenario.coi_f).values()} == {"pending"}
    listed = {r[0] for r in page(web, "/therapies").by_id("therapy-list").rows()}
    assert scenario.coi_f not in listed  # not a therapy: nothing of it was accepted
    refusals = page(web, "/alerts").by_id("refusals")
    assert f"/therapies/{scenario.coi_f}" in [a.attrs.get("href") for a in refusals.find_all("a")]


def test_an_unknown_therapy_is_not_found_with_a_reason(web: httpx.Client) -> None:
    response = web.get("/therapies/PCV-NOWHERE-2026-000000000000X")
    assert response.status_code == 404
    assert "No event of therapy PCV-NOWHERE-2026-000000000000X is on the log" in response.text
    assert web.get("/").status_code == 200  # and the dashboard carries on


# -- the other pages -------------------------------------------------------------------------

def test_inventory_shows_doses_per_site_location_method_and_status(
        scenario: WebScenario, web: httpx.Client) -> None:
    inventory = page(web, "/inventory")
    shown = inventory.by_id("by-site").rows()
    expected = rows(scenario.path, "SELECT * FROM inventory_by_site "
                    "ORDER BY site_id NULLS LAST, location, placement_method, status")
    assert [(r[0], r[1], r[3], r[4]) for r in shown] == [
        (e["site_id"], e["location"], e["status"].lower(), str(e["doses"])) for e in expected]
    out_of_use = inventory.by_id("out-of-use").rows()
    assert [r[1] for r in out_of_use] == [scenario.log.quarantined_dose]


def test_billing_shows_receivables_by_age_and_every_claim(scenario: WebScenario,
                                                          web: httpx.Client) -> None:
    billing = page(web, "/billing")
    ageing = rows(scenario.path, "SELECT * FROM receivables_ageing")
    assert billing.by_id("ageing").rows() == [
        [r["payer_id"], r["ageing_bucket"], str(r["claims"]),
         money(r["outstanding_amount"], r["currency"])] for r in ageing]
    claims = {r[0]: r for r in billing.by_id("claims").rows()}
    for claim in rows(scenario.path, "SELECT * FROM billing_claims"):
        assert claims[claim["claim_id"]][5].startswith(claim["status"].lower())
        assert claims[claim["claim_id"]][9] == money(claim["outstanding_amount"],
                                                     claim["currency"])


def test_alerts_and_refusals_list_what_the_views_hold(scenario: WebScenario,
                                                      web: httpx.Client) -> None:
    alerts = page(web, "/alerts")
    open_codes = sorted(r[3] for r in alerts.by_id("open").rows())
    assert open_codes == sorted(r["code"] for r in rows(
        scenario.path, "SELECT code FROM alerts WHERE status = 'OPEN'"))
    refused = sorted(r[3] for r in alerts.by_id("refusals").rows())
    assert refused == sorted(f"{r['rule']} {r['reason_code']}" for r in rows(
        scenario.path, "SELECT rule, reason_code FROM rejections"))


def test_each_alert_shows_its_age_on_the_deployments_clock(scenario: WebScenario,
                                                          tmp_path: Path) -> None:
    alerts = rows(scenario.path, "SELECT code, raised_at FROM alerts WHERE status <> 'RESOLVED'")
    assert alerts, "the scenario raises alerts"
    newest = max(a["raised_at"] for a in alerts)
    clock = SimulationClock(tmp_path)
    with DashboardServer(scenario.path, clock=clock) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        unset = page(client, "/alerts")
        assert {r[7] for r in unset.by_id("open").rows()} == {"—"}  # no time on it yet
        assert "no time yet on the deployment's simulation clock" in unset.text
        for later in (timedelta(days=3, hours=6), timedelta(days=4, hours=6)):
            now = newest + later
            clock.set(int(now.timestamp() * 1_000_000))
            shown = page(client, "/alerts")
            ages = {(r[3], r[6]): r[7] for r in shown.by_id("open").rows()}
            assert ages == {(a["code"], when(a["raised_at"])): age(a["raised_at"], now)
                            for a in alerts}
            assert ages[next((a["code"], when(a["raised_at"])) for a in alerts
                             if a["raised_at"] == newest)] == f"{later / timedelta(days=1)} days"
            assert f"{when(now)} UTC on the deployment's simulation clock" in shown.text


def test_the_overview_counts_match_the_views(scenario: WebScenario, web: httpx.Client) -> None:
    tiles = [t.text for t in page(web, "/").find_all("a", "tile")]
    therapies = rows(scenario.path, "SELECT count(*) AS n FROM case_status")[0]["n"]
    refusals = rows(scenario.path, "SELECT count(*) AS n FROM rejections")[0]["n"]
    median = rows(scenario.path, "SELECT median(vein_to_vein_days) AS d FROM turnaround")[0]
    assert f"{therapies} therapies" in tiles
    assert f"{refusals} events refused by the gatekeeper" in tiles
    assert any(t.startswith(duration(median["d"])) for t in tiles)


def test_turnaround_shows_each_sites_median_per_step(scenario: WebScenario,
                                                     web: httpx.Client) -> None:
    shown = page(web, "/turnaround").by_id("by-site").rows()
    expected = rows(scenario.path, "SELECT * FROM turnaround_by_site")
    assert len(shown) == len(expected)
    assert sorted((r[0], r[3]) for r in shown) == sorted(
        (e["site_id"], duration(e["median_days"])) for e in expected)


# -- charts ------------------------------------------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"


def chart(web: httpx.Client, url: str) -> tuple[ET.Element, str]:
    response = web.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert "script-src" not in response.headers["content-security-policy"]
    return ET.fromstring(response.text), response.text


def texts(svg: ET.Element) -> list[str]:
    return [t.text.strip() for t in svg.iter(f"{SVG}text") if t.text and t.text.strip()]


def test_charts_are_drawn_from_the_views_and_load_nothing_from_elsewhere(
        scenario: WebScenario, web: httpx.Client) -> None:
    ageing = rows(scenario.path, "SELECT * FROM receivables_ageing")
    svg, raw = chart(web, f"/charts/receivables-ageing.svg?currency={ageing[0]['currency']}")
    labels = texts(svg)
    assert {r["payer_id"] for r in ageing} <= set(labels)
    assert {"0-30", "31-60", "61-90", "90+"} <= set(labels)
    first_doses = rows(scenario.path, "SELECT count(vein_to_vein_days) AS n FROM turnaround")
    svg, _ = chart(web, "/charts/vein-to-vein.svg")
    assert f"Vein-to-vein time ({first_doses[0]['n']} therapies with a first dose)" in texts(svg)
    svg, _ = chart(web, "/charts/doses-by-site.svg")
    statuses = {r["status"] for r in rows(scenario.path, "SELECT status FROM inventory")}
    assert statuses <= set(texts(svg))
    chart(web, "/charts/stage-durations.svg")
    for url in ("/charts/vein-to-vein.svg", "/charts/stage-durations.svg",
                "/charts/doses-by-site.svg"):
        svg, raw = chart(web, url)
        assert not [e for e in svg.iter() if e.tag.endswith("script")], url
        assert not [(e.tag, v) for e in svg.iter() for v in e.attrib.values() if "//" in v], url
        assert "@import" not in raw and "url(http" not in raw, url
    assert web.get("/charts/nothing.svg").status_code == 404


# -- what no page may do -------------------------------------------------------------------------

def every_page(scenario: WebScenario, web: httpx.Client) -> Iterator[tuple[str, str]]:
    therapies = [r["coi"] for r in rows(scenario.path, "SELECT coi FROM case_status")]
    currencies = [r["currency"] for r in rows(
        scenario.path, "SELECT DISTINCT currency FROM receivables_ageing")]
    urls = [*PAGES, *(f"/therapies/{c}" for c in [*therapies, scenario.coi_f]),
            "/charts/vein-to-vein.svg",
            "/charts/stage-durations.svg", "/charts/doses-by-site.svg", "/health",
            *(f"/charts/receivables-ageing.svg?currency={c}" for c in currencies)]
    for url in urls:
        response = web.get(url)
        assert response.status_code == 200, url
        yield url, response.text


def test_no_page_shows_a_patient_pseudonym(scenario: WebScenario, web: httpx.Client) -> None:
    assert len(scenario.patient_hashes) == 6
    for url, body in every_page(scenario, web):
        for patient_hash in scenario.patient_hashes:
            assert patient_hash not in body, url


def test_values_from_the_log_are_escaped(scenario: WebScenario, web: httpx.Client) -> None:
    body = web.get(f"/therapies/{scenario.e.coi}").text
    assert MARKUP_SAMPLE not in body
    assert "&lt;script&gt;alert(&#34;sample&#34;)&lt;/script&gt;" in body
    shown = page(web, f"/therapies/{scenario.e.coi}").by_id("link-sample").rows()
    assert shown[0][1].startswith(MARKUP_SAMPLE)  # the text a person reads is the sample id
    assert web.get(f"/therapies/{scenario.e.coi}").headers[
        "content-security-policy"].startswith("default-src 'none'")


def test_the_dashboard_is_read_only(scenario: WebScenario, web: httpx.Client) -> None:
    before = digest_file(scenario.path).sha256
    for url, _ in every_page(scenario, web):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            refused = web.request(method, url.split("?")[0])
            assert refused.status_code == 405, (method, url)
            assert refused.json() == {"detail": "the dashboard is read-only: GET only"}
    assert digest_file(scenario.path).sha256 == before


# -- the file it reads ----------------------------------------------------------------------------

def test_the_file_is_held_only_during_a_request(scenario: WebScenario,
                                                web: httpx.Client) -> None:
    """A runner (another process) can take the file between two requests; meanwhile the
    dashboard says why it cannot read it, and reads again once the runner lets go."""
    assert web.get("/").status_code == 200
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
         "print('holding', flush=True); sys.stdin.read()", str(scenario.path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        busy = web.get("/therapies")
        assert busy.status_code == 503
        message = parse(busy.text).find_all("p", "error-message")[0].text
        assert str(scenario.path) in message and "open in another process" in message
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
    assert web.get("/therapies").status_code == 200


def test_a_file_replaced_by_rename_is_read_at_the_next_request(tmp_path: Path) -> None:
    """Published copies are replaced by rename; the next page reads the new one. A whole
    copy of a projection file (``COPY FROM DATABASE``) serves as well as the file."""
    first = web_scenario(tmp_path / "first.duckdb")
    second = web_scenario(tmp_path / "second.duckdb")
    served = tmp_path / "served.duckdb"
    con = duckdb.connect()
    con.execute(f"ATTACH '{first.path}' AS source (READ_ONLY)")
    con.execute(f"ATTACH '{served}' AS whole_copy")
    con.execute("COPY FROM DATABASE source TO whole_copy")
    con.close()
    with DashboardServer(served) as server, httpx.Client(base_url=server.url) as client:
        listed = {r[0] for r in parse(client.get("/therapies").text).by_id(
            "therapy-list").rows()}
        assert first.a.coi in listed and second.a.coi not in listed
        second.path.replace(served)
        listed = {r[0] for r in parse(client.get("/therapies").text).by_id(
            "therapy-list").rows()}
        assert second.a.coi in listed and first.a.coi not in listed


def test_a_file_with_nothing_projected_yet_shows_empty_pages(tmp_path: Path) -> None:
    """What the demo shows before its first event: every page, saying there is nothing."""
    path = tmp_path / "fresh.duckdb"
    Projection(path, "test", KeyRegistry(), False, registry_partition=0).close()
    with DashboardServer(path) as server, httpx.Client(base_url=server.url) as client:
        for url in PAGES:
            response = client.get(url)
            assert response.status_code == 200, url
            assert parse(response.text).find_all("p", "empty"), url
        for name in ("vein-to-vein", "stage-durations", "doses-by-site"):
            svg = ET.fromstring(client.get(f"/charts/{name}.svg").text)
            assert "nothing yet" in texts(svg), name
