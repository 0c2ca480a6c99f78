"""The MES / LIMS file drop as it runs under `pcvhub serve`: files put into a real folder,
watched by the running connector, judged by a real `pcvhub worker`, read back from Kafka.

Given a therapy whose design two approvers approved, and the manufacturer's MES actor
``mes-kobe`` registered on the log, when batch-record and QC files are dropped, then each
valid row is on the canonical log once, signed by mes-kobe; each bad row or unreadable
file is named in its result file and on the rejected topic; and the folder keeps
serving (a valid file dropped right after each bad one is accepted).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pcvhub.connectors.drop_folder import DropConnector
from pcvhub.connectors.mes import FileDrop
from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.schemas.specifications import RECIPES
from pcvhub.streams.sandbox import PASSPHRASE, Sandbox
from pcvhub.trust.issuer import now_us
from pcvhub.trust.keys import KeyStore
from pcvhub.trust.registry import Actor, registration_payload

from ..unit.therapy_builder import Hub, TherapyScenario

pytestmark = pytest.mark.kafka

MES = "mes-kobe"
MES_SITE = "MFG-KOBE"
MES_ROLES = frozenset({"MANUFACTURER", "QC_ANALYST", "CONNECTOR"})
RECIPE = RECIPES["individualized-neoantigen-mRNA"]
HEADER = ("event,coi,occurred_at,batch_id,design_hash,facility_id,planned_dose_count,step,"
          "operator,equipment_id,parameter_hash,test,specification,value,unit,result")


class RunningDrop:
    """A drop connector's ``serve`` (what `pcvhub serve` runs: ``FileDrop`` unless told
    otherwise) on its own event loop in a thread."""

    def __init__(self, hub: Sandbox, folder: Path, connector: type[DropConnector] = FileDrop,
                 actor_id: str = MES, site_id: str = MES_SITE) -> None:
        self.hub, self.folder = hub, folder
        self.connector, self.actor_id, self.site_id = connector, actor_id, site_id
        folder.mkdir(parents=True)  # the share exists before the connector starts
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.connector.serve(
                self.hub.settings, self.folder, self.stop, actor_id=self.actor_id,
                site_id=self.site_id))
        except BaseException as exc:  # surfaced by result(): a crashed connector fails tests
            self.error = exc

    def start(self) -> RunningDrop:
        self.thread.start()
        return self

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)

    def drop(self, name: str, content: bytes) -> Path:
        """Write as a hidden file, then rename: what a well-behaved MES does."""
        hidden = self.folder / f".{name}"
        hidden.write_bytes(content)
        hidden.rename(self.folder / name)
        return self.folder / name

    def result(self, name: str, timeout: float = 90.0, where: str = "done") -> dict:
        path = self.folder / where / f"{name}.result.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.error is not None or not self.thread.is_alive():
                raise AssertionError(f"the file drop stopped: {self.error!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no result for {name} within {timeout:.0f}s:\n"
                                     f"{self.hub.worker_log()}")
            time.sleep(0.1)
        return json.loads(path.read_text())


@pytest.fixture(scope="module")
def plant(kafka, settings, tmp_path_factory):
    """A sandboxed hub with a therapy at APPROVED, mes-kobe registered, worker and drop up."""
    root = tmp_path_factory.mktemp("file-drop")
    hub = Sandbox.create(settings, kafka.bootstrap_servers, root)
    builder = Hub()
    builder.deploy_gatekeeper(hub)
    mes = KeyStore(hub.settings.data_dir / "keys", PASSPHRASE.encode()).create(MES, str(now_us()))
    builder.admit(builder.registry_event("ActorRegistered", registration_payload(
        Actor(MES, "Kobe plant MES / LIMS", MES_ROLES, MES_SITE), mes.key_id, mes.keys.public,
        builder.clock_us)))
    scenario = TherapyScenario(builder)
    scenario.run_until("approve_second")
    worker = hub.start_worker()
    # registrations first: the registry chain lives in another partition than the therapy
    hub.send([(e.coi.encode(), e.raw) for e in builder.registry_log])
    assert hub.wait_answered(len(builder.registry_log), 180, worker) == \
        len(builder.registry_log), hub.worker_log()
    hub.send([(e.coi.encode(), e.raw) for e in scenario.log])
    expected = len(builder.registry_log) + len(scenario.log)
    assert hub.wait_answered(expected, 180, worker) == expected, hub.worker_log()
    assert hub.count("rejected") == 0, hub.worker_log()

    pytest.MonkeyPatch().setenv("PCVHUB_KEY_PASSPHRASE", PASSPHRASE)
    running = RunningDrop(hub, root / "drop").start()
    yield hub, scenario, running
    running.close()
    hub.stop_all()


def _at(scenario: TherapyScenario, minutes: int) -> str:
    us = scenario.now_us + minutes * 60_000_000
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


def _qc_row(scenario: TherapyScenario, minutes: int, value: str = "0.5") -> str:
    """An endotoxin result against the QC panel's limit (the gatekeeper judges it, R9)."""
    return (f"QcResultRecorded,{scenario.coi},{_at(scenario, minutes)},{scenario.batch_id},,,,,"
            f",,,endotoxin,< 5,{value},EU/mL,PASS")


