"""The local broker is a real Apache Kafka: clients round-trip, topics match the table."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from pcvhub.config import Settings
from pcvhub.infra.kafka import LocalKafka
from pcvhub.infra.topics_admin import ensure_topics
from pcvhub.topics import (
    TOPICS,
    Principal,
    connector_principal,
    gatekeeper_group,
    partition_for,
    topic_name,
)

pytestmark = pytest.mark.kafka


def test_produce_consume_round_trip(kafka: LocalKafka, settings: Settings) -> None:
    topic = topic_name("ingress.direct", settings.topic_prefix)
    marker = uuid.uuid4().hex
    # the direct partners' connector writes it; the gatekeeper reads it, in its own group
    producer = Producer(kafka.client_settings(connector_principal("direct")).librdkafka())
    sent = [f"{marker}-{i}".encode() for i in range(50)]
    for value in sent:
        producer.produce(topic, key=marker.encode(), value=value)
    assert producer.flush(15) == 0

    consumer = Consumer(kafka.client_settings(Principal.GATEKEEPER).librdkafka(**{
        "group.id": f"{gatekeeper_group(settings.topic_prefix)}-test-{marker}",
        "auto.offset.reset": "earliest",
    }))
    consumer.subscribe([topic])
    received: list[bytes] = []
    try:
        for _ in range(200):
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.key() == marker.encode():
                received.append(msg.value())
            if len(received) == len(sent):
                break
    finally:
        consumer.close()
    # One key lands in one partition, so order is kept too.
    assert received == sent


def test_topic_table_is_applied_idempotently(kafka: LocalKafka, settings: Settings) -> None:
    admin_settings = kafka.client_settings(Principal.ADMIN)
    assert ensure_topics(admin_settings, kafka.bootstrap_servers, brokers=1) == []
    admin = AdminClient(admin_settings.librdkafka())
    metadata = admin.list_topics(timeout=10)
    for spec in TOPICS:
        name = spec.name(settings.topic_prefix)
        assert name in metadata.topics, f"{name} missing"
        assert len(metadata.topics[name].partitions) == spec.partitions

    resources = [ConfigResource("topic", topic_name(s, settings.topic_prefix))
                 for s in ("events", "ingress.hl7")]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    events = configs[topic_name("events", settings.topic_prefix)]
    assert events["retention.ms"].value == "-1"
    assert events["cleanup.policy"].value == "delete"
    assert events["message.timestamp.type"].value == "CreateTime"
    # the broker's append time on ingress: a time no producer chooses
    ingress = configs[topic_name("ingress.hl7", settings.topic_prefix)]
    assert ingress["message.timestamp.type"].value == "LogAppendTime"


def test_status_reports_the_running_node(kafka: LocalKafka) -> None:
    (node,) = kafka.status()
    assert node.alive and node.answering
    assert node.log_file.exists() and node.log_file.stat().st_size > 0


def test_a_broker_that_dies_at_start_is_reported_with_its_log(
    kafka: LocalKafka, settings: Settings, tmp_path
) -> None:
    from dataclasses import replace

    from pcvhub.infra.kafka import InfraError

    # A heap too small for the JVM makes the node exit at once, like a real misconfiguration.
    broken = replace(settings, data_dir=tmp_path, kafka_heap="1k", kafka_base_port=18992)
    with pytest.raises(InfraError, match="exited during start-up; last lines of"):
        LocalKafka(broken).up(timeout=30)


def test_confluent_and_aiokafka_place_a_coi_key_in_the_same_partition(
    kafka: LocalKafka, settings: Settings
) -> None:
    """The gatekeeper (aiokafka) and connectors (librdkafka) must agree on partitions."""
    from aiokafka.partitioner import DefaultPartitioner

    topic = topic_name("ingress.direct", settings.topic_prefix)
    producer = Producer(kafka.client_settings(connector_principal("direct")).producer())
    placed: dict[bytes, int] = {}

    def on_delivery(err: object, msg: object) -> None:
        assert err is None
        placed[msg.key()] = msg.partition()  # type: ignore[attr-defined]

    keys = [f"PCV-SITE1-2026-{i:012X}".encode() for i in range(40)] + [b"pcvhub:registry"]
    for key in keys:
        producer.produce(topic, key=key, value=b"x", on_delivery=on_delivery)
    assert producer.flush(15) == 0
    partitions = list(range(6))
    expected = {k: DefaultPartitioner()(k, partitions, partitions) for k in keys}
    assert placed == expected
    # ... and the project's own function (used to find the registry's partition) agrees.
    assert placed == {k: partition_for(k, 6) for k in keys}
    assert len(set(placed.values())) > 1  # the keys really spread
