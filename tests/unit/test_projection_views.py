"""The projection views on the scripted scenario (see ``test_projection_scenario``).

Given the records a gatekeeper writes for three therapies and their faults, when they
are projected (in batches, as the runner does), then each view answers what its users
ask; where the gatekeeper's own fold of a therapy (``CaseState``) knows the answer, the
view must agree with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pcvhub.projections import views
from pcvhub.projections.store import connect
from pcvhub.schemas.policy import next_step
from pcvhub.schemas.stages import Stage
from pcvhub.streams.case import CaseState, DoseStatus
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.signing import EventSigner, HybridKeyPair

from .test_projection_audit import GATEKEEPER, canonical_records
from .test_projection_scenario import ScriptedLog, anchor_of, project, scripted_log
from .therapy_builder import T0_US, Hub, TherapyScenario

T0 = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=T0_US)
BEFORE_EXPIRY = T0 + timedelta(days=10)  # doses expire 90 days after release
LONG_AFTER = T0 + timedelta(days=200)


@pytest.fixture(scope="module")
def scripted() -> ScriptedLog:
    return scripted_log()


@pytest.fixture(scope="module")
def db(scripted: ScriptedLog,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    path = tmp_path_factory.mktemp("views") / "hub.duckdb"
    project(path, scripted.gatekeep(), scripted.anchor, batch=17)
    con = connect(path, read_only=True)
    yield con
    con.close()


def rows(con: duckdb.DuckDBPyConnection, sql: str, *params: object) -> list[dict]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# -- audit ------------------------------------------------------------------------------------

def test_the_audit_lists_every_accepted_event_of_a_therapy_in_chain_order(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    a = scripted.therapies["A"]
    trail = rows(db, "SELECT * FROM audit(?)", a.coi)
    events = [r for r in trail if r["entry"] == "EVENT"]
    assert [r["event_id"] for r in events] == [e.event_id for e in a.log]
    assert [r["chain_seq"] for r in events] == list(range(1, len(a.log) + 1))
    assert [r["chain_link"] for r in events] == ["GENESIS"] + ["LINKED"] * (len(a.log) - 1)
    assert {r["verification"] for r in events} == {"VERIFIED"}
    signers = [*a.actors.values(), a.patient]
    for row, event in zip(events, a.log, strict=True):  # who signed it: actor, role, site, key
        party = next(p for p in signers if p.actor_id == event.producer)
        assert (row["actor"], row["key_id"], row["actor_site"]) == (
            party.actor_id, party.key_id, party.site)
        assert set(row["actor_roles"]) == set(party.roles)
    # the patient's own consents read as such: the patient's card, an approval
    consents = [r for r in events if r["event_type"] == "ConsentGranted"]
    assert consents and {(tuple(r["actor_roles"]), r["meaning"]) for r in consents} == {
        (("PATIENT",), "APPROVED")}


def test_the_audit_places_refusals_and_alerts_after_the_event_before_them(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    a = scripted.therapies["A"]
    trail = rows(db, "SELECT * FROM audit(?)", a.coi)
    refused = next(r for r in trail if r["event_id"] == scripted.refused_dispense_id)
    assert refused["entry"] == "REJECTION"
    assert refused["outcome"] == "REJECTED R6 DOSE_QUARANTINED"
    assert refused["actor"] == a.id_of("pharmacist")
    assert refused["recorded_by"] == scripted.gatekeeper.producer
    assert refused["verification"] == "VERIFIED"  # the gatekeeper's signed refusal
    excursion = next(r for r in trail if r["event_type"] == "TemperatureExcursion")
    assert refused["timeline_seq"] == excursion["chain_seq"]
    position = trail.index(refused)
    alert = trail[position + 1]
    assert (alert["entry"], alert["outcome"]) == ("ALERT", "ALERT CRITICAL DOSE_QUARANTINED")
    assert alert["actor_roles"] == ["GATEKEEPER"]
    duplicate = next(r for r in trail if r["event_id"] == scripted.duplicate_id
                     and r["entry"] == "REJECTION")
    original = next(r for r in trail if r["event_id"] == scripted.duplicate_id
                    and r["entry"] == "EVENT")
    assert duplicate["timeline_seq"] == original["chain_seq"]
    stranger = next(r for r in trail if r["event_id"] == scripted.stranger_id)
    assert (stranger["actor"], stranger["actor_roles"]) == ("stranger", None)
    assert stranger["outcome"] == "REJECTED R1 UNREGISTERED_KEY"
    unreadable = [r for r in trail if r["outcome"] == "REJECTED R0 MALFORMED"]
    assert len(unreadable) == 1 and "envelope" in unreadable[0]["detail"]


def test_the_audit_view_and_the_audit_macro_agree(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    for therapy in scripted.therapies.values():
        from_view = db.execute(f"SELECT * FROM audit_trail WHERE coi = ? {views.AUDIT_ORDER}",
                               [therapy.coi]).fetchall()
        assert from_view == db.execute("SELECT * FROM audit(?)", [therapy.coi]).fetchall()
        assert from_view


def test_rejections_lists_each_refusal_with_its_rule_and_reason(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    found = {r["rejected_event_id"] or "unreadable": r
             for r in rows(db, "SELECT * FROM rejections")}
    assert {k: r["reason_code"] for k, r in found.items()} == {
        scripted.refused_dispense_id: "DOSE_QUARANTINED",
        scripted.duplicate_id: "DUPLICATE_EVENT",
        scripted.stranger_id: "UNREGISTERED_KEY", "unreadable": "MALFORMED"}
    assert found["unreadable"]["decode_error"] is not None
    assert found[scripted.stranger_id]["claimed_signer"] == "stranger"


# -- case status ------------------------------------------------------------------------------

def last_stage_change(therapy: TherapyScenario) -> int:
    """When the gatekeeper's own fold last changed the therapy's stage (event time)."""
    case, changed = CaseState.new(therapy.coi), 0
    for event in therapy.log:
        before = case.stage
        case.apply(event, chain_digest(event.envelope))
        if case.stage is not before:
            changed = event.occurred_at_us
    return changed


def test_case_status_agrees_with_the_gatekeepers_fold_of_each_therapy(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    status = {r["coi"]: r for r in rows(db, "SELECT * FROM case_status_as_of(?)",
                                        BEFORE_EXPIRY)}
    assert set(status) == {t.coi for t in scripted.therapies.values()}
    for therapy in scripted.therapies.values():
        row = status[therapy.coi]
        assert row["stage"] == therapy.case.stage.value
        assert row["stage_since"] == _at(last_stage_change(therapy))
        assert row["events"] == len(therapy.log)
        assert row["doses_usable"] == therapy.case.doses_remaining()
        assert row["site_id"] == therapy.case.site


def test_case_status_names_the_next_step_and_counts_open_alerts(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    status = {r["coi"]: r for r in rows(db, "SELECT * FROM case_status_as_of(?)",
                                        BEFORE_EXPIRY)}
    a, c = status[scripted.coi_a], status[scripted.coi_c]
    assert c["stage"] == Stage.COLLECTED
    assert c["next_step"] == next_step(Stage.COLLECTED)
    # A: the quarantine alert stays open; the overdue administration was given later
    assert (a["open_alerts"], a["critical_open_alerts"]) == (1, 1)
    assert (a["doses_administered"], a["doses_quarantined"], a["doses_usable"]) == (2, 1, 0)
    assert a["next_step"] == views.NO_DOSE_LEFT
    assert a["rejections"] == 4


def test_an_overdue_administration_alert_is_resolved_by_that_administration(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    alerts = {r["code"]: r for r in rows(db, "SELECT * FROM alerts WHERE coi = ?",
                                         scripted.coi_a)}
    overdue = alerts["ADMINISTRATION_OVERDUE"]
    assert overdue["status"] == "RESOLVED"
    given = db.execute("SELECT event_id FROM log.dose_administered WHERE coi = ? AND "
                       "administration_id = 'ADM-2'", [scripted.coi_a]).fetchone()[0]
    assert overdue["resolved_by_event_id"] == given
    assert alerts["DOSE_QUARANTINED"]["status"] == "OPEN"
    assert alerts["DOSE_QUARANTINED"]["severity"] == "CRITICAL"


# -- inventory ----------------------------------------------------------------------------------

STATUS_OF = {DoseStatus.PLACED: "AVAILABLE", DoseStatus.AVAILABLE: "RELEASED"}


def test_inventory_shows_each_dose_where_the_gatekeeper_holds_it(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    found = {(r["coi"], r["dose_id"]): r for r in rows(db, "SELECT * FROM inventory_as_of(?)",
                                                       BEFORE_EXPIRY)}
    expected = {(t.coi, dose_id): STATUS_OF.get(dose.status, dose.status.value)
                for t in scripted.therapies.values() for dose_id, dose in t.case.doses.items()}
    assert {k: r["status"] for k, r in found.items()} == expected
    quarantined = found[(scripted.coi_a, scripted.quarantined_dose)]
    assert quarantined["status"] == "QUARANTINED"
    assert (quarantined["site_id"], quarantined["placement_method"]) == (
        "KYOTO01", "CONSIGNMENT")
    assert quarantined["location"] == "pharmacy freezer 2, shelf 3"
    assert found[(scripted.coi_b, "DOSE-1")]["site_id"] == "OSAKA02"
    a = scripted.therapies["A"]
    expiry = a.case.doses[scripted.quarantined_dose].expiry_us
    assert quarantined["expiry"] == T0 + timedelta(microseconds=expiry - T0_US)


def test_inventory_mid_therapy_shows_reserved_available_and_past_expiry(
        scripted: ScriptedLog, tmp_path: Path) -> None:
    records = scripted.gatekeep()
    reserved = next(i for i, r in enumerate(records) if r.topic == "events" and
                    r.key == scripted.coi_a.encode() and b"DoseReserved" in r.value)
    project(tmp_path / "mid.duckdb", records[:reserved + 1], scripted.anchor)
    con = connect(tmp_path / "mid.duckdb", read_only=True)
    try:
        now = {r["dose_id"]: r for r in rows(con, "SELECT * FROM inventory_as_of(?) "
                                             "WHERE coi = ?", BEFORE_EXPIRY, scripted.coi_a)}
        later = {r["dose_id"]: r for r in rows(con, "SELECT * FROM inventory_as_of(?) "
                                               "WHERE coi = ?", LONG_AFTER, scripted.coi_a)}
        by_site = rows(con, "SELECT * FROM inventory_by_site")
    finally:
        con.close()
    assert {d: r["status"] for d, r in now.items()} == {
        "DOSE-1": "RESERVED", "DOSE-2": "AVAILABLE", "DOSE-3": "AVAILABLE"}
    assert now["DOSE-1"]["reserved_for"] == "ADM-1"
    assert {d: (r["status"], r["recorded_status"]) for d, r in later.items()} == {
        "DOSE-1": ("EXPIRED", "RESERVED"), "DOSE-2": ("EXPIRED", "AVAILABLE"),
        "DOSE-3": ("EXPIRED", "AVAILABLE")}
    assert sum(r["doses"] for r in by_site if r["site_id"] == "KYOTO01") == 3


def test_inventory_lots_count_doses_per_status(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    lot = rows(db, "SELECT * FROM inventory_lots WHERE coi = ?", scripted.coi_a)[0]
    assert (lot["disposition"], lot["doses"], lot["administered"], lot["quarantined"]) == (
        "RELEASED", 3, 2, 1)


# -- billing ------------------------------------------------------------------------------------

def test_billing_shows_a_paid_claim_a_denied_claim_and_an_outstanding_one(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    as_of = T0 + timedelta(days=45)
    claims = {r["claim_id"]: r
              for r in rows(db, "SELECT * FROM billing_claims_as_of(?)", as_of)}
    assert set(claims) == {"CLM-1", "CLM-2", "KENPO-CLM-1"}
    paid, denied, open_ = claims["CLM-1"], claims["CLM-2"], claims["KENPO-CLM-1"]
    assert (paid["status"], paid["paid_amount"], paid["outstanding_amount"]) == (
        "PAID", Decimal("1250000.00"), 0)
    assert (denied["status"], denied["denial_reason_code"], denied["outstanding_amount"]) == (
        "DENIED", "CO-50", 0)
    assert denied["ageing_bucket"] is None and denied["dose_number"] == 2
    assert (open_["status"], open_["payer_id"], open_["outstanding_amount"]) == (
        "APPROVED", "KENPO", Decimal("900000.00"))
    assert open_["ageing_bucket"] == "31-60"
    # each claim names the administration it bills
    a = scripted.therapies["A"]
    given = {e.event_id for e in a.log if e.event_type == "DoseAdministered"}
    assert {paid["administration_event_id"], denied["administration_event_id"]} == given


@pytest.mark.parametrize(("days", "bucket"), [(10, "0-30"), (45, "31-60"), (75, "61-90"),
                                              (91, "90+")])
def test_receivables_age_into_buckets(db: duckdb.DuckDBPyConnection, days: int,
                                      bucket: str) -> None:
    ageing = rows(db, "SELECT * FROM receivables_ageing_as_of(?)", T0 + timedelta(days=days))
    assert ageing == [{"payer_id": "KENPO", "currency": "JPY", "ageing_bucket": bucket,
                       "claims": 1, "outstanding_amount": Decimal("900000.00")}]


def test_a_payer_sees_only_its_own_claims(db: duckdb.DuckDBPyConnection) -> None:
    assert {r["claim_id"] for r in rows(db, "SELECT * FROM payer_claims('NHI')")} == {
        "CLM-1", "CLM-2"}
    assert {r["claim_id"] for r in rows(db, "SELECT * FROM payer_claims('KENPO')")} == {
        "KENPO-CLM-1"}
    assert rows(db, "SELECT * FROM payer_claims('NOBODY')") == []


def test_outcome_milestones_list_the_agreements_reached(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    milestones = rows(db, "SELECT * FROM outcome_milestones")
    assert len(milestones) == 1
    assert (milestones[0]["coi"], milestones[0]["payer_id"], milestones[0]["evidence_events"]) \
        == (scripted.coi_a, "NHI", 2)


# -- QC and turnaround ----------------------------------------------------------------------------

def test_qc_results_per_batch_and_test_keep_the_retest_history(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    results = {r["test"]: r for r in rows(db, "SELECT * FROM qc_results WHERE coi = ?",
                                          scripted.coi_a)}
    assert set(results) == {"sterility", "endotoxin", "identity", "mRNA integrity"}
    endotoxin = results["endotoxin"]  # passed, then failed, then retested under investigation
    assert (endotoxin["attempts"], endotoxin["history"], endotoxin["result"]) == (
        3, ["PASS", "FAIL", "PASS"], "PASS")
    assert endotoxin["investigations"] == ["OOS-2026-007"]
    assert results["sterility"]["investigations"] == []
    assert (endotoxin["value"], endotoxin["unit"]) == ("2.1", "EU/mL")
    assert endotoxin["batch_disposition"] == "RELEASED"


def _at(us: int) -> datetime:
    return T0 + timedelta(microseconds=us - T0_US)


def test_turnaround_measures_each_stage_and_vein_to_vein(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    for therapy in (scripted.therapies["A"], scripted.therapies["B"]):
        entered = therapy.case.stage_entered_us  # the gatekeeper's first entry per stage
        row = rows(db, "SELECT * FROM turnaround WHERE coi = ?", therapy.coi)[0]
        assert row["collected_at"] == _at(entered[Stage.COLLECTED])
        assert row["first_dose_at"] == _at(entered[Stage.ADMINISTERED])
        expected = (entered[Stage.ADMINISTERED] - entered[Stage.COLLECTED]) / 86_400e6
        assert row["vein_to_vein_days"] == pytest.approx(expected)
        stages = rows(db, "SELECT * FROM turnaround_stages WHERE coi = ? "
                      "AND stage = 'APPROVED'", therapy.coi)[0]
        assert stages["next_stage"] == "MANUFACTURING"
        assert stages["days"] == pytest.approx(
            (entered[Stage.MANUFACTURING] - entered[Stage.APPROVED]) / 86_400e6)


def test_turnaround_by_site_gives_medians_per_site(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    by_site = {(r["site_id"], r["measure"]): r
               for r in rows(db, "SELECT * FROM turnaround_by_site")}
    kyoto = by_site[("KYOTO01", "enrolment_to_collection_days")]
    assert kyoto["therapies"] == 2  # A and C were both collected; only A got a dose
    values = [r["enrolment_to_collection_days"] for r in rows(
        db, "SELECT * FROM turnaround WHERE site_id = 'KYOTO01'")]
    assert kyoto["median_days"] == pytest.approx(sum(values) / 2)
    assert by_site[("KYOTO01", "vein_to_vein_days")]["therapies"] == 1
    assert by_site[("OSAKA02", "vein_to_vein_days")]["therapies"] == 1


def test_outcomes_list_each_assessment(scripted: ScriptedLog,
                                       db: duckdb.DuckDBPyConnection) -> None:
    outcomes = rows(db, "SELECT * FROM outcomes WHERE coi = ? ORDER BY assessed_at",
                    scripted.coi_a)
    assert [o["time_point"] for o in outcomes] == ["week-6", "week-12"]


# -- documentation --------------------------------------------------------------------------------

def test_every_view_and_column_is_documented_in_the_file(
        db: duckdb.DuckDBPyConnection) -> None:
    documented = dict(db.execute("SELECT view_name, comment FROM duckdb_views() "
                                 "WHERE NOT internal").fetchall())
    assert set(documented) == {v.name for v in views.VIEWS}
    assert all(documented.values())
    undocumented = db.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'main' "
        "AND NOT internal AND (comment IS NULL OR comment = '')").fetchall()
    assert undocumented == []
    tables = db.execute("SELECT table_name FROM duckdb_columns() WHERE schema_name = 'log' "
                        "AND (comment IS NULL OR comment = '')").fetchall()
    assert tables == []


def test_a_view_whose_columns_differ_from_its_documentation_is_refused() -> None:
    memory = duckdb.connect()
    wrong = views.View("wrong", "a view", "SELECT 1 AS a, 2 AS b", {"a": "documented"})
    with pytest.raises(views.ViewDocumentationError, match="wrong"):
        views.install(memory, [wrong])
    memory.close()


# -- consents ---------------------------------------------------------------------------------

def test_the_consents_view_shows_whose_signature_each_grant_carries(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    a = scripted.therapies["A"]
    grants = rows(db, "SELECT * FROM consents WHERE coi = ? ORDER BY granted_at", a.coi)
    assert [g["scope"] for g in grants] == ["TREATMENT", "GENOME_STORAGE", "PAYER_SHARING",
                                            "RESEARCH"]
    assert {(g["signed_by"], g["signer"]) for g in grants} == {
        ("PATIENT", a.card.patient_actor_id)}
    assert all(g["withdrawn_at"] is None for g in grants)


def test_the_consents_view_marks_witnessed_and_hospital_recorded_grants(
        tmp_path: Path) -> None:
    hub = Hub()
    hub.register_gatekeeper(GATEKEEPER)  # its seal is on every record it wrote
    therapy = TherapyScenario(hub)
    therapy.run_until("issue_card")
    therapy.accept(therapy.consent("TREATMENT", by="physician"))  # the EMR's paper form
    therapy.accept(therapy.witnessed_consent("RESEARCH", why="LEGAL_REPRESENTATIVE"))
    therapy.accept(therapy.consent("GENOME_STORAGE"))
    withdrawal = therapy.accept(therapy.withdraw("RESEARCH"))
    log = [(e.coi.encode(), e.raw) for e in (*hub.registry_log, *therapy.log)]
    project(tmp_path / "hub.duckdb", list(canonical_records(log)), anchor_of(hub))
    con = connect(tmp_path / "hub.duckdb", read_only=True)
    try:
        found = rows(con, "SELECT scope, signed_by, signer, why_patient_did_not_sign, "
                          "withdrawn_at FROM consents ORDER BY granted_at")
    finally:
        con.close()
    withdrawn = datetime.fromtimestamp(withdrawal.occurred_at_us / 1e6, UTC)
    assert found == [
        {"scope": "TREATMENT", "signed_by": "HOSPITAL", "signer": therapy.id_of("physician"),
         "why_patient_did_not_sign": None, "withdrawn_at": None},
        {"scope": "RESEARCH", "signed_by": "WITNESSED", "signer": therapy.id_of("physician"),
         "why_patient_did_not_sign": "LEGAL_REPRESENTATIVE", "withdrawn_at": withdrawn},
        {"scope": "GENOME_STORAGE", "signed_by": "PATIENT",
         "signer": therapy.card.patient_actor_id, "why_patient_did_not_sign": None,
         "withdrawn_at": None}]


def test_inventory_follows_a_tampered_receipt_and_the_qualified_persons_decisions(
        tmp_path: Path) -> None:
    hub = Hub()
    gatekeeper = EventSigner("hub-gatekeeper", "hub-gatekeeper-k1", HybridKeyPair.generate())
    hub.register_gatekeeper(gatekeeper)
    log = ScriptedLog(hub, gatekeeper)
    therapy = TherapyScenario(hub, doses=3)
    log.run(therapy, "ship")
    log.accept(therapy, therapy.receive_at_site(seal_intact=False))  # all three quarantined
    log.accept(therapy, therapy.disposition_quarantine(therapy.dose(1)))
    log.accept(therapy, therapy.disposition_quarantine(therapy.dose(2), "DESTROYED",
                                                      "seal broken: contents unverifiable"))
    project(tmp_path / "hub.duckdb", log.gatekeep(), log.anchor)
    con = connect(tmp_path / "hub.duckdb", read_only=True)
    try:
        found = {r["dose_id"]: r["recorded_status"] for r in rows(
            con, "SELECT * FROM inventory_as_of(?)", BEFORE_EXPIRY)}
    finally:
        con.close()
    assert found == {"DOSE-1": "RELEASED", "DOSE-2": "DESTROYED", "DOSE-3": "QUARANTINED"}
    assert {d: STATUS_OF.get(r.status, r.status.value)
            for d, r in therapy.case.doses.items()} == found


def test_quarantines_follow_logger_readings_and_a_rejected_sample_as_the_gatekeeper_does(
        tmp_path: Path) -> None:
    """Given a sample received REJECTED (left in quarantine) on one therapy, and on another
    logger readings outside the storage range for the whole batch, then the qualified
    person's release of one dose and destruction of another, when projected, then
    quarantines and inventory show what the gatekeeper's fold holds: the sample and the
    third dose in quarantine, dose 1 back where it was, dose 2 destroyed."""
    hub = Hub()
    gatekeeper = EventSigner("hub-gatekeeper", "hub-gatekeeper-k1", HybridKeyPair.generate())
    hub.register_gatekeeper(gatekeeper)
    log = ScriptedLog(hub, gatekeeper)
    rejected = TherapyScenario(hub, patient_hash="ee" * 32)
    log.run(rejected, "accept_sample")
    log.accept(rejected, rejected.issue("lab", "SampleReceived", {
        "sample_id": rejected.sample_id, "condition": "REJECTED", "location": "accessioning",
        "condition_notes": "tube cracked", "temperature_celsius": -20.0}))
    therapy = TherapyScenario(hub, doses=3, patient_hash="ff" * 32)
    log.run(therapy, "receive_at_site")
    inside = log.accept(therapy, therapy.logger_readings([-72.0, -71.0], item_ids=[
        therapy.batch_id]))
    warm = log.accept(therapy, therapy.logger_readings([-72.0, -50.0, -70.0], item_ids=[
        therapy.batch_id]))
    log.accept(therapy, therapy.disposition_quarantine(therapy.dose(1)))
    log.accept(therapy, therapy.disposition_quarantine(therapy.dose(2), "DESTROYED",
                                                      "excursion beyond the stability data"))
    project(tmp_path / "hub.duckdb", log.gatekeep(), log.anchor)
    con = connect(tmp_path / "hub.duckdb", read_only=True)
    try:
        found = rows(con, "SELECT * FROM quarantines ORDER BY coi, log_offset, item_id")
        doses = {r["dose_id"]: r["recorded_status"] for r in rows(
            con, "SELECT * FROM inventory_as_of(?) WHERE coi = ?", BEFORE_EXPIRY, therapy.coi)}
    finally:
        con.close()
    assert all(r["quarantined_by"] != inside.event_id for r in found)  # inside the range
    in_quarantine = {(r["coi"], r["item_id"]) for r in found if r["decision"] is None}
    assert in_quarantine == {(t.coi, item_id) for t in (rejected, therapy)
                             for item_id, item in t.case.items.items()
                             if item.quarantined and not item.consumed}
    assert in_quarantine == {(rejected.coi, rejected.sample_id), (therapy.coi, therapy.batch_id),
                             (therapy.coi, therapy.dose(3))}
    by_item = {r["item_id"]: r for r in found if r["coi"] == therapy.coi}
    assert by_item[therapy.dose(2)]["decision"] == "DESTROYED"
    assert (by_item[therapy.dose(1)]["cause"], by_item[therapy.dose(1)]["quarantined_by"]) == (
        "LOGGER_READINGS", warm.event_id)
    sample = next(r for r in found if r["coi"] == rejected.coi)
    assert (sample["item_kind"], sample["cause"]) == ("SAMPLE", "REJECTED_ON_RECEIPT")
    assert doses == {"DOSE-1": "RELEASED", "DOSE-2": "DESTROYED", "DOSE-3": "QUARANTINED"}
    assert {d: STATUS_OF.get(r.status, r.status.value)
            for d, r in therapy.case.doses.items()} == doses


def test_dose_ownership_shows_who_invoices_whom_as_the_gatekeepers_fold_holds_it(
        scripted: ScriptedLog, db: duckdb.DuckDBPyConnection) -> None:
    found = {(r["coi"], r["dose_id"]): r["owner"] for r in rows(
        db, "SELECT * FROM dose_ownership")}
    assert found == {(t.coi, dose_id): dose.owner for t in scripted.therapies.values()
                     for dose_id, dose in t.case.doses.items()}


def test_site_stock_is_the_sites_on_placement_and_consignment_once_administered(
        tmp_path: Path) -> None:
    """Given three doses, one placed as the site's own stock, two consigned of which one is
    given, when projected, then the manufacturer invoices the site for the site stock from
    its placement and for the consigned dose from its administration, and still owns the
    third; each owner is the one the gatekeeper's fold holds."""
    hub = Hub()
    gatekeeper = EventSigner("hub-gatekeeper", "hub-gatekeeper-k1", HybridKeyPair.generate())
    hub.register_gatekeeper(gatekeeper)
    log = ScriptedLog(hub, gatekeeper)
    therapy = TherapyScenario(hub, doses=3)
    log.run(therapy, "receive_at_site")
    log.accept(therapy, therapy.place(1))
    stock = log.accept(therapy, therapy.place(2, method="SITE_STOCK"))
    log.accept(therapy, therapy.place(3))
    for step in ("schedule", "reserve", "dispense", "verify_identity", "administer"):
        given = log.accept(therapy, getattr(therapy, step)(1))
    project(tmp_path / "hub.duckdb", log.gatekeep(), log.anchor)
    con = connect(tmp_path / "hub.duckdb", read_only=True)
    try:
        found = {r["dose_id"]: r for r in rows(con, "SELECT * FROM dose_ownership")}
    finally:
        con.close()
    manufacturer = therapy.id_of("manufacturer")
    assert {d: (r["owner_kind"], r["invoice_from"], r["invoice_to"], r["taken_over_by"])
            for d, r in found.items()} == {
        "DOSE-1": ("SITE", manufacturer, therapy.site, given.event_id),
        "DOSE-2": ("SITE", manufacturer, therapy.site, stock.event_id),
        "DOSE-3": ("MANUFACTURER", None, None, None)}
    assert found["DOSE-3"]["owner"] == manufacturer
    assert {d: r["owner"] for d, r in found.items()} == {
        d: dose.owner for d, dose in therapy.case.doses.items()}
