"""An attacker with broker access writes registrations straight onto the canonical log.

Given a running gatekeeper worker and an honest registry chain, when someone holding only
the public schemas and keys of their own (or one stolen non-registrar key) writes an
``ActorRegistered`` directly to ``events`` under ``pcvhub:registry``, linked onto the
chain's real head, then:

- the gatekeeper's registry follower quarantines it and says so in its log, and an event
  signed by the forged key is refused ``UNREGISTERED_KEY``;
- a restarted worker (ledger rebuilt from the log) quarantines it again;
- a projection rebuilt from the log marks it with its reason and does not list the
  forged actor as registered;
- a connector's log reader quarantines it (its registry never holds the forged actor);
- ``pcvhub log check events`` names both records and exits 1.

And two registrations published in a row with ``pcvhub keys new --publish`` both land on
the registry chain, the second linked onto the first.
"""

from __future__ import annotations

import signal
import time

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from pcvhub.cli import app as pcvhub_cli
from pcvhub.connectors.core import Connector
from pcvhub.demo.therapy import Party
from pcvhub.projections.runner import rebuild
from pcvhub.projections.store import connect
from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.streams.sandbox import PASSPHRASE, Sandbox
from pcvhub.topics import topic_name
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.keys import KeyStore
from pcvhub.trust.registry import REGISTRY_COI, Actor, registration_payload
from pcvhub.trust.signing import EventSigner, HybridKeyPair

from ..unit.therapy_builder import Hub, TherapyScenario

pytestmark = pytest.mark.kafka


@pytest.fixture
def hub(kafka, settings, tmp_path):
    isolated = Sandbox.create(settings, kafka.bootstrap_servers, tmp_path)
    yield isolated
    isolated.stop_all()


