"""Issue 5's kill test: the runner is SIGKILLed twice while it consumes 100,000 events;
once it has caught up, the live file's digest equals that of a clean rebuild.

The log is written straight to the sandbox's topics (no gatekeeper in the way): a
registry, 100,000 events of whole valid therapies signed in Merkle batches, and
refusals and alerts signed by the gatekeeper's registered key on their own topics, so
offsets of all three topics are committed with the rows. Events are still being written
when the runner is killed.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pcvhub.projections.digest import digest_file
from pcvhub.projections.projector import TOPIC_ROLES
from pcvhub.projections.store import connect
from pcvhub.streams.sandbox import Sandbox
from pcvhub.topics import topic_name
from pcvhub.trust.issuer import EventIssuer, IssuedEvent

from ..unit.sealing import SealedWriter
from ..unit.test_projection_scenario import signed_cohort
from ..unit.therapy_builder import DAY_US, T0_US, Hub
from .test_projection_runner import RunnerProcess, cli

pytestmark = pytest.mark.kafka

EVENTS = 100_000
KILL_AFTER = 30_000  # records projected by one life of the runner before it is killed
GATEKEEPER_RECORDS = 500  # refusals, and as many alerts


@pytest.fixture
def hub(kafka, settings, tmp_path):
    isolated = Sandbox.create(settings, kafka.bootstrap_servers, tmp_path)
    yield isolated
    isolated.stop_all()


def log_ends(sandbox: Sandbox) -> dict[tuple[str, int], int]:
    """The end offset of every partition that holds records, per topic role."""
    consumer = Consumer(sandbox.admin.librdkafka(**{"group.id": "ends"}))
    try:
        ends = {}
        for role in TOPIC_ROLES:
            name = topic_name(role, sandbox.settings.topic_prefix)
            for p in consumer.list_topics(name, timeout=10).topics[name].partitions:
                high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                if high > 0:
                    ends[(role, p)] = high
        return ends
    finally:
        consumer.close()


def gatekeeper_records(issuer: EventIssuer, cohort: list[IssuedEvent], rng: random.Random,
                       count: int = GATEKEEPER_RECORDS) -> list[tuple[str, IssuedEvent]]:
    """Refusals (of a copy of an accepted event) and timer alerts for random therapies."""
    records = []
    for n, event in enumerate(rng.sample(cohort, count)):
        env = event.envelope
        records.append(("rejected", issuer.issue("EventRejected", env.coi, {
            "rejected_event_id": env.event_id, "rejected_event_type": env.event_type,
            "source_topic": "ingress.direct", "source_partition": 0, "source_offset": n,
            "rule": "R8", "reason_code": "DUPLICATE_EVENT", "reason": "sent twice",
            "original": event.wire}, prev_hash=b"")))
        records.append(("alerts", issuer.issue("AlertRaised", env.coi, {
            "alert_id": f"alert-{n}", "severity": "WARNING", "rule": "TIMER",
            "code": "FOLLOW_UP_DUE", "message": "no outcome yet",
            "subject_event_id": f"{env.coi}/FOLLOW_UP_DUE/{env.event_id}",
            "due_at": env.occurred_at_us + 42 * DAY_US}, prev_hash=b"")))
    return records


# The longest drill of the suite (100k sealed events written while the runner is killed
# twice: minutes): out of the default run to keep CI lean; `pytest -m slow` runs it.
@pytest.mark.slow
def test_two_sigkills_while_consuming_100k_events_end_in_the_rebuilds_digest(
        hub: Sandbox) -> None:
    builder = Hub()
    gatekeeper = hub.install_identities(builder.registrar.issuer.signer,
                                        valid_from_us=T0_US - 365 * DAY_US)
    builder.register_gatekeeper(gatekeeper)
    cast = builder.register_cast("kill")
    cohort = signed_cohort(builder, cast, EVENTS)
    rng = random.Random(11)
    extra = gatekeeper_records(EventIssuer(gatekeeper), cohort, rng)
    prefix = hub.settings.topic_prefix
    producer = Producer(hub.admin.producer(**{"linger.ms": 5}))
    # the log as a gatekeeper writes it (sealed in batches), put there by the admin
    writer = SealedWriter(producer, prefix, gatekeeper)

    def produce(topic: str, event: IssuedEvent) -> None:
        writer.write(topic, event.key, event.wire)

    for event in builder.registry_log:
        writer.write("events", event.coi.encode(), event.raw)
    writer.flush(30)
    total = len(builder.registry_log) + len(cohort) + len(extra)

    chunks = [cohort[i:i + 5000] for i in range(0, len(cohort), 5000)]
    written = threading.Event()

    def write_all() -> None:
        spread = iter(extra)
        for chunk in chunks:
            for event in chunk:
                produce("events", event)
            for topic, record in [next(spread) for _ in range(len(extra) // len(chunks))]:
                produce(topic, record)
            writer.flush(60)
            time.sleep(0.3)
        for topic, record in spread:
            produce(topic, record)
        writer.flush(60)
        written.set()

    writing = threading.Thread(target=write_all)
    writing.start()
    live = hub.root / "live.duckdb"
    options = ("--publish-every", "0", "--report-every", "0.2", "--batch-size", "1000")
    projected_by_life = []
    for life in (1, 2):
        runner = RunnerProcess(hub, live, *options, name=f"runner-{life}")
        lines = runner.wait_for(lambda lines: bool(lines) and lines[-1][0] >= KILL_AFTER, 300)
        time.sleep(rng.uniform(0, 0.3))  # somewhere in the next batch
        assert runner.stop(signal.SIGKILL) == -signal.SIGKILL
        projected_by_life.append(lines[-1][0])
    writing.join(300)
    assert written.is_set(), "the writer did not finish"
    assert not writing.is_alive()

    last = RunnerProcess(hub, live, *options, "--until-end", name="runner-3")
    assert last.proc.wait(600) == 0, last.output()
    assert "0 behind" in last.output()
    assert sum(projected_by_life) >= 2 * KILL_AFTER  # both kills came mid-stream

    con = connect(live, read_only=True)
    try:
        offsets = dict(((t, p), o) for t, p, o in con.execute(
            "SELECT topic, partition, next_offset FROM log.offsets").fetchall())
        counts = con.execute("SELECT count(*), count(DISTINCT (log_topic, event_id)) "
                             "FROM log.envelopes").fetchone()
        unverified = con.execute("SELECT count(*) FROM log.envelopes "
                                 "WHERE signature_check <> 'VERIFIED'").fetchone()[0]
    finally:
        con.close()
    assert offsets == log_ends(hub)  # every partition read to its end, as committed
    assert counts == (total, total)  # nothing lost, nothing twice
    assert unverified == 0

    rebuilt = hub.root / "rebuilt.duckdb"
    cli(hub, "projections", "rebuild", "--out", rebuilt)
    assert digest_file(rebuilt) == digest_file(live)  # every table, row by row
