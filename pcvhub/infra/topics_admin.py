"""Apply the topic table to a cluster: create what is missing, leave what exists."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from pcvhub.config import Settings
from pcvhub.topics import TOPICS


class TopicSetupError(RuntimeError):
    """A topic of the table could not be created; the message names it and the cause."""


def ensure_topics(settings: Settings, bootstrap_servers: str, brokers: int) -> list[str]:
    """Create the table's topics idempotently; return the names that were newly created."""
    admin = AdminClient(settings.librdkafka(**{"bootstrap.servers": bootstrap_servers}))
    existing = set(admin.list_topics(timeout=10).topics)
    replication = min(3, brokers)
    wanted = [
        NewTopic(
            spec.name(settings.topic_prefix),
            num_partitions=spec.partitions,
            replication_factor=replication,
            config=spec.configs(brokers),
        )
        for spec in TOPICS
        if spec.name(settings.topic_prefix) not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=30).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if err.name() == "TOPIC_ALREADY_EXISTS":  # another process won the race
                continue
            raise TopicSetupError(f"could not create topic {name}: {err.str()}") from exc
    return created
