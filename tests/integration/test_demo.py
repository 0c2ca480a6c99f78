"""The README's first command, with a small cohort, on the session's broker.

Given three patients, when `pcvhub demo` runs (its own topic prefix and data folder; real
`pcvhub worker`, `pcvhub project` and `pcvhub serve` processes; HL7 over MLLP, FHIR, the
MES drop folder and the payer's 835 inbox), then every therapy completes, every injected
fault is reported with the hub's reason, the referral that stalls at the lab gets its
turnaround alert with no further event of its own (the gatekeeper's sweep, on the run's
simulation clock), nothing else is refused or alerted, and the DuckDB projections hold
what the summary says.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from rich.console import Console

from pcvhub.audit.bundle import verify_bundle
from pcvhub.demo import run_demo
from pcvhub.projections.runner import DEFAULT_FILE
from pcvhub.projections.store import connect

pytestmark = pytest.mark.kafka

#: what the hub must answer to each injected fault (rejections view: reason codes)
REFUSED_FOR = {
    "DOSE_QUARANTINED",  # excursion, then dispense
    "DESIGN_ALTERED_AFTER_APPROVAL",  # the MES batch names another design hash
    "CLAIM_WITHOUT_ADMINISTRATION",  # a claim for a dose never given
    "PATIENT_CARD_NOT_OF_THIS_THERAPY",  # another patient's card answers the bedside check
    "HL7_UNKNOWN_PATIENT",  # the MLLP listener's AE for that administration: no MATCH scan
    "UNREGISTERED_KEY",  # a sequencing result signed by an unregistered actor
    "CUSTODY_NOT_RELEASED",  # a courier takes a vial the pharmacy never released
    "QC_NOT_PASSED",  # a release while the latest sterility result is a FAIL
}


@dataclass
class DemoRun:
    code: int
    text: str
    data_dir: Path

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        con = connect(self.data_dir / DEFAULT_FILE, read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()


@pytest.fixture(scope="module")
def demo(kafka, settings, tmp_path_factory) -> DemoRun:
    data_dir = tmp_path_factory.mktemp("demo") / "demo"
    out = io.StringIO()
    code = run_demo(Console(file=out, width=240), patients=3,
                    settings=replace(settings, bootstrap_servers=kafka.bootstrap_servers),
                    data_dir=data_dir, topic_prefix=f"t{uuid.uuid4().hex[:10]}")
    return DemoRun(code, out.getvalue(), data_dir)


def test_every_therapy_completes_and_the_demo_exits_0(demo):
    assert demo.code == 0, demo.text
    assert "3 of 3 therapies completed (+1 stalled on purpose)" in demo.text
    stages = demo.query("SELECT stage, doses_usable FROM case_status ORDER BY stage")
    assert stages == [("FOLLOW_UP", 0)] * 3 + [("RECEIVED_AT_LAB", 0)]


@pytest.mark.parametrize(("fault", "evidence"), [
    ("temperature excursion, then an attempt to dispense", "DOSE_QUARANTINED"),
    ("design altered after approval", "DESIGN_ALTERED_AFTER_APPROVAL"),
    ("claim for a dose never given", "CLAIM_WITHOUT_ADMINISTRATION"),
    ("dose scanned for the wrong patient", "PATIENT_CARD_NOT_OF_THIS_THERAPY"),
    ("dose scanned for the wrong patient", "ACK AE: no bedside identity check"),
    ("message from an unregistered signer", "UNREGISTERED_KEY"),
    ("duplicate HL7 message", "already applied, not applied again"),
    ("courier takes custody without the pharmacy's release", "CUSTODY_NOT_RELEASED"),
    ("release with a failed sterility test", "QC_NOT_PASSED"),
    ("therapy stalled at the sequencing lab", "TAT_SAMPLE_TO_DESIGN"),
])
def test_each_injected_fault_is_reported_with_the_hubs_reason(demo, fault, evidence):
    rows = [line for line in demo.text.splitlines() if evidence in line]
    assert rows, f"no summary line shows {evidence!r}:\n{demo.text}"
    assert "✔" in rows[0], rows[0]  # caught, not merely mentioned
    assert fault.split(",")[0][:20] in demo.text
    assert "faults injected and caught: 10 of 10" in demo.text


def test_nothing_valid_is_refused(demo):
    assert "0 refusals and 0 alerts unexplained" in demo.text, demo.text
    codes = [code for (code,) in demo.query("SELECT reason_code FROM rejections")]
    assert sorted(codes) == sorted(REFUSED_FOR), codes
    # the alerts are the gatekeeper's on the patient-safety refusals, and the one timer
    # of the stalled referral: no valid therapy ran past a deadline
    alerts = demo.query("SELECT rule, code, status FROM alerts ORDER BY code")
    assert alerts == [("R5", "DESIGN_ALTERED_AFTER_APPROVAL", "OPEN"),
                      ("R6", "DOSE_QUARANTINED", "RESOLVED"),
                      ("R5", "PATIENT_CARD_NOT_OF_THIS_THERAPY", "OPEN"),
                      ("TIMER", "TAT_SAMPLE_TO_DESIGN", "OPEN")]
    # the quarantine alert has an owner and a signed resolution, on the therapy's chain
    [owned] = demo.query("SELECT acknowledged_by, resolved_by, resolution FROM alerts "
                         "WHERE code = 'DOSE_QUARANTINED'")
    assert owned[0] == owned[1] and "pharmacy" in owned[0] and owned[2] == "CORRECTED"


def test_the_stalled_therapy_is_alerted_by_the_sweep_with_no_event_of_its_own(demo):
    [(coi, last_event_type, last_event_at)] = demo.query(
        "SELECT coi, last_event_type, last_event_at FROM case_status "
        "WHERE stage = 'RECEIVED_AT_LAB'")
    [(due_at, raised_at, subject)] = demo.query(
        "SELECT due_at, raised_at, subject_event_id FROM alerts "
        "WHERE coi = ? AND code = 'TAT_SAMPLE_TO_DESIGN'", [coi])
    # nothing of the therapy was written after its sample reached the lab, and the
    # deadline fell after that: only the sweep can have raised the alert
    [(written,)] = demo.query("SELECT max(occurred_at) FROM log.envelopes "
                              "WHERE coi = ? AND log_topic IN ('events', 'rejected')", [coi])
    assert written == last_event_at < due_at <= raised_at
    assert subject.startswith(f"{coi}/TAT_SAMPLE_TO_DESIGN/")  # a timer key, not an event
    assert last_event_type == "SampleReceived"
    # raised on the run's simulation clock (its last day ends days before today), not later
    [(last_day_end,)] = demo.query("SELECT max(occurred_at) + INTERVAL 1 DAY FROM log.envelopes "
                                   "WHERE log_topic = 'events'")
    assert raised_at <= last_day_end
    row = next(line for line in demo.text.splitlines() if "TAT_SAMPLE_TO_DESIGN" in line)
    assert "✔" in row and "timer sweep" in row


def test_the_duplicate_hl7_order_is_on_the_log_once(demo):
    orders = demo.query("SELECT coi, count(*) FROM log.therapy_ordered "
                        "WHERE log_topic = 'events' GROUP BY coi")
    assert [n for _, n in orders] == [1, 1, 1, 1]


def test_doses_claims_and_turnaround_are_projected(demo):
    doses = dict(demo.query("SELECT status, count(*) FROM inventory GROUP BY status"))
    # two doses each; the quarantined vial of the excursion was destroyed, not given
    assert doses == {"ADMINISTERED": 5, "DESTROYED": 1}
    claims = dict(demo.query("SELECT status, count(*) FROM billing_claims GROUP BY status"))
    assert claims == {"PAID": 4, "SUBMITTED": 1}  # the last claim is not remitted yet
    (median,), = demo.query("SELECT median(vein_to_vein_days) FROM turnaround")
    assert 20 < median < 45
    assert "claims paid $250,000 (4), outstanding $62,500 (1)" in demo.text
    outbox = list((demo.data_dir / "runs").glob("*/claims-outbox/*.837"))
    assert len(outbox) == 1 and "CLM*CLM-P001-1*62500" in outbox[0].read_text()


def test_the_attacker_is_refused_by_the_broker(demo):
    """A forged registration onto the canonical log and a write to another connector's
    topic, both with the HL7 connector's credentials: the broker refuses each."""
    assert "attacks on the broker refused: 2 of 2" in demo.text, demo.text
    rows = [line for line in demo.text.splitlines() if "connector-hl7" in line]
    assert len(rows) == 2 and all("✔" in r and "Topic authorization failed" in r
                                  for r in rows), rows
    assert any(".events" in r for r in rows) and any(".ingress.payer" in r for r in rows)