def _csv(*rows: str) -> bytes:
    return ("\n".join((HEADER, *rows)) + "\n").encode()


def _by_id(hub: Sandbox, suffix: str) -> dict[str, tuple]:
    found = {}
    for msg in hub.read_all(suffix):
        env = decode_envelope(msg.value)
        _, payload = decode_payload(env.schema_fingerprint, env.payload, env.event_type)
        found[env.event_id] = (env, payload)
    return found


def _serving(plant, name: str, minutes: int) -> None:
    """A valid file dropped right after a bad one is accepted: the connector still serves."""
    hub, scenario, drop = plant
    drop.drop(name, _csv(_qc_row(scenario, minutes)))
    result = drop.result(name)
    assert [r["status"] for r in result["results"]] == ["accepted"], result


def test_a_batch_record_file_is_signed_judged_and_reported(plant):
    hub, scenario, drop = plant
    design = scenario.design_hash
    synthesis, purification, formulation, fill = RECIPE.steps

    def step(minutes: int, name: str, equipment: str) -> str:
        return (f"ManufacturingStepCompleted,{scenario.coi},{_at(scenario, minutes)},"
                f"{scenario.batch_id},,,,{name},op-7,{equipment},{'9a' * 32},,,,,")

    rows = [
        f"ManufacturingStarted,{scenario.coi},{_at(scenario, 10)},{scenario.batch_id},{design},"
        f"MFG-KOBE-1,2,,,,,,,,,",
        step(20, synthesis, "IVT-02"),
        step(30, purification, ""),  # equipment_id missing: refused
        step(31, purification, "TFF-2"),  # the corrected row: the recipe's order holds
        step(32, formulation, "MIXER-1"),
        step(33, fill, "FILL-02"),
        _qc_row(scenario, 40),  # QC once every step of the recipe is recorded (R9)
    ]
    drop.drop("batch-1.csv", _csv(*rows))
    result = drop.result("batch-1.csv")
    statuses = [(r["row"], r["status"]) for r in result["results"]]
    assert statuses == [(1, "accepted"), (2, "accepted"), (3, "refused"), (4, "accepted"),
                        (5, "accepted"), (6, "accepted"), (7, "accepted")], result
    refused = result["results"][2]
    assert refused["line"] == 4 and refused["refused_by"] == "connector"
    assert refused["problems"] == [{"column": "equipment_id",
                                    "problem": "is required (the cell is empty)"}]
    assert (drop.folder / "done" / "batch-1.csv").exists()
    assert not (drop.folder / "batch-1.csv").exists()

    canonical = _by_id(hub, "events")
    ids = [r["event_id"] for r in result["results"] if r["status"] == "accepted"]
    for event_id in ids:
        env, _ = canonical[event_id]
        assert env.producer == MES and env.coi == scenario.coi
    started = canonical[ids[0]][1]
    assert started["design_hash"] == design and started["planned_dose_count"] == 2
    qc_env, qc = canonical[ids[-1]]
    assert qc_env.meaning.value == "REVIEWED" and qc["result"] == "PASS"

    rejected = _by_id(hub, "rejected")
    env, refusal = rejected[refused["refusal_event_id"]]
    assert env.producer == MES and env.coi == scenario.coi
    assert refusal["reason_code"] == "INVALID_ROW" and "equipment_id" in refusal["reason"]
    assert refusal["original"] == (rows[2] + "\n").encode()

    # Re-dropping the same content applies nothing twice.
    before = hub.count("ingress.files")
    drop.drop("batch-1-again.csv", _csv(*rows))
    again = drop.result("batch-1-again.csv")
    assert [r["status"] for r in again["results"]] == \
        ["already-accepted", "already-accepted", "refused", *["already-accepted"] * 4]
    assert [r["event_id"] for r in again["results"] if "event_id" in r] == ids
    # nothing applied twice: the only new records are the connector's refusals, which
    # reach the rejected topic through its ingress topic (the gatekeeper relays them)
    refusals = sum(r["status"] == "refused" for r in again["results"])
    assert hub.count("ingress.files") == before + refusals


