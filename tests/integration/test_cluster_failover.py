"""On the 3-broker cluster (RF 3, min.insync.replicas 2), a SIGKILLed broker loses nothing.

The cluster is secured like the single node: a connector principal writes its ingress
topic over SASL_SSL and the gatekeeper principal reads it, replication runs on the
certificate-authenticated internal listener."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from pcvhub.config import Settings
from pcvhub.infra.kafka import LocalKafka
from pcvhub.topics import Principal, connector_principal, gatekeeper_group, topic_name

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]

MESSAGES = 20_000


@pytest.fixture(scope="module")
def cluster(settings: Settings) -> Iterator[LocalKafka]:
    cluster = LocalKafka(settings, brokers=3)
    was_up = cluster.is_up()
    cluster.up(timeout=180)
    yield cluster
    if not was_up:
        cluster.down()


def test_status_shows_three_brokers(cluster: LocalKafka) -> None:
    nodes = cluster.status()
    assert [n.node_id for n in nodes] == [1, 2, 3]
    assert all(n.answering for n in nodes)
    admin = AdminClient(cluster.client_settings(Principal.ADMIN).librdkafka())
    assert len(admin.list_topics(timeout=10).brokers) == 3


def test_sigkill_of_the_controller_loses_no_acknowledged_message(
    cluster: LocalKafka, settings: Settings
) -> None:
    topic = topic_name("ingress.direct", settings.topic_prefix)
    run = uuid.uuid4().hex[:8].encode()  # this run's records, on a topic that keeps others
    admin = AdminClient(cluster.client_settings(Principal.ADMIN).librdkafka())
    described = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(len(p.replicas) == 3 for p in described.partitions.values())
    victim = admin.describe_cluster().result().controller.id

    producer = Producer(cluster.client_settings(connector_principal("direct")).producer(**{
        "linger.ms": 5,
        "message.timeout.ms": 120_000,
    }))
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        if err is not None:
            failures.append(err.str())

    sent = [run + f"-msg-{i:05d}".encode() for i in range(MESSAGES)]
    for i, value in enumerate(sent):
        if i == MESSAGES // 4:
            producer.flush(30)
            cluster.kill(victim)  # SIGKILL: no controlled shutdown, no flush
        while True:
            try:
                producer.produce(topic, key=value[-2:], value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0, "messages still in flight after 120 s"
    assert failures == []
    assert cluster.pid(victim) is None, "the killed broker is still running"

    consumer = Consumer(cluster.client_settings(Principal.GATEKEEPER).librdkafka(**{
        "group.id": f"{gatekeeper_group(settings.topic_prefix)}-verify-{run.decode()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }))
    consumer.subscribe([topic])
    received: Counter[bytes] = Counter()
    idle = 0
    while sum(received.values()) < MESSAGES and idle < 60:
        batch = consumer.consume(1000, timeout=1.0)
        idle = 0 if batch else idle + 1
        for msg in batch:
            if not msg.error() and msg.value().startswith(run):
                received[msg.value()] += 1
    consumer.close()
    lost = set(sent) - set(received)
    duplicated = [v for v, n in received.items() if n > 1]
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {sorted(lost)[:5]}"
    assert not duplicated, f"{len(duplicated)} duplicated, e.g. {duplicated[:5]}"
    assert len(received) == MESSAGES