def test_every_patient_has_a_wallet_and_signs_the_data_consents_with_it(demo):
    wallets = sorted(p.name for p in (demo.data_dir / "runs").glob("*/wallets/*"))
    assert len(wallets) == 4, wallets  # three patients and the stalled referral
    signers = demo.query("SELECT scope, signed_by, count(*) FROM consents "
                         "GROUP BY scope, signed_by ORDER BY scope, signed_by")
    by_scope = {(scope, signed_by): n for scope, signed_by, n in signers}
    assert by_scope[("GENOME_STORAGE", "PATIENT")] == 4
    assert by_scope[("PAYER_SHARING", "PATIENT")] == 4
    assert by_scope[("TREATMENT", "HOSPITAL")] == 4  # the EMR's record of the paper form
    assert not {k for k in by_scope if k[0] != "TREATMENT" and k[1] != "PATIENT"}
    bound = demo.query("SELECT count(DISTINCT coi) FROM log.patient_credential_issued "
                       "WHERE log_topic = 'events'")
    assert bound == [(4,)]
    assert "patients' cards bound at enrolment: 4" in demo.text
    signed = sum(n for (scope, signed_by), n in by_scope.items() if signed_by == "PATIENT")
    assert f"consents signed by the patient's own card: {signed}," in demo.text


