"""Logger uploads as they run under `pcvhub serve --logger-drop`: a courier's data logger
exports put into a real folder, watched by the running connector, judged by a real
`pcvhub worker`, read back from Kafka.

Given a therapy whose doses the site received, and the cold chain's upload actor
``coldchain-loggers`` registered on the log, when logger files are dropped, then each
upload is one TemperatureLogRecorded on the canonical log, signed by that actor through
its own ingress topic; readings outside the storage range quarantine the doses (the
gatekeeper then refuses their placement); a malformed upload is refused whole with the
file, row and column in its reason, on the rejected topic with its rows' text; and the
folder keeps serving.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pcvhub.connectors.loggers import LoggerDrop
from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.streams.sandbox import PASSPHRASE, Sandbox
from pcvhub.trust.issuer import now_us
from pcvhub.trust.keys import KeyStore
from pcvhub.trust.registry import Actor, registration_payload

from ..unit.therapy_builder import Hub, TherapyScenario, decode_inbound
from .test_file_drop import RunningDrop

pytestmark = pytest.mark.kafka

UPLOADER = "coldchain-loggers"
UPLOADER_SITE = "COLDCHAIN"
HEADER = "coi,logger_id,item_ids,shipment_id,at,celsius"


@pytest.fixture(scope="module")
def courier(kafka, settings, tmp_path_factory):
    """A sandboxed hub with a therapy whose doses the site received, the upload actor
    registered, the worker and the logger drop up."""
    root = tmp_path_factory.mktemp("logger-drop")
    hub = Sandbox.create(settings, kafka.bootstrap_servers, root)
    builder = Hub()
    builder.deploy_gatekeeper(hub)
    key = KeyStore(hub.settings.data_dir / "keys", PASSPHRASE.encode()).create(
        UPLOADER, str(now_us()))
    builder.admit(builder.registry_event("ActorRegistered", registration_payload(
        Actor(UPLOADER, "ColdChain logger uploads", frozenset({"CONNECTOR"}), UPLOADER_SITE),
        key.key_id, key.keys.public, builder.clock_us)))
    scenario = TherapyScenario(builder)
    scenario.run_until("receive_at_site")
    worker = hub.start_worker()
    hub.send([(e.coi.encode(), e.raw) for e in builder.registry_log])
    assert hub.wait_answered(len(builder.registry_log), 180, worker) == \
        len(builder.registry_log), hub.worker_log()
    hub.send([(e.coi.encode(), e.raw) for e in scenario.log])
    expected = len(builder.registry_log) + len(scenario.log)
    assert hub.wait_answered(expected, 180, worker) == expected, hub.worker_log()
    assert hub.count("rejected") == 0, hub.worker_log()

    pytest.MonkeyPatch().setenv("PCVHUB_KEY_PASSPHRASE", PASSPHRASE)
    running = RunningDrop(hub, root / "loggers", LoggerDrop, UPLOADER, UPLOADER_SITE).start()
    yield hub, scenario, running
    running.close()
    hub.stop_all()


def _at(scenario: TherapyScenario, minutes: int) -> str:
    return datetime.fromtimestamp((scenario.now_us + minutes * 60_000_000) / 1e6,
                                  UTC).isoformat()


def _readings(scenario: TherapyScenario, start: int, *celsius: object) -> list[str]:
    doses = ";".join(scenario.dose_ids)
    return [f"{scenario.coi},LOG-9,{doses},{scenario.shipment_id},{_at(scenario, start + n)},{c}"
            for n, c in enumerate(celsius)]


def _csv(rows: list[str]) -> bytes:
    return ("\n".join((HEADER, *rows)) + "\n").encode()


def _by_id(hub: Sandbox, suffix: str) -> dict[str, tuple]:
    found = {}
    for msg in hub.read_all(suffix):
        env = decode_envelope(msg.value)
        _, payload = decode_payload(env.schema_fingerprint, env.payload, env.event_type)
        found[env.event_id] = (env, payload, msg)
    return found


def test_an_excursion_in_a_dropped_logger_file_quarantines_the_doses(courier):
    hub, scenario, drop = courier
    drop.drop("LOG-9-ok.csv", _csv(_readings(scenario, 1, -72.0, -71.5, -70.9)))
    ok = drop.result("LOG-9-ok.csv")
    assert [r["status"] for r in ok["results"]] == ["accepted"], ok
    drop.drop("LOG-9-warm.json", json.dumps([
        {"coi": scenario.coi, "logger_id": "LOG-9", "item_ids": scenario.dose_ids,
         "shipment_id": scenario.shipment_id, "at": _at(scenario, 10 + n), "celsius": c}
        for n, c in enumerate((-71.0, -52.5, -44.0, -70.0))]).encode())
    warm = drop.result("LOG-9-warm.json")
    (entry,) = warm["results"]
    assert (entry["status"], entry["rows"], entry["readings"]) == ("accepted", [1, 2, 3, 4], 4)

    canonical = _by_id(hub, "events")
    for upload in (ok["results"][0], entry):
        env, payload, _ = canonical[upload["event_id"]]
        assert (env.producer, env.coi) == (UPLOADER, scenario.coi)
        assert payload["item_ids"] == scenario.dose_ids
    _, payload, record = canonical[entry["event_id"]]
    assert [r["celsius"] for r in payload["readings"]] == [-71.0, -52.5, -44.0, -70.0]
    assert payload["source_ref"] == f"LOG-9-warm.json sha256:{warm['sha256']}"

    # the hub judged the readings itself: fold what it accepted, as the gatekeeper did
    for event_id in (ok["results"][0]["event_id"], entry["event_id"]):
        scenario.commit(decode_inbound(canonical[event_id][2].value))
    dose = scenario.case.items[scenario.dose(1)]
    assert dose.quarantined and "2 of 4 logger readings outside -80..-60 C" in \
        dose.quarantine_reason
    # ... and the real gatekeeper refuses to place a dose of that shipment
    place = scenario.place(1)
    before = hub.count("events") + hub.count("rejected")
    hub.send([(scenario.coi.encode(), place.raw)])
    assert hub.wait_answered(before + 1, 90) == before + 1, hub.worker_log()
    (refusal,) = [p for _, p, _ in _by_id(hub, "rejected").values()
                  if p["rejected_event_id"] == place.event_id]
    assert (refusal["rule"], refusal["reason_code"]) == ("R6", "DOSE_QUARANTINED")
    assert "LOG-9" in refusal["reason"]


def test_a_malformed_upload_is_refused_whole_naming_file_row_and_column(courier):
    hub, scenario, drop = courier
    rows = [*_readings(scenario, 30, -72.0, "warm", -71.0),
            f"{scenario.coi},,DOSE-1,,{_at(scenario, 31)},-70"]  # no logger: stands alone
    before = hub.count("ingress.loggers")
    drop.drop("LOG-9-bad.csv", _csv(rows))
    result = drop.result("LOG-9-bad.csv")
    upload, loose = result["results"]
    assert upload["status"] == "refused" and upload["refused_by"] == "connector", result
    assert upload["rows"] == [1, 2, 3]
    assert upload["problems"] == [{"row": 2, "line": 3, "column": "celsius",
                                   "problem": "'warm' is not a number of degrees Celsius"}]
    assert loose["status"] == "refused" and loose["problems"][0]["column"] == "logger_id"
    # nothing of the upload was sent: only the two refusals went through ingress
    assert hub.count("ingress.loggers") == before + 2

    rejected = _by_id(hub, "rejected")
    env, refusal, _ = rejected[upload["refusal_event_id"]]
    assert (env.producer, env.coi) == (UPLOADER, scenario.coi)
    assert refusal["reason_code"] == "INVALID_UPLOAD"
    assert refusal["reason"].startswith(
        f"file LOG-9-bad.csv, logger LOG-9 for therapy {scenario.coi} (rows 1-3 (lines 2-4)): "
        "row 2 (line 3): celsius: 'warm' is not a number")
    assert refusal["original"] == ("\n".join(rows[:3]) + "\n").encode()

    # an unreadable file goes to failed/, and the folder keeps serving
    drop.drop("LOG-9.json", b'[{"coi": ')
    failed = drop.result("LOG-9.json", where="failed")
    assert "not JSON" in failed["error"]
    _, unreadable, _ = _by_id(hub, "rejected")[failed["refusal_event_id"]]
    assert unreadable["reason_code"] == "UNREADABLE_FILE" and "LOG-9.json" in unreadable["reason"]
    drop.drop("LOG-9-after.csv", _csv(_readings(scenario, 40, -72.0)))
    assert [r["status"] for r in drop.result("LOG-9-after.csv")["results"]] == ["accepted"]