def test_qc_results_in_json(plant):
    hub, scenario, drop = plant
    records = [{"event": "QcResultRecorded", "coi": scenario.coi,
                "occurred_at": _at(scenario, 50 + n), "batch_id": scenario.batch_id,
                "test": test, "specification": spec, "value": value, "unit": unit,
                "result": "PASS", "method_ref": "SOP-QC-12"}
               for n, (test, spec, value, unit) in enumerate([
                   ("mRNA integrity", ">= 80", "91", "%"),
                   ("sterility", "no growth", "no growth", None)])]
    drop.drop("qc.json", json.dumps({"records": records}).encode())
    result = drop.result("qc.json")
    assert [r["status"] for r in result["results"]] == ["accepted", "accepted"], result
    canonical = _by_id(hub, "events")
    assert [canonical[r["event_id"]][1]["test"] for r in result["results"]] == \
        ["mRNA integrity", "sterility"]


@pytest.mark.parametrize(("name", "content", "where", "expect"), [
    ("not-json.json", b'{"records": [{"event": "QcResultRecorded",', "failed",
     "not JSON: Expecting"),
    ("empty.csv", b"", "failed", "the CSV file is empty"),
    ("latin1.csv", "event,coi\nQcResultRecorded,é\n".encode("latin-1"), "failed",
     "not UTF-8"),
])
def test_unreadable_files_go_to_failed_with_their_reason(plant, name, content, where, expect):
    hub, scenario, drop = plant
    drop.drop(name, content)
    result = drop.result(name, where=where)
    assert expect in result["error"] and result["results"] == []
    assert (drop.folder / where / name).read_bytes() == content
    _, refusal = _by_id(hub, "rejected")[result["refusal_event_id"]]
    assert refusal["reason_code"] == "UNREADABLE_FILE" and refusal["original"] == content
    assert expect in refusal["reason"]
    _serving(plant, f"after-{name}.csv", 100 + len(name))


def test_bad_rows_are_refused_each_with_its_reason_and_good_rows_still_go(plant):
    hub, scenario, drop = plant
    missing_column = HEADER.replace(",unit", "")
    # another check character than the real one (a fixed "Z" was the real one 1 time in 36)
    mistyped = "Z" if scenario.coi[-1] != "Z" else "Y"
    rows = [
        # planned_dose_count "two": a bad number
        f"ManufacturingStarted,{scenario.coi},{_at(scenario, 200)},BATCH-2,"
        f"{scenario.design_hash},MFG-KOBE-1,two,,,,,,,,",
        # a mistyped CoI (wrong check character); the file has no unit column at all,
        # which QC rows may leave out (unit is optional)
        f"QcResultRecorded,{scenario.coi[:-1]}{mistyped},{_at(scenario, 201)},"
        f"{scenario.batch_id},,,,,,,"
        ",sterility,no growth,no growth,PASS",
        f"QcResultRecorded,{scenario.coi},{_at(scenario, 202)},{scenario.batch_id},,,,,,,,"
        "sterility,no growth,no growth,PASS",
    ]
    drop.drop("mixed.csv", ("\n".join((missing_column, *rows)) + "\n").encode())
    result = drop.result("mixed.csv")
    first, second, third = result["results"]
    assert first["status"] == "refused"
    assert first["problems"] == [{"column": "planned_dose_count",
                                  "problem": "'two' is not a whole number"}]
    assert second["status"] == "refused" and second["problems"][0]["column"] == "coi"
    assert third["status"] == "accepted", result
    rejected = _by_id(hub, "rejected")
    assert rejected[first["refusal_event_id"]][1]["reason"].startswith("row 1 (line 2): ")
    assert rejected[second["refusal_event_id"]][0].coi == "UNKNOWN"
    _serving(plant, "after-mixed.csv", 210)


def test_a_row_the_gatekeeper_refuses_is_reported_and_does_not_block_the_next(plant):
    hub, scenario, drop = plant
    rows = [
        # a second batch started while the first is in QC
        f"ManufacturingStarted,{scenario.coi},{_at(scenario, 300)},BATCH-X,{'ee' * 32},"
        "MFG-KOBE-1,1,,,,,,,,,",
        _qc_row(scenario, 301),
    ]
    drop.drop("gatekept.csv", _csv(*rows))
    result = drop.result("gatekept.csv")
    refused, accepted = result["results"]
    assert refused["status"] == "refused" and refused["refused_by"] == "gatekeeper", result
    # the therapy is past APPROVED, so R4 refuses a second ManufacturingStarted
    assert (refused["rule"], refused["reason_code"]) == ("R4", "OUT_OF_ORDER")
    assert accepted["status"] == "accepted", result
