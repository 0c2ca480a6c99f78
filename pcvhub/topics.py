"""The topic table: every Kafka topic pcvhub uses, as code (ground floor).

Connectors write to ingress topics; only the gatekeeper writes the canonical log.
The canonical log, the rejected topic and the alerts topic keep everything forever:
the log is the truth and projections are rebuilt from it. Registries of actors and
keys are compacted: the newest record per key id is the one that counts.

Ingress, canonical, rejected and alerts topics have the same partition count and are all
keyed by the chain-of-identity id with Kafka's murmur2 partitioner, so partition p of
every one of them holds the same therapies: the gatekeeper that owns ingress partition p
finds its past output in partition p of the outputs (see ``pcvhub.streams``).

Who may write and read each topic is part of its row (``writers``, ``readers``: Kafka
principals, one per kind of process), and :func:`acl_table` derives the broker's ACLs from
the rows, so a topic cannot be added without saying who may touch it. The broker enforces
them (SASL_SSL with SCRAM-SHA-512 and the KRaft ``StandardAuthorizer``, see
``pcvhub.infra.security``); the log reader still verifies everything it folds, because an
operator with broker access is not bound by ACLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

FOREVER = -1
WEEK_MS = 7 * 24 * 3600 * 1000


class Principal(StrEnum):
    """The Kafka principals (SCRAM user names) of the kinds of pcvhub process. Each
    connector has its own, ``connector-<source>`` (:func:`connector_principal`)."""

    #: the operator: creates topics, ACLs and credentials (a super user of the broker)
    ADMIN = "admin"
    #: ``pcvhub worker``: the only writer of the canonical, rejected and alerts topics
    GATEKEEPER = "gatekeeper"
    #: ``pcvhub project``: reads the gatekeeper's outputs into DuckDB
    PROJECTIONS = "projections"
    #: read-only consumers: the dashboard, ``pcvhub log check``, audits, the demo's watcher
    READER = "reader"
    #: ``pcvhub ledger run``: reads the gatekeeper's outputs, the only writer of ``ledger``
    LEDGER = "ledger"


def connector_principal(source: str) -> str:
    """The principal of the connector that writes ``ingress.<source>``."""
    return f"connector-{source}"


class TopicRole(StrEnum):
    INGRESS = "ingress"
    CANONICAL = "canonical"
    REJECTED = "rejected"
    ALERTS = "alerts"
    SEALS = "seals"
    LEDGER = "ledger"


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name (without the deployment prefix), shape and retention."""

    suffix: str
    role: TopicRole
    partitions: int
    retention_ms: int
    cleanup_policy: str
    doc: str
    #: principals that may produce to it (Kafka WRITE)
    writers: tuple[str, ...]
    #: principals that may consume it (Kafka READ)
    readers: tuple[str, ...]

    def name(self, prefix: str) -> str:
        return f"{prefix}.{self.suffix}"

    def configs(self, brokers: int) -> dict[str, str]:
        """Topic-level configs; min.insync.replicas=2 once there are replicas to insist on."""
        conf = {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
        }
        if self.retention_ms == FOREVER:
            conf["retention.bytes"] = "-1"
        if brokers >= 3:
            conf["min.insync.replicas"] = "2"
        if self.role is TopicRole.INGRESS:
            # The broker stamps each ingress record with its append time: a fact no producer
            # chooses, which the gatekeeper can hold a record's signed times against.
            conf["message.timestamp.type"] = "LogAppendTime"
        return conf


#: the sources that produce through ingress, each through its own connector principal
INGRESS_SOURCES = {
    "hl7": "events signed by the HL7 v2 / MLLP connector",
    "fhir": "events signed by the FHIR R4 connector",
    "files": "events signed by the MES/LIMS file-drop connector",
    "payer": "events signed by the payer connector (remittances)",
    "loggers": "events signed by the logger-upload connector (couriers' and sites' data "
               "logger files)",
    "direct": "events signed by partners that produce directly (lab, design, courier, "
              "the registrar)",
}
_CONNECTORS = tuple(connector_principal(source) for source in INGRESS_SOURCES)
# Connectors read the canonical log (their chain heads) and the refusals of their events.
_OUTPUT_READERS = (Principal.GATEKEEPER, Principal.PROJECTIONS, Principal.READER,
                   Principal.LEDGER)

