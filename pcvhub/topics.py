"""The topic table: every Kafka topic pcvhub uses, as code (ground floor).

Connectors write to ingress topics; only the gatekeeper writes the canonical log.
The canonical log, the rejected topic and the alerts topic keep everything forever:
the log is the truth and projections are rebuilt from it. Registries of actors and
keys are compacted: the newest record per key id is the one that counts.

Ingress, canonical, rejected and alerts topics have the same partition count and are all
keyed by the chain-of-identity id with Kafka's murmur2 partitioner, so partition p of
every one of them holds the same therapies: the gatekeeper that owns ingress partition p
finds its past output in partition p of the outputs (see ``pcvhub.streams``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

FOREVER = -1
WEEK_MS = 7 * 24 * 3600 * 1000


class TopicRole(StrEnum):
    INGRESS = "ingress"
    CANONICAL = "canonical"
    REJECTED = "rejected"
    ALERTS = "alerts"
    REGISTRY = "registry"
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
        return conf


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("ingress.hl7", TopicRole.INGRESS, 6, WEEK_MS, "delete",
              "events signed by the HL7 v2 / MLLP connector"),
    TopicSpec("ingress.fhir", TopicRole.INGRESS, 6, WEEK_MS, "delete",
              "events signed by the FHIR R4 connector"),
    TopicSpec("ingress.files", TopicRole.INGRESS, 6, WEEK_MS, "delete",
              "events signed by the MES/LIMS file-drop connector"),
    TopicSpec("ingress.payer", TopicRole.INGRESS, 6, WEEK_MS, "delete",
              "events signed by the payer connector (remittances)"),
    TopicSpec("ingress.direct", TopicRole.INGRESS, 6, WEEK_MS, "delete",
              "events signed by partners that produce directly (lab, design, courier)"),
    TopicSpec("events", TopicRole.CANONICAL, 6, FOREVER, "delete",
              "the canonical log of accepted events, keyed by chain-of-identity id"),
    TopicSpec("rejected", TopicRole.REJECTED, 6, FOREVER, "delete",
              "refused events with original bytes, reason code and sentence"),
    TopicSpec("alerts", TopicRole.ALERTS, 6, FOREVER, "delete",
              "alerts raised by custody rules and turnaround timers"),
    TopicSpec("ledger", TopicRole.LEDGER, 1, FOREVER, "delete",
              "signed checkpoints of the transparency ledger (C2SP signed notes), its only "
              "writer being `pcvhub ledger run`; kept forever as evidence of what it showed"),
    TopicSpec("actors", TopicRole.REGISTRY, 1, FOREVER, "compact",
              "actor registrations keyed by actor id"),
    TopicSpec("keys", TopicRole.REGISTRY, 1, FOREVER, "compact",
              "key registrations, rotations and revocations keyed by key id"),
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


#: Header the gatekeeper puts on every record it writes (canonical, rejected, alerts):
#: the ingress position (``topic/partition/offset``) the record answers. The gatekeeper
#: rebuilds what it already answered from it; projections and audits show it.
SOURCE_HEADER = "pcvhub-source"
