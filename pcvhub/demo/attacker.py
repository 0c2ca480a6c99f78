"""The demo plays the attacker once, against the broker's ACLs.

Mallory holds the HL7 connector's Kafka credentials (a compromised interface engine) and
tries two writes the hub must never take: her own registration as a registrar, signed by
herself and linked onto the registry chain's head, straight onto the canonical topic
(skipping the gatekeeper, R1-R9); and an event onto the payer connector's ingress topic.
The broker refuses both before any byte is stored; what it answered is the evidence the
summary shows. (Someone who bypasses the broker's ACLs, an operator with file access, is
met by the log reader instead: a registration no registrar signed is quarantined, not
folded; ``tests/integration/test_forged_registry.py`` plays that one.)
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from pcvhub.config import Settings
from pcvhub.topics import connector_principal, topic_name
from pcvhub.trust.issuer import EventIssuer, now_us
from pcvhub.trust.registry import REGISTRY_COI, Actor, registration_payload
from pcvhub.trust.signing import EventSigner, HybridKeyPair

#: whose credentials Mallory stole
STOLEN = connector_principal("hl7")


@dataclass(frozen=True)
class Attempt:
    """One write the attacker tried, and the broker's answer."""

    attack: str
    principal: str
    topic: str
    refused: bool
    answer: str  # the broker's error, or "accepted"


def _try_write(settings: Settings, topic: str, key: bytes, value: bytes) -> KafkaError | None:
    answers: list[KafkaError | None] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        answers.append(err)

    producer = Producer(settings.librdkafka(**{"message.timeout.ms": 20_000, "linger.ms": 0,
                                               "log_level": 0}))
    producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    producer.flush(30)
    return answers[0] if answers else KafkaError(KafkaError._MSG_TIMED_OUT)


def play(settings: Settings, registry_head: bytes) -> list[Attempt]:
    """Both attacks, as :data:`STOLEN`; returns what the broker answered to each."""
    mallory_settings = settings.as_principal(STOLEN)
    mallory = EventSigner("mallory", "mallory-k1", HybridKeyPair.generate())
    issued = EventIssuer(mallory)
    forged = issued.issue("ActorRegistered", REGISTRY_COI, registration_payload(
        Actor("mallory", "Mallory", frozenset({"REGISTRAR", "PHYSICIAN"}), "HUB"),
        "mallory-k1", mallory.keys.public, now_us()), prev_hash=registry_head)
    attempts = []
    for attack, topic, event in (
        ("a forged registrar registration, straight onto the canonical log",
         topic_name("events", settings.topic_prefix), forged),
        ("the HL7 connector writing the payer connector's ingress topic (the same record)",
         topic_name("ingress.payer", settings.topic_prefix), forged),
    ):
        err = _try_write(mallory_settings, topic, event.key, event.wire)
        refused = err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        attempts.append(Attempt(attack, STOLEN, topic, refused,
                                "accepted" if err is None else err.str()))
    return attempts
