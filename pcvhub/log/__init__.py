"""The one log reader: every record read back from Kafka is decoded and verified first.

Kafka is storage, not authority. Anyone who reaches the broker can write bytes to any
topic, so nothing in pcvhub folds a record (into the key registry, a therapy's case, a
projection, a connector's patient index) because it *is* on a topic: it folds it because
this package verified it.

Open ``verify.py`` first: ``LogVerifier.admit`` is the whole policy (decode, key
registration, both signatures, the gatekeeper's seal on its output topics, the
per-therapy hash chain, registrar-only registry events) and it needs no Kafka.
``reader.py`` is the only Kafka read loop: read a topic to its end (``read_verified``),
follow it in a thread (``LogFollower``), and read the registry chain ahead of the other
partitions (``RegistryLookahead``). ``check.py`` is ``pcvhub log check TOPIC``.
"""

from pcvhub.log.verify import (
    LogPosition,
    LogVerifier,
    Quarantined,
    QuarantineReport,
    RawRecord,
    VerifiedRecord,
)

__all__ = ["LogPosition", "LogVerifier", "Quarantined", "QuarantineReport", "RawRecord",
           "VerifiedRecord"]
