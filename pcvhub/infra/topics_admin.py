"""Apply the topic table to a cluster: create what is missing, bring the configs of what
exists up to the table (a config added to the table reaches topics created before it)."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from pcvhub.config import Settings
from pcvhub.topics import TOPICS, Principal


class TopicSetupError(RuntimeError):
    """A topic of the table could not be created; the message names it and the cause."""


def deploy(settings: Settings, brokers: int) -> list[str]:
    """A deployment's topics (its prefix) and their ACLs, as the admin; idempotent.
    Returns the names of newly created topics."""
    from pcvhub.infra.security import ensure_acls

    admin = settings.as_principal(Principal.ADMIN)
    created = ensure_topics(admin, admin.bootstrap_servers, brokers)
    ensure_acls(admin)
    return created


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
    _align_configs(admin, settings, existing, brokers)
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


def _align_configs(admin: AdminClient, settings: Settings, existing: set[str],
                   brokers: int) -> None:
    resources = [
        ConfigResource(ResourceType.TOPIC, spec.name(settings.topic_prefix), incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in spec.configs(brokers).items()])
        for spec in TOPICS if spec.name(settings.topic_prefix) in existing
    ]
    if not resources:
        return
    for resource, future in admin.incremental_alter_configs(resources).items():
        try:
            future.result()
        except KafkaException as exc:
            raise TopicSetupError(f"could not apply the topic table's configs to "
                                  f"{resource.name}: {exc.args[0].str()}") from exc
