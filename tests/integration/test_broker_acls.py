"""The real secured broker enforces the ACL table: every (principal, topic, operation) pair.

For one fresh deployment (its own topic prefix and ACLs), every principal tries to write
and to read every topic. What the table grants must succeed (the write is acknowledged,
the read returns the record the admin put there); everything else must be refused by the
broker with an authorization error, not time out or fail for another reason.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pcvhub.config import Settings
from pcvhub.infra.kafka import LocalKafka
from pcvhub.infra.security import acl_bindings
from pcvhub.streams.sandbox import Sandbox
from pcvhub.topics import READER_GROUP, TOPICS, Grant, Principal, acl_table, principals

pytestmark = pytest.mark.kafka

AUTHZ = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}


@pytest.fixture(scope="module")
def deployment(kafka: LocalKafka, settings: Settings, tmp_path_factory) -> Sandbox:
    return Sandbox.create(settings, kafka.bootstrap_servers, Path(tmp_path_factory.mktemp("acl")))


def _granted(prefix: str, principal: str, topic: str, operation: str) -> bool:
    return any(g.principal == principal and g.name == topic and g.operation == operation
               and g.pattern == "literal" for g in acl_table(prefix))


def _write(settings: Settings, topics: list[str], marker: bytes) -> dict[str, KafkaError | None]:
    outcome: dict[str, KafkaError | None] = {}
    producer = Producer(settings.librdkafka(**{"message.timeout.ms": 20_000, "linger.ms": 0}))

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        outcome[msg.topic()] = err

    for topic in topics:
        producer.produce(topic, key=marker, value=marker, partition=0, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "writes neither acknowledged nor refused within 30 s"
    return outcome


def _read(settings: Settings, topic: str, marker: bytes) -> KafkaError | None | bytes:
    """The error the broker answers, or the marker record read back from partition 0."""
    consumer = Consumer(settings.librdkafka(**{"group.id": READER_GROUP,
                                               "enable.auto.commit": False}))
    try:
        # a topic one may not read is not even described (librdkafka then never fetches)
        described = consumer.list_topics(topic, timeout=10).topics[topic]
        if described.error is not None:
            return described.error
        consumer.assign([TopicPartition(topic, 0, 0)])
        for _ in range(40):
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                return msg.error()
            if msg.value() == marker:
                return msg.value()
        return None
    finally:
        consumer.close()


def test_every_principal_may_do_what_the_table_grants_and_nothing_else(
    deployment: Sandbox,
) -> None:
    prefix = deployment.settings.topic_prefix
    topics = [spec.name(prefix) for spec in TOPICS]
    marker = uuid.uuid4().hex.encode()
    seeded = _write(deployment.admin, topics, marker)  # the admin is a super user
    assert seeded == dict.fromkeys(topics), seeded

    wrong: list[str] = []
    checked = 0
    for principal in principals():
        if principal == Principal.ADMIN:
            continue
        acting = deployment.settings.as_principal(principal)
        for topic, err in _write(acting, topics, uuid.uuid4().hex.encode()).items():
            checked += 1
            allowed = _granted(prefix, principal, topic, "WRITE")
            if allowed and err is not None:
                wrong.append(f"{principal} WRITE {topic}: granted but refused: {err.str()}")
            if not allowed and (err is None or err.code() not in AUTHZ):
                wrong.append(f"{principal} WRITE {topic}: not granted but {err or 'accepted'}")
        for topic in topics:
            checked += 1
            got = _read(acting, topic, marker)
            allowed = _granted(prefix, principal, topic, "READ")
            if allowed and got != marker:
                wrong.append(f"{principal} READ {topic}: granted but got {got!r}")
            if not allowed and not (isinstance(got, KafkaError) and got.code() in AUTHZ):
                wrong.append(f"{principal} READ {topic}: not granted but got {got!r}")
    assert checked == 2 * len(topics) * (len(principals()) - 1)
    assert not wrong, "\n".join(wrong)


def test_only_the_admin_creates_topics_and_changes_acls(deployment: Sandbox) -> None:
    name = f"{deployment.settings.topic_prefix}.sneaky-{uuid.uuid4().hex[:6]}"
    for principal in (Principal.GATEKEEPER, "connector-hl7", Principal.READER):
        admin = AdminClient(deployment.settings.as_principal(principal).librdkafka())
        future = admin.create_topics([NewTopic(name, 1, 1)])[name]
        with pytest.raises(KafkaException) as refused:
            future.result()
        assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        grant = Grant(principal, "topic", "literal", name, "WRITE")
        (acl_future,) = admin.create_acls(acl_bindings([grant])).values()
        with pytest.raises(KafkaException) as denied:
            acl_future.result()
        assert denied.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED


def test_a_consumer_group_other_than_the_gatekeepers_is_refused(deployment: Sandbox) -> None:
    prefix = deployment.settings.topic_prefix
    topic = f"{prefix}.ingress.direct"
    consumer = Consumer(deployment.settings.as_principal("connector-direct").librdkafka(**{
        "group.id": f"{prefix}-gatekeeper", "auto.offset.reset": "earliest"}))
    try:
        consumer.subscribe([topic])
        error = None
        for _ in range(40):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error():
                error = msg.error()
                break
        assert error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error
    finally:
        consumer.close()


def test_wrong_password_is_an_authentication_error(deployment: Sandbox) -> None:
    conf = deployment.settings.as_principal(Principal.READER).librdkafka(log_level=0)
    conf["sasl.password"] = "not-the-password"
    errors: list[KafkaError] = []
    conf["error_cb"] = errors.append
    admin = AdminClient(conf)
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(2)  # serves error_cb
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_credentials_reach_an_already_formatted_broker_through_the_internal_listener(
    kafka: LocalKafka, deployment: Sandbox,
) -> None:
    """The path for a data folder formatted before a principal existed: the credential is
    gone from the running broker, clients of that principal are refused, and ``secure()``
    (what every ``infra up`` runs) puts it back through the certificate listener."""
    from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion

    admin = AdminClient(deployment.admin.librdkafka())
    (future,) = admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(Principal.READER, ScramMechanism.SCRAM_SHA_512)]).values()
    future.result()
    try:
        reader = AdminClient(deployment.settings.as_principal(Principal.READER)
                             .librdkafka(log_level=0))
        with pytest.raises(KafkaException):
            reader.list_topics(timeout=5)
    finally:
        kafka.secure()
    reader = AdminClient(deployment.settings.as_principal(Principal.READER).librdkafka())
    assert reader.list_topics(timeout=10).brokers
