"""From log records to rows: the pure part of the projection runner (no Kafka, no DuckDB).

``Projector.project`` turns a batch of records into the rows of every ``log`` table and
the offsets they advance, without touching its own memory: the therapies' folds move
only in the batch (``RowBatch.progress``) until ``committed`` is called after the
transaction that wrote the batch. A batch that fails to commit therefore leaves the
projector exactly as the file is, and a restarted runner that reloads both from the
file carries on where the last commit ended.

Rows depend on the record and, for canonical events, on the earlier events of the same
chain only (same partition, log order), never on how partitions or topics interleave.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pcvhub.projections import lifecycle
from pcvhub.projections.lifecycle import TherapyProgress
from pcvhub.projections.schema import (
    ENVELOPES,
    RECORD_COLUMNS,
    REJECTED_ENVELOPES,
    STAGE_ENTRIES,
    UNREADABLE,
    Table,
    payload_tables,
)
from pcvhub.projections.verification import SignatureCheck
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import DecodeError, decode_envelope, decode_payload
from pcvhub.schemas.envelope import Envelope
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.registry import REGISTRY_COI

CANONICAL = "events"
REJECTED = "rejected"
ALERTS = "alerts"
#: the topics a projection reads, by role (suffixes of the topic table)
TOPIC_ROLES = (CANONICAL, REJECTED, ALERTS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OffsetRegression(RuntimeError):
    """A record older than the committed position arrived: it would be projected twice."""

    def __init__(self, topic: str, partition: int, offset: int, next_offset: int) -> None:
        super().__init__(f"{topic}[{partition}] delivered offset {offset}, but offsets up to "
                         f"{next_offset - 1} are already projected; refusing to project it twice")


@dataclass(frozen=True)
class LogRecord:
    """One record as read: its topic role, position, key, bytes and ingress header."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    source: str | None = None


@dataclass
class RowBatch:
    """Rows per table, the folds the batch moved and the offsets it reaches."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    progress: dict[str, TherapyProgress] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    records: int = 0

    def add(self, table: Table, row: tuple[Any, ...]) -> None:
        self.rows.setdefault(table.name, []).append(row)


def from_us(us: int) -> datetime:
    """An aware UTC datetime from epoch microseconds, exactly (no float on the way)."""
    return _EPOCH + timedelta(microseconds=us)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Projector:
    """Projects records; holds the committed folds and positions between batches.

    :param checker: re-verifies signatures (and folds the registry chain it verifies).
    :param progress: the committed fold of every chain, by CoI (from the file).
    :param positions: the committed next offset per (topic role, partition).
    """

    def __init__(self, checker: SignatureCheck, progress: dict[str, TherapyProgress],
                 positions: dict[tuple[str, int], int]) -> None:
        self.checker = checker
        self.progress = progress
        self.positions = positions
        self.catalog = load_catalog()
        self.tables = payload_tables()
        self._payload_fields = {
            short: [c.name for c in table.columns[len(RECORD_COLUMNS):]]
            for short, table in self.tables.items()}

    def project(self, records: Iterable[LogRecord]) -> RowBatch:
        batch = RowBatch()
        self.checker.new_batch()
        for record in records:
            expected = batch.offsets.get((record.topic, record.partition),
                                         self.positions.get((record.topic, record.partition), 0))
            if record.offset < expected:
                raise OffsetRegression(record.topic, record.partition, record.offset, expected)
            self._project_one(record, batch)
            batch.offsets[(record.topic, record.partition)] = record.offset + 1
            batch.records += 1
        return batch

    def committed(self, batch: RowBatch) -> None:
        """The batch is in the file: make its folds and positions the projector's own."""
        self.progress.update(batch.progress)
        self.positions.update(batch.offsets)

    # -- one record ---------------------------------------------------------------------

    def _project_one(self, record: LogRecord, batch: RowBatch) -> None:
        position = (record.topic, record.partition, record.offset)
        raw = record.value or b""
        try:
            env = decode_envelope(raw)
            full_name, payload = decode_payload(env.schema_fingerprint, env.payload,
                                                env.event_type)
        except DecodeError as exc:
            key = (record.key or b"").decode("utf-8", "replace")
            batch.add(UNREADABLE, (*position, key, sha256_hex(raw), raw, str(exc)))
            return
        short = self.catalog.short_name(full_name)
        outcome = self.checker.check(env)
        self.checker.fold(env, outcome)
        chain_seq = chain_link = None
        digest = chain_digest(env)
        if record.topic == CANONICAL:
            chain_seq, chain_link = self._chain(env, short, payload, digest, record, batch)
        batch.add(ENVELOPES, (
            *position, env.event_id, short, env.coi, from_us(env.occurred_at_us),
            from_us(env.signed_at_us), env.producer, env.key_id, env.meaning.value,
            bytes(env.prev_hash).hex(), digest.hex(), chain_seq, chain_link,
            bytes(env.schema_fingerprint).hex(),
            None if env.batch_proof is None else bytes(env.batch_proof.root).hex(),
            sha256_hex(raw), record.source, outcome[0], outcome[1]))
        fields = self._payload_fields[short]
        batch.add(self.tables[short], (
            *position, env.event_id, env.coi, from_us(env.occurred_at_us), env.producer,
            *(payload.get(name) for name in fields)))
        if record.topic == REJECTED and short == "EventRejected":
            batch.add(REJECTED_ENVELOPES, (*position, *_claimed(payload["original"])))

    def _chain(self, env: Envelope, short: str, payload: dict[str, Any], digest: bytes,
               record: LogRecord, batch: RowBatch) -> tuple[int, str]:
        """Advance the chain (and, for a therapy, the lifecycle) of a canonical event."""
        progress = batch.progress.get(env.coi)
        if progress is None:
            committed = self.progress.get(env.coi)
            progress = committed.copy() if committed is not None else TherapyProgress()
            batch.progress[env.coi] = progress
        prev = bytes(env.prev_hash).hex()
        if progress.chain_seq == 0:
            link = "GENESIS" if prev == "" else "BROKEN"
        else:
            link = "LINKED" if prev == progress.head else "BROKEN"
        progress.chain_seq += 1
        progress.head = digest.hex()
        if env.coi != REGISTRY_COI:
            entered = lifecycle.advance(progress, short, payload, env.producer)
            if entered is not None:
                batch.add(STAGE_ENTRIES, (record.partition, record.offset, env.coi,
                                          entered.value, from_us(env.occurred_at_us),
                                          env.event_id, short))
        return progress.chain_seq, link


def _claimed(original: bytes) -> tuple[Any, ...]:
    """What a refused record's envelope claims (id, type, CoI, time, signer, key), or why
    it cannot be read."""
    try:
        env = decode_envelope(original)
    except DecodeError as exc:
        return None, None, None, None, None, None, str(exc)
    short = env.event_type.rsplit(".", 1)[-1]
    return (env.event_id, short, env.coi, from_us(env.occurred_at_us), env.producer,
            env.key_id, None)

