"""A study approved on the log, computed by three hospitals' party processes, recorded there.

Given a running gatekeeper, a researcher and an ethics approver registered on the registry
chain, and a study requested and approved on its own chain through the gatekeeper, when
three ``pcvhub mpc party --study-id`` processes (one per site, each reading the approval
through the one log reader and its own site's projection) compute it, then:

- the published result equals the plaintext over the pooled consented rows, and the run
  and its result are on the study chain with that result's digest;
- (slow) once the patient withdraws research consent, the next run no longer counts them;
- a request altered after its approval is refused by every party, and nothing is recorded;
- (slow) a party killed mid-run fails the run: no party writes a result and the chain
  holds no run for it.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pcvhub.connectors.registrar import publish_chain_event
from pcvhub.ids import study_coi
from pcvhub.mpc.chain import read_study_chain, request_payload
from pcvhub.mpc.local_run import LocalStudyRun, finish
from pcvhub.mpc.plaintext import reference_result
from pcvhub.mpc.site_rows import site_rows_from_file
from pcvhub.mpc.study import Statistic, StudySpec
from pcvhub.streams.sandbox import Sandbox
from pcvhub.studies import (
    StudyRunFailed,
    approve_study,
    record_run,
    request_study,
    run_and_record,
)

from ..unit.test_projection_scenario import project, scripted_log
from ..unit.therapy_builder import Hub

pytestmark = pytest.mark.kafka

SITES = ("KYOTO01", "OSAKA02", "TOKYO03")
#: threshold 1: nothing is suppressed, so one patient more or less shows in the counts
SPEC = StudySpec("c43-response", (Statistic.RESPONSE_BY_RECIST,), SITES, ("C43",),
                 small_cell_threshold=1, day_bins=64)


class StudyHub:
    def __init__(self, sandbox: Sandbox, builder: Hub, root: Path) -> None:
        self.sandbox, self.builder, self.root = sandbox, builder, root
        self.researcher = builder.register("dr-ito", {"RESEARCHER"}, "UNIV-RES")
        self.approver = builder.register("irb-sato", {"ETHICS_APPROVER"}, "KYOTO-IRB")
        self._projections: dict[str, tuple[Path, list]] = {}

    @property
    def settings(self):  # noqa: ANN201
        return self.sandbox.settings

    def projection(self, withdrawn: bool = False) -> tuple[Path, list]:
        """The scripted scenario projected (A at KYOTO01 consents to research), then the same
        log after A's patient withdrew it; and each one's pooled consented rows."""
        if not self._projections:
            scripted = scripted_log()
            for name in ("consented", "withdrawn"):
                if name == "withdrawn":
                    a = scripted.therapies["A"]
                    scripted.accept(a, a.withdraw("RESEARCH"))
                path = self.root / f"{name}.duckdb"
                project(path, scripted.gatekeep(), scripted.anchor)
                now = datetime.now(UTC)
                self._projections[name] = (
                    path, [r for s in SITES for r in site_rows_from_file(path, s, now)])
        return self._projections["withdrawn" if withdrawn else "consented"]

    def run(self, name: str, projection: Path):  # noqa: ANN201
        return run_and_record(self.settings, self.researcher.issuer.signer, self.root / name,
                              SPEC, {s: ("--projection", str(projection)) for s in SITES},
                              self.sandbox.env, datetime.now(UTC))


@pytest.fixture(scope="module")
def study_hub(kafka, settings, tmp_path_factory):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("mpc-study-log")
    sandbox = Sandbox.create(settings, kafka.bootstrap_servers, root)
    builder = Hub()
    builder.deploy_gatekeeper(sandbox)
    hub = StudyHub(sandbox, builder, root)
    worker = sandbox.start_worker()
    sandbox.send([(e.coi.encode(), e.raw) for e in builder.registry_log])
    assert sandbox.wait_answered(len(builder.registry_log), 180, worker) == \
        len(builder.registry_log), sandbox.worker_log()
    request_study(hub.settings, hub.researcher.issuer.signer, SPEC, "best response in C43")
    approve_study(hub.settings, hub.approver.issuer.signer, SPEC, "KYOTO-IRB-2026-041")
    yield hub
    sandbox.stop_all()


def counted(result: dict) -> dict[str, object]:
    rows = result["statistics"]["response_by_recist"]["rows"]
    return {row["site_group"]: row["total"] for row in rows}


def test_an_approved_study_runs_and_the_run_and_result_are_on_its_chain(study_hub) -> None:
    projection, pooled = study_hub.projection()
    assert len(pooled) == 1  # A alone holds research consent its patient signed
    recorded = study_hub.run("run-1", projection)
    expected = reference_result(SPEC, SPEC.statistics, pooled).to_json()
    assert recorded.result == expected and counted(recorded.result) == {"all": 1}
    chain = read_study_chain(study_hub.settings, SPEC.study_id)
    run = chain.runs[recorded.run_id]
    assert run.parties == SITES and run.result_digest == recorded.result_digest
    assert run.spec_digest == SPEC.digest().hex()
    assert chain.results[recorded.run_id] == expected
    assert chain.ignored == []


@pytest.mark.slow
def test_a_withdrawn_patient_is_absent_from_the_next_run(study_hub) -> None:
    projection, pooled = study_hub.projection(withdrawn=True)
    assert pooled == []
    recorded = study_hub.run("run-2", projection)
    assert counted(recorded.result) == {"all": 0}
    assert recorded.result == reference_result(SPEC, SPEC.statistics, []).to_json()


def test_a_request_altered_after_approval_is_refused_by_every_party(study_hub) -> None:
    altered = replace(SPEC, statistics=(*SPEC.statistics, Statistic.VEIN_TO_VEIN_QUARTILES))
    publish_chain_event(study_hub.settings, study_hub.researcher.issuer.signer,
                        study_coi(SPEC.study_id), "StudyRequested",
                        request_payload(altered, "and the turnaround too"))
    before = set(read_study_chain(study_hub.settings, SPEC.study_id).runs)
    projection, _ = study_hub.projection()
    with pytest.raises(StudyRunFailed, match="3 of 3 parties failed, the run is not recorded"
                       ) as failed:
        study_hub.run("run-3", projection)
    for site, (code, out) in failed.value.parties.items():
        assert code == 4, out
        assert f"site {site} refuses the run" in out, out
        assert "is not approved; an earlier spec was" in out, out
        assert not (study_hub.root / "run-3" / f"result-{site}.json").exists()
    assert set(failed.value.parties) == set(SITES)
    assert set(read_study_chain(study_hub.settings, SPEC.study_id).runs) == before


@pytest.mark.slow
def test_a_party_killed_mid_run_leaves_no_result_and_no_run_on_the_chain(study_hub) -> None:
    spec = StudySpec("km-drill", (Statistic.OVERALL_SURVIVAL_KM,), SITES, ("C43", "C34"),
                     survival_bucket_days=1, survival_buckets=1500)
    request_study(study_hub.settings, study_hub.researcher.issuer.signer, spec, "drill")
    approve_study(study_hub.settings, study_hub.approver.issuer.signer, spec, "IRB-drill")
    run = LocalStudyRun.create(study_hub.root / "km-drill", spec, on_the_log=True)
    processes = [run.start(run.command(i, ("--synthetic", "5:300"), "--connect-timeout", "60"),
                           env=study_hub.sandbox.env) for i in range(len(SITES))]
    victim = processes[2]
    assert victim.stdout is not None
    deadline = time.monotonic() + 120
    for line in victim.stdout:  # wait until the victim is inside the computation
        if "parties connected over TLS" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for code, out in finish(processes[:2], timeout=60):
        assert code == 3 and "no result is kept" in out, out
    assert not any(run.result(s).exists() for s in SITES)
    with pytest.raises(StudyRunFailed, match="no result from KYOTO01, OSAKA02, TOKYO03"):
        record_run(study_hub.settings, study_hub.researcher.issuer.signer, spec,
                   spec.statistics, datetime.now(UTC), {s: run.result(s) for s in SITES})
    chain = read_study_chain(study_hub.settings, spec.study_id)
    assert chain.approved(int(time.time() * 1e6)) == spec and chain.runs == {}
    assert json.dumps(chain.results) == "{}"