TOPICS: tuple[TopicSpec, ...] = (
    *(TopicSpec(f"ingress.{source}", TopicRole.INGRESS, 6, WEEK_MS, "delete", doc,
                writers=(connector_principal(source),),
                # its connector reads it too: the registrar waits for its own in-flight events
                readers=(Principal.GATEKEEPER, Principal.READER, connector_principal(source)))
      for source, doc in INGRESS_SOURCES.items()),
    TopicSpec("events", TopicRole.CANONICAL, 6, FOREVER, "delete",
              "the canonical log of accepted events, keyed by chain-of-identity id",
              writers=(Principal.GATEKEEPER,), readers=(*_OUTPUT_READERS, *_CONNECTORS)),
    TopicSpec("rejected", TopicRole.REJECTED, 6, FOREVER, "delete",
              "refused events with original bytes, reason code and sentence; a connector's "
              "refusals reach it through the connector's ingress topic, relayed by the "
              "gatekeeper",
              writers=(Principal.GATEKEEPER,), readers=(*_OUTPUT_READERS, *_CONNECTORS)),
    TopicSpec("alerts", TopicRole.ALERTS, 6, FOREVER, "delete",
              "alerts raised by custody rules and turnaround timers",
              writers=(Principal.GATEKEEPER,), readers=_OUTPUT_READERS),
    TopicSpec("seals", TopicRole.SEALS, 1, FOREVER, "delete",
              "the gatekeeper's signed batch heads (pcvhub.trust.seal): one hybrid signature "
              "per send step over the Merkle root of everything it wrote; each output "
              "record names its head's offset here. One partition: every record of every "
              "output partition points into it",
              # whoever reads an output topic reads the heads that seal it
              writers=(Principal.GATEKEEPER,), readers=(*_OUTPUT_READERS, *_CONNECTORS)),
    TopicSpec("ledger", TopicRole.LEDGER, 1, FOREVER, "delete",
              "signed checkpoints of the transparency ledger (C2SP signed notes), its only "
              "writer being `pcvhub ledger run`; kept forever as evidence of what it showed",
              # the note is its own proof: anyone may read it (auditors, witnesses)
              writers=(Principal.LEDGER,), readers=(Principal.LEDGER, Principal.READER)),
)


def topic_spec(suffix: str) -> TopicSpec:
    for spec in TOPICS:
        if spec.suffix == suffix:
            return spec
    raise KeyError(f"no topic {suffix!r} in the topic table; known: "
                   f"{', '.join(s.suffix for s in TOPICS)}")


def topic_name(suffix: str, prefix: str = "pcvhub") -> str:
    """Full topic name for a suffix of the table, e.g. ``topic_name("events")``."""
    return topic_spec(suffix).name(prefix)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java, librdkafka murmur2, aiokafka) picks
    for ``key``: positive murmur2 modulo the partition count."""
    from aiokafka.partitioner import murmur2  # the Java algorithm, shipped with Faust's client

    return (murmur2(key) & 0x7FFFFFFF) % partitions


#: Header the gatekeeper puts on every record it writes (canonical, rejected, alerts): its
#: seal (``pcvhub.trust.seal``): the verdict, the ingress position the record answers and
#: the broker's append time of it, where its batch's signed head stands on the seals topic
#: and its inclusion path. The log reader admits no output record without a valid one.
SEAL_HEADER = "pcvhub-seal"


# -- ACLs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One ALLOW binding of the broker's ACL table."""

    principal: str
    resource: str  # "topic" or "group"
    pattern: str  # "literal" or "prefixed"
    name: str
    operation: str  # Kafka operation: READ, WRITE, DESCRIBE, CREATE

    def __str__(self) -> str:
        star = "*" if self.pattern == "prefixed" else ""
        return f"User:{self.principal} {self.operation} {self.resource}:{self.name}{star}"


#: the group id of the one log reader's consumers: librdkafka wants one even for
#: assign-only consumers (and asks for its coordinator); nothing is ever committed to it
READER_GROUP = "pcvhub-log-reader"


def gatekeeper_group(prefix: str) -> str:
    """The gatekeeper's consumer group and Faust app id prefix (``<prefix>-gatekeeper``):
    its ACLs cover the group and the topics Faust makes for itself under that name."""
    return f"{prefix}-gatekeeper"


def principals() -> tuple[str, ...]:
    """Every principal the topic table names, and the admin."""
    named = {p for spec in TOPICS for p in (*spec.writers, *spec.readers)}
    return (Principal.ADMIN.value, *sorted(str(p) for p in named))


def acl_table(prefix: str) -> tuple[Grant, ...]:
    """The ACLs of one deployment (topic prefix), derived from the topic table.

    Writers get WRITE, readers READ, both DESCRIBE (metadata of the topic). The gatekeeper
    also gets its consumer group and the topics Faust declares for its own coordination
    (``<app id>-__assignor-__leader``), both named by :func:`gatekeeper_group`; every
    reader the log reader's group (:data:`READER_GROUP`). The admin
    needs no grant: it is a super user. Everything not granted is refused by the broker.
    """
    grants: list[Grant] = []
    for spec in TOPICS:
        name = spec.name(prefix)
        for principal in spec.writers:
            grants += [Grant(principal, "topic", "literal", name, op)
                       for op in ("WRITE", "DESCRIBE")]
        for principal in spec.readers:
            grants += [Grant(principal, "topic", "literal", name, op)
                       for op in ("READ", "DESCRIBE")]
    readers = sorted({str(p) for spec in TOPICS for p in spec.readers})
    grants += [Grant(p, "group", "literal", READER_GROUP, "READ") for p in readers]
    own = gatekeeper_group(prefix)
    grants += [Grant(Principal.GATEKEEPER, "group", "prefixed", own, "READ")]
    grants += [Grant(Principal.GATEKEEPER, "topic", "prefixed", own, op)
               for op in ("CREATE", "READ", "WRITE", "DESCRIBE")]
    return tuple(dict.fromkeys(grants))  # a reader that also writes keeps one DESCRIBE
