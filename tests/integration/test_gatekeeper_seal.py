"""Accepted by the gatekeeper, or merely present on the log: the seal tells them apart.

Given a running gatekeeper worker that accepted the first events of a therapy, when
someone with broker access (the admin, a super user the ACLs do not bind) writes the
therapy's next event, signed by its legitimate actor and linked onto the true chain head,
straight to ``events``, then:

- every record the gatekeeper wrote carries a seal the log reader verifies, and names the
  ingress record it answers (from the seal, not an unsigned header);
- the admin's record is quarantined ``UNSEALED`` by a projection rebuilt from the log, and
  the audit trail (the view and ``pcvhub projections audit``) shows it as not accepted by
  the gatekeeper, with the reason;
- the same event sent through ingress afterwards is accepted: the unsealed copy moved no
  reader's chain head, so the gatekeeper's own copy links where it should;
- ``pcvhub log check events`` names the unsealed record and exits 1.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from pcvhub.cli import app as pcvhub_cli
from pcvhub.log.reader import deployment_verifier, read_verified
from pcvhub.log.verify import VerifiedRecord
from pcvhub.projections.runner import rebuild
from pcvhub.projections.store import connect
from pcvhub.streams.sandbox import Sandbox
from pcvhub.topics import topic_name
from pcvhub.trust.seal import SealVerdict

from ..unit.therapy_builder import Hub, TherapyScenario

pytestmark = pytest.mark.kafka


@pytest.fixture
def hub(kafka, settings, tmp_path):
    isolated = Sandbox.create(settings, kafka.bootstrap_servers, tmp_path)
    yield isolated
    isolated.stop_all()


def test_a_record_the_admin_wrote_to_events_is_not_accepted_by_the_gatekeeper(hub) -> None:
    builder = Hub()
    builder.deploy_gatekeeper(hub)
    scenario = TherapyScenario(builder)
    first = scenario.run_until("collect")
    worker = hub.start_worker()
    registrations = [(e.coi.encode(), e.raw) for e in builder.registry_log]
    hub.send(registrations)
    assert hub.wait_answered(len(registrations), 120, worker) == len(registrations), \
        hub.worker_log()
    hub.send([(e.coi.encode(), e.raw) for e in first])
    done = len(registrations) + len(first)
    assert hub.wait_answered(done, 120, worker) == done, hub.worker_log()

    # -- the attack: a legitimately signed, correctly linked event, past the gatekeeper --
    [slipped] = scenario.run_until("hand_over_sample")[-1:]
    producer = Producer(hub.admin.producer())
    producer.produce(topic_name("events", hub.settings.topic_prefix),
                     key=slipped.coi.encode(), value=slipped.raw)
    assert producer.flush(30) == 0

    # -- what the gatekeeper wrote is sealed and names its ingress record --
    verifier = deployment_verifier(hub.settings.as_principal("reader"), "test")
    try:
        outcomes = list(read_verified(hub.settings.as_principal("reader"), "events",
                                      verifier))
    finally:
        verifier.close()
    admitted = [o for o in outcomes if isinstance(o, VerifiedRecord)]
    assert {o.event_id for o in admitted} == {e.event_id for e in [*builder.registry_log,
                                                                   *first]}
    assert all(o.seal is not None and o.seal.verdict is SealVerdict.ACCEPTED
               and o.event.source is not None
               and o.event.source.topic == topic_name("ingress.direct",
                                                      hub.settings.topic_prefix)
               and o.event.source.appended_at_us is not None for o in admitted)
    [unsealed] = [o for o in outcomes if not isinstance(o, VerifiedRecord)]
    assert unsealed.code == "UNSEALED" and unsealed.envelope is not None
    assert unsealed.envelope.event_id == slipped.event_id

    # -- the same event through ingress is accepted: nothing of the copy was folded --
    hub.send([(slipped.coi.encode(), slipped.raw)])
    # (the count of answers on the outputs includes the admin's copy)
    assert hub.wait_answered(done + 2, 120, worker) == done + 2, hub.worker_log()
    assert [r.value for r in hub.read_all("events")].count(slipped.raw) == 2
    assert not hub.read_all("rejected")

    # -- the projection and its audit trail show the copy as not accepted --
    out = hub.root / "rebuilt.duckdb"
    rebuild(hub.settings, out)
    con = connect(out, read_only=True)
    try:
        rows = con.execute(
            "SELECT outcome, detail, log_offset FROM audit(?) WHERE event_id = ? "
            "ORDER BY log_offset", [scenario.coi, slipped.event_id]).fetchall()
    finally:
        con.close()
    (copy_outcome, copy_detail, _), (own_outcome, _, _) = rows
    assert copy_outcome == "QUARANTINED UNSEALED (not accepted by the gatekeeper)"
    assert "carries no pcvhub-seal header" in copy_detail
    assert own_outcome == "ACCEPTED"
    cli = CliRunner()
    env = {**hub.env, "COLUMNS": "250"}
    shown = cli.invoke(pcvhub_cli, ["projections", "audit", scenario.coi, "--db", str(out)],
                       env=env)
    assert shown.exit_code == 0, shown.output
    assert "not accepted by the gatekeeper" in shown.output
    checked = cli.invoke(pcvhub_cli, ["log", "check", "events"], env=env)
    assert checked.exit_code == 1, checked.output
    assert "UNSEALED" in checked.output and "1 quarantined" in checked.output
