"""On the 3-broker cluster (RF 3, min.insync.replicas 2), a SIGKILLed broker loses nothing."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pcvhub.config import Settings
from pcvhub.infra.kafka import LocalKafka

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
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    assert len(admin.list_topics(timeout=10).brokers) == 3


def test_sigkill_of_the_controller_loses_no_acknowledged_message(cluster: LocalKafka) -> None:
    topic = f"test.failover.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    new = NewTopic(topic, num_partitions=6, replication_factor=3,
                   config={"min.insync.replicas": "2"})
    admin.create_topics([new])[topic].result()
    victim = admin.describe_cluster().result().controller.id

    producer = Producer({
        "bootstrap.servers": cluster.bootstrap_servers,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 120_000,
    })
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        if err is not None:
            failures.append(err.str())

    sent = [f"msg-{i:05d}".encode() for i in range(MESSAGES)]
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

    consumer = Consumer({
        "bootstrap.servers": cluster.bootstrap_servers,
        "group.id": f"verify-{topic}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    received: Counter[bytes] = Counter()
    idle = 0
    while sum(received.values()) < MESSAGES and idle < 60:
        batch = consumer.consume(1000, timeout=1.0)
        idle = 0 if batch else idle + 1
        for msg in batch:
            if not msg.error():
                received[msg.value()] += 1
    consumer.close()
    lost = set(sent) - set(received)
    duplicated = [v for v, n in received.items() if n > 1]
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {sorted(lost)[:5]}"
    assert not duplicated, f"{len(duplicated)} duplicated, e.g. {duplicated[:5]}"
    assert len(received) == MESSAGES