def wait_for(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def refusals(hub: Sandbox) -> dict[str, dict]:
    found = {}
    for record in hub.read_all("rejected"):
        env = decode_envelope(record.value)
        _, payload = decode_payload(env.schema_fingerprint, env.payload, env.event_type)
        found[payload["rejected_event_id"]] = payload
    return found


def test_registrations_forged_onto_the_log_are_quarantined_by_every_reader(hub) -> None:
    builder = Hub()
    builder.deploy_gatekeeper(hub)
    scenario = TherapyScenario(builder)
    store = KeyStore(hub.settings.data_dir / "keys", PASSPHRASE.encode())
    connector_key = store.create("emr-kyoto01", str(time.time()))
    builder.register_party(Party("emr-kyoto01", frozenset({"CONNECTOR"}), "KYOTO01",
                                 EventIssuer(connector_key)), "Kyoto EMR connector")
    worker = hub.start_worker()
    registrations = [(e.coi.encode(), e.raw) for e in builder.registry_log]
    hub.send(registrations)
    assert hub.wait_answered(len(registrations), 120, worker) >= len(registrations), \
        hub.worker_log()

    # -- the attack: straight to the canonical topic, linked onto the true head --
    mallory = EventSigner("mallory", "mallory-k1", HybridKeyPair.generate())
    self_signed = EventIssuer(mallory).issue("ActorRegistered", REGISTRY_COI,
        registration_payload(Actor("mallory", "Dr Mallory", frozenset({"PHYSICIAN",
                                                                       "REGISTRAR"}), "KYOTO01"),
                             "mallory-k1", mallory.keys.public, builder.clock_us - 10**9),
        occurred_at_us=builder.clock_us + 1, prev_hash=builder.registry_case.head)
    nurse = scenario.actors["nurse"]  # a stolen key: registered, but no registrar
    promoted = nurse.issuer.issue("ActorRegistered", REGISTRY_COI, registration_payload(
        Actor(nurse.actor_id, "nurse", frozenset({"NURSE", "REGISTRAR"}), nurse.site),
        nurse.key_id, nurse.issuer.signer.keys.public, builder.clock_us),
        occurred_at_us=builder.clock_us + 2, prev_hash=builder.registry_case.head)
    producer = Producer(hub.admin.producer())
    for forged in (self_signed, promoted):
        producer.produce(topic_name("events", hub.settings.topic_prefix), key=forged.key,
                         value=forged.wire)
    assert producer.flush(30) == 0

    # -- the gatekeeper's follower quarantines both, and the forged key signs nothing --
    wait_for(lambda: "NOT_REGISTRAR" in hub.worker_log()
             and "UNREGISTERED_KEY" in hub.worker_log(), 60,
             f"the worker reports the forged registrations:\n{hub.worker_log()}")
    assert "gatekeeper registry follower: quarantined events[" in hub.worker_log()
    enrolment = EventIssuer(mallory).issue("ConsentWithdrawn", scenario.coi, {
        "scope": "RESEARCH", "consent_document_ref": "DocumentReference/9", "reason": None,
        "granted_event_id": None}, occurred_at_us=builder.clock_us + 3, prev_hash=b"")
    hub.send([(enrolment.key, enrolment.wire)])
    wait_for(lambda: enrolment.envelope.event_id in refusals(hub), 60, "the refusal")
    assert refusals(hub)[enrolment.envelope.event_id]["reason_code"] == "UNREGISTERED_KEY"

    # -- a restarted worker rebuilds from the log and quarantines them again --
    hub.kill(worker, signal.SIGKILL)
    before = hub.worker_log().count("quarantined events[")
    worker = hub.start_worker()
    wait_for(lambda: hub.worker_log().count("quarantined events[") >= before + 2, 90,
             f"the restarted worker reports them again:\n{hub.worker_log()}")
    wait_for(lambda: "2 record(s) quarantined" in hub.worker_log(), 60,
             f"the restarted worker counts them:\n{hub.worker_log()}")

    # -- a projection rebuilt from the log marks them and lists no forged actor --
    out = hub.root / "rebuilt.duckdb"
    rebuild(hub.settings, out)
    con = connect(out, read_only=True)
    try:
        checks = dict(con.execute(
            "SELECT event_id, signature_check FROM log.envelopes WHERE event_id IN (?, ?)",
            [self_signed.envelope.event_id, promoted.envelope.event_id]).fetchall())
        actors = dict(con.execute("SELECT actor_id, roles FROM actors").fetchall())
        outcome = con.execute("SELECT outcome FROM audit(?) WHERE event_id = ?",
                              [REGISTRY_COI, self_signed.envelope.event_id]).fetchone()
    finally:
        con.close()
    assert checks == {self_signed.envelope.event_id: "UNREGISTERED_KEY",
                      promoted.envelope.event_id: "NOT_REGISTRAR"}
    assert "mallory" not in actors and sorted(actors[nurse.actor_id]) == ["NURSE"]
    assert outcome == ("QUARANTINED UNREGISTERED_KEY",)

    # -- a connector's reader quarantines them too --
    connector = Connector.open(hub.settings, "emr-kyoto01", "hl7", site_id="KYOTO01",
                               passphrase=PASSPHRASE.encode())
    with connector:
        report = connector.verifier.report
        assert report.by_code["UNREGISTERED_KEY"] >= 1 and report.by_code["NOT_REGISTRAR"] == 1
        assert "mallory" not in connector.registry.actors
        assert connector.registry.roles_of(nurse.actor_id) == frozenset({"NURSE"})

    # -- and the operator's check names them --
    result = CliRunner().invoke(pcvhub_cli, ["log", "check", "events"],
                                env={**hub.env, "COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "2 quarantined" in result.output
    assert "NOT_REGISTRAR" in result.output and "UNREGISTERED_KEY" in result.output
    # The restarted worker may still wait for the killed one's group session to expire;
    # a SIGTERM then waits for that too. Its work here is done.
    hub.kill(worker, signal.SIGKILL)


def test_two_registrations_published_in_a_row_both_land_on_the_registry_chain(hub) -> None:
    def keys(*args: str) -> str:
        result = CliRunner().invoke(pcvhub_cli, ["keys", *args],
                                    env={**hub.env, "COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.output

    keys("new", "hub-registrar", "--role", "REGISTRAR", "--anchor")
    # the gatekeeper's own registration goes out before any worker runs to judge it
    sent = keys("new", "hub-gatekeeper", "--role", "GATEKEEPER", "--publish", "--no-wait")
    assert "the gatekeeper judges it when it runs" in sent
    hub.start_worker()
    first = keys("new", "nurse-a", "--role", "NURSE", "--site", "KYOTO01", "--publish")
    second = keys("new", "nurse-b", "--role", "NURSE", "--site", "KYOTO01", "--publish")
    assert "accepted onto the registry chain" in first and "accepted onto" in second
    chain = [decode_envelope(r.value) for r in hub.read_all("events")
             if r.key == REGISTRY_COI.encode()]
    assert [decode_payload(e.schema_fingerprint, e.payload)[1]["actor_id"]
            for e in chain] == ["hub-gatekeeper", "nurse-a", "nurse-b"]
    assert chain[0].prev_hash == b""
    assert [e.prev_hash for e in chain[1:]] == [chain_digest(e) for e in chain[:-1]]
    assert refusals(hub) == {}