def test_the_ledger_is_cosigned_by_both_witnesses(demo):
    # the manufacturer's and the payer's witness processes each cosigned the last checkpoint
    assert "witnessed: quorum met (2/2)" in demo.text, demo.text
    rows = [line for line in demo.text.splitlines() if ".example/witness" in line]
    assert len(rows) == 2 and all("yes, at" in row for row in rows), rows
    history = next((demo.data_dir / "runs").iterdir()) / "ledger" / "checkpoints.jsonl"
    assert history.read_text().count("\n") >= 1


def test_one_therapys_bundle_is_exported_and_verified_offline(demo):
    # the summary names the latest checkpoint and the offline result
    assert "latest checkpoint: " in demo.text and "offline audit of PCV-" in demo.text, demo.text
    assert ": verified (" in demo.text, demo.text
    bundles = list((demo.data_dir / "runs").glob("*/audit/PCV-*"))
    assert len(bundles) == 1
    # the bundle holds what a patient needs: their consents, checked from the files alone
    report = verify_bundle(bundles[0])
    assert report.ok and report.consents
    assert {c.signed_by for c in report.consents} & {"PATIENT", "WITNESSED"}
    size = report.checkpoint.checkpoint.size
    assert f"size {size} root {report.checkpoint.checkpoint.root.hex()}" in demo.text


def test_the_genomes_are_in_the_vault_and_one_is_restored_under_the_patients_token(demo):
    assert "genomes stored (GenomeStored accepted)  3" in " ".join(demo.text.split("│"))\
        or "genomes stored (GenomeStored accepted) │ 3" in demo.text, demo.text
    assert "X25519MLKEM768" in demo.text and "identical" in demo.text
    assert "TOKEN_SPENT" in demo.text
    stored = demo.query("SELECT count(DISTINCT coi) FROM log.genome_stored "
                        "WHERE log_topic = 'events'")
    restored = demo.query("SELECT count(*) FROM log.genome_restored WHERE log_topic = 'events'")
    assert stored == [(3,)] and restored == [(1,)]
