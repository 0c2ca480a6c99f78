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

from pcvhub.log.verify import (
    ALERTS,
    CANONICAL,
    REJECTED,
    LogPosition,
    LogVerifier,
    Quarantined,
    RawRecord,
    VerifiedRecord,
)
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
from pcvhub.schemas.codec import DecodeError, decode_envelope
from pcvhub.schemas.envelope import Envelope
from pcvhub.schemas.policy import advance
from pcvhub.trust.canonical import chain_digest
from pcvhub.trust.registry import REGISTRY_COI

#: records whose signatures are checked ahead together, while the chunk before is projected
CHECK_CHUNK = 250
#: signature_check of a record the log reader admitted
VERIFIED = "VERIFIED"
#: the topics a projection reads, by role (suffixes of the topic table)
TOPIC_ROLES = (CANONICAL, REJECTED, ALERTS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OffsetRegression(RuntimeError):
    """A record older than the committed position arrived: it would be projected twice."""

    def __init__(self, topic: str, partition: int, offset: int, next_offset: int) -> None:
        super().__init__(f"{topic}[{partition}] delivered offset {offset}, but offsets up to "
                         f"{next_offset - 1} are already projected; refusing to project it twice")


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

    :param verifier: the one log reader's verifier (pcvhub.log): it admits or quarantines
        each record and folds the registry chain; resumed with the file's chain heads.
    :param progress: the committed fold of every chain, by CoI (from the file).
    :param positions: the committed next offset per (topic role, partition).
    """

    def __init__(self, verifier: LogVerifier, progress: dict[str, TherapyProgress],
                 positions: dict[tuple[str, int], int]) -> None:
        self.verifier = verifier
        self.progress = progress
        self.positions = positions
        self.tables = payload_tables()
        self._payload_fields = {
            short: [c.name for c in table.columns[len(RECORD_COLUMNS):]]
            for short, table in self.tables.items()}

    def project(self, records: Iterable[RawRecord]) -> RowBatch:
        batch = RowBatch()
        records = list(records)
        # With a check pool (verify_workers > 0, pcvhub.trust.checks), one chunk's
        # signatures are checked on other cores while the chunk before it is projected.
        chunks = [records[i:i + CHECK_CHUNK] for i in range(0, len(records), CHECK_CHUNK)]
        pending = self.verifier.check_ahead(chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            if pending is not None:
                pending.collect()
            if index + 1 < len(chunks):
                pending = self.verifier.check_ahead(chunks[index + 1])
            for record in chunk:
                at = record.position
                expected = batch.offsets.get((at.topic, at.partition),
                                             self.positions.get((at.topic, at.partition), 0))
                if at.offset < expected:
                    raise OffsetRegression(at.topic, at.partition, at.offset, expected)
                self._project_one(record, batch)
                batch.offsets[(at.topic, at.partition)] = at.offset + 1
                batch.records += 1
        return batch

    def committed(self, batch: RowBatch) -> None:
        """The batch is in the file: make its folds and positions the projector's own."""
        self.progress.update(batch.progress)
        self.positions.update(batch.offsets)

    # -- one record ---------------------------------------------------------------------

    def _project_one(self, record: RawRecord, batch: RowBatch) -> None:
        """Rows of one record. The verifier decides first: an admitted record is projected
        whole; a quarantined one only into ``envelopes`` (with why, for the audit view) or,
        if it cannot even be decoded, into ``unreadable``. Nothing quarantined reaches the
        payload tables, the chains or the lifecycle, so no view folds it."""
        at = record.position
        position = (at.topic, at.partition, at.offset)
        raw = record.value or b""
        head_before = self.verifier.head(_claimed_coi(record))
        outcome = self.verifier.admit(record)
        if isinstance(outcome, Quarantined) and outcome.envelope is None:
            key = (record.key or b"").decode("utf-8", "replace")
            batch.add(UNREADABLE, (*position, key, sha256_hex(raw), raw, outcome.reason))
            return
        env = outcome.envelope
        assert env is not None  # for the type checker: decoded, by the branch above
        # what the envelope claims, even a type the catalog does not know: a quarantined
        # record's claims are shown, never looked up (an unknown name must not stop the run)
        short = env.event_type.rsplit(".", 1)[-1]
        digest = chain_digest(env)
        chain_seq: int | None = None
        chain_link: str | None = None
        if isinstance(outcome, VerifiedRecord):
            check, detail = VERIFIED, None
            if at.topic == CANONICAL:
                chain_seq, chain_link = self._chain(env, short, outcome.payload, digest, at,
                                                    batch)
        else:
            check, detail = outcome.code, outcome.reason
            if at.topic == CANONICAL:
                chain_link = _link(bytes(env.prev_hash), head_before)
        # the ingress position as the gatekeeper's verified seal names it; a quarantined
        # record has none worth showing (anything unsigned could say anything)
        source = (outcome.event.source if isinstance(outcome, VerifiedRecord) else None)
        batch.add(ENVELOPES, (
            *position, env.event_id, short, env.coi, from_us(env.occurred_at_us),
            from_us(env.signed_at_us), env.producer, env.key_id, env.meaning.value,
            bytes(env.prev_hash).hex(), digest.hex(), chain_seq, chain_link,
            bytes(env.schema_fingerprint).hex(),
            None if env.batch_proof is None else bytes(env.batch_proof.root).hex(),
            env.version, None if env.late_entry is None else env.late_entry.reason,
            sha256_hex(raw), None if source is None else str(source),
            check, detail))
        if not isinstance(outcome, VerifiedRecord):
            return
        payload = outcome.payload
        fields = self._payload_fields[short]
        batch.add(self.tables[short], (
            *position, env.event_id, env.coi, from_us(env.occurred_at_us), env.producer,
            *(payload.get(name) for name in fields)))
        if at.topic == REJECTED and short == "EventRejected":
            batch.add(REJECTED_ENVELOPES, (*position, *_claimed(payload["original"])))

    def _chain(self, env: Envelope, short: str, payload: dict[str, Any], digest: bytes,
               at: LogPosition, batch: RowBatch) -> tuple[int, str]:
        """Advance the chain (and, for a therapy, the lifecycle) of a canonical event."""
        progress = batch.progress.get(env.coi)
        if progress is None:
            committed = self.progress.get(env.coi)
            progress = committed.copy() if committed is not None else TherapyProgress()
            batch.progress[env.coi] = progress
        # The verifier admitted it, so it names the chain's head: GENESIS or LINKED.
        link = "GENESIS" if progress.chain_seq == 0 else "LINKED"
        progress.chain_seq += 1
        progress.head = digest.hex()
        if env.coi != REGISTRY_COI:
            entered = advance(progress.lifecycle, short, payload, env.producer)
            if entered is not None:
                batch.add(STAGE_ENTRIES, (at.partition, at.offset, env.coi,
                                          entered.value, from_us(env.occurred_at_us),
                                          env.event_id, short))
        return progress.chain_seq, link


def _claimed_coi(record: RawRecord) -> str:
    """The therapy a record's key names (canonical records are keyed by CoI)."""
    return (record.key or b"").decode("utf-8", "replace")


def _link(prev: bytes, head: bytes) -> str:
    """How a quarantined canonical record relates to its chain as admitted so far."""
    if prev == head:
        return "GENESIS" if not prev else "LINKED"
    return "BROKEN"


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

