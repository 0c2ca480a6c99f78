"""The tables the projection runner writes (schema ``log``), generated from the Avro catalog.

Every table here is a pure function of the records read from the log: one row per
record (``envelopes`` and the typed payload tables), one row per stage a therapy enters
(``stage_entries``), one row per therapy (``therapy_progress``) and the positions read
(``offsets``). No row holds a wall-clock time or a random id, so a rebuilt file has the
same rows as the live one (see :mod:`pcvhub.projections.digest`).

Each event type has its own typed table named after it in snake case
(``DoseAdministered`` -> ``log.dose_administered``): the payload's fields as columns, with
the ``doc`` of each Avro field as the column's SQL comment, after seven columns that say
where the record was read and who signed it (:data:`RECORD_COLUMNS`). The views people
query are in :mod:`pcvhub.projections.views`.

A file records the layout it was built with (a digest of this DDL); a runner refuses a
file of another layout, because tables are not migrated: they are rebuilt from the log.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import duckdb

from pcvhub.schemas.catalog import load_catalog

SCHEMA = "log"


class LayoutError(RuntimeError):
    """A file was built by another layout of the tables, or for another deployment."""


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    doc: str


@dataclass(frozen=True)
class Table:
    """A table of schema ``log``: columns, the key rows are ordered by, a comment."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    primary_key: tuple[str, ...] = ()
    event_type: str | None = None  # the short event type of a typed payload table

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    def ddl(self) -> str:
        cols = [f"{c.name} {c.sql_type}" for c in self.columns]
        if self.primary_key:
            cols.append(f"PRIMARY KEY ({', '.join(self.primary_key)})")
        return f"CREATE TABLE {self.qualified} (\n  " + ",\n  ".join(cols) + "\n)"

    def comments(self) -> list[str]:
        statements = [f"COMMENT ON TABLE {self.qualified} IS {sql_string(self.doc)}"]
        statements += [f"COMMENT ON COLUMN {self.qualified}.{c.name} IS {sql_string(c.doc)}"
                       for c in self.columns]
        return statements


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def snake(event_type: str) -> str:
    """``QcResultRecorded`` -> ``qc_result_recorded``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event_type).lower()


# -- Avro -> DuckDB types ------------------------------------------------------------------

class UnsupportedAvroType(TypeError):
    """A payload field whose Avro type has no column mapping yet; extend ``avro_sql_type``."""


_PRIMITIVES = {"string": "VARCHAR", "int": "INTEGER", "long": "BIGINT", "float": "REAL",
               "double": "DOUBLE", "boolean": "BOOLEAN", "bytes": "BLOB"}


def avro_sql_type(avro: Any, where: str) -> str:
    """The DuckDB column type of an Avro field type (unions with null become nullable)."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1:
            raise UnsupportedAvroType(f"{where}: union {avro} has more than one non-null branch")
        return avro_sql_type(branches[0], where)
    if isinstance(avro, str):
        if avro in _PRIMITIVES:
            return _PRIMITIVES[avro]
        raise UnsupportedAvroType(f"{where}: named type {avro!r} has no column mapping")
    logical = avro.get("logicalType")
    if logical in ("timestamp-micros", "timestamp-millis"):
        return "TIMESTAMPTZ"
    if logical == "date":
        return "DATE"
    if logical == "uuid":
        return "VARCHAR"  # compared with envelope event ids, which are text
    if logical == "decimal":
        return f"DECIMAL({avro['precision']},{avro.get('scale', 0)})"
    kind = avro.get("type")
    if kind == "enum":
        return "VARCHAR"
    if kind == "fixed":
        return "BLOB"
    if kind == "array":
        return avro_sql_type(avro["items"], where) + "[]"
    if kind == "record":  # a nested record (e.g. one row of GenomeStored's share map)
        members = ", ".join(
            '"{}" {}'.format(f["name"], avro_sql_type(f["type"], where + "." + f["name"]))
            for f in avro["fields"])
        return f"STRUCT({members})"
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    raise UnsupportedAvroType(f"{where}: Avro type {avro} has no column mapping")


# -- the tables ------------------------------------------------------------------------------

POSITION = (
    Column("log_topic", "VARCHAR",
           "Topic the record was read from, by role: events (canonical), rejected or alerts."),
    Column("log_partition", "INTEGER", "Kafka partition of the record."),
    Column("log_offset", "BIGINT", "Kafka offset of the record in its partition."),
)
POSITION_KEY = ("log_topic", "log_partition", "log_offset")

#: The columns every typed payload table starts with (the payload's fields follow).
RECORD_COLUMNS = (
    *POSITION,
    Column("event_id", "VARCHAR", "Event id (UUIDv7) from the envelope."),
    Column("coi", "VARCHAR", "Chain-of-identity id of the therapy the event belongs to."),
    Column("occurred_at", "TIMESTAMPTZ", "When the fact happened (event time, UTC)."),
    Column("producer", "VARCHAR", "Registered actor id of the signer."),
)

ENVELOPES = Table(
    "envelopes",
    "One row per record read from the canonical, rejected and alerts topics: the envelope, "
    "its place in the therapy's hash chain and the outcome of re-verifying its signatures.",
    (
        *POSITION,
        Column("event_id", "VARCHAR", "Event id (UUIDv7) allocated by the producer."),
        Column("event_type", "VARCHAR", "Short event type, e.g. DoseAdministered."),
        Column("coi", "VARCHAR", "Chain-of-identity id of the therapy (pcvhub:registry for "
                                 "actors and keys; UNKNOWN for unreadable refusals)."),
        Column("occurred_at", "TIMESTAMPTZ", "When the fact happened (event time, UTC)."),
        Column("signed_at", "TIMESTAMPTZ", "When the producer signed the event (UTC)."),
        Column("producer", "VARCHAR", "Registered actor id of the signer."),
        Column("key_id", "VARCHAR", "Id of the signer's key pair that made the signature."),
        Column("meaning", "VARCHAR", "21 CFR Part 11 meaning of the signature (AUTHORED, "
                                     "REVIEWED, APPROVED, RESPONSIBLE, VERIFIED)."),
        Column("prev_hash", "VARCHAR", "Chain digest (hex) the event names as the previous "
                                       "accepted event of its therapy; empty for the first."),
        Column("chain_hash", "VARCHAR", "Chain digest (hex) of this event: what the next "
                                        "event of the therapy must name as prev_hash."),
        Column("chain_seq", "BIGINT", "Position of the event in its therapy's chain on the "
                                      "canonical topic, from 1; NULL on other topics."),
        Column("chain_link", "VARCHAR", "GENESIS (first event, names no predecessor), LINKED "
                                        "(names the previous event's chain_hash) or BROKEN; "
                                        "NULL on other topics."),
        Column("schema_fingerprint", "VARCHAR", "CRC-64-AVRO fingerprint (hex) of the schema "
                                                "the payload was written with, as the "
                                                "envelope carries it (byte-reversed in "
                                                "records written before the byte-order "
                                                "fix)."),
        Column("batch_root", "VARCHAR", "Merkle root (hex) of the signed batch the event was "
                                        "part of; NULL for an individually signed event."),
        Column("envelope_version", "INTEGER", "Envelope version the record was written in "
                                              "(2 since the late-entry cut-over; 1 before)."),
        Column("late_entry", "VARCHAR", "The signed late-entry reason (21 CFR Part 11) when "
                                        "the producer recorded the event after the fact; "
                                        "NULL for a contemporaneous record."),
        Column("record_sha256", "VARCHAR", "SHA-256 (hex) of the record's bytes on the log."),
        Column("source", "VARCHAR", "Ingress position topic/partition/offset the gatekeeper "
                                    "answered with this record, as its verified seal names "
                                    "it; NULL when the record is quarantined."),
        Column("signature_check", "VARCHAR",
               "The log reader's verdict (pcvhub.log.verify): VERIFIED (both signatures, "
               "the key's registration, the gatekeeper's seal, the hash chain, the signer's "
               "right to write there), or the code it was quarantined for (UNSEALED and "
               "SEAL_INVALID: not accepted by the gatekeeper; UNREGISTERED_KEY, "
               "NOT_REGISTRAR, HASH_CHAIN_BROKEN, SIGNATURE_INVALID, WRONG_SIGNER...). "
               "Only VERIFIED "
               "records reach the payload tables."),
        Column("signature_detail", "VARCHAR", "Sentence explaining a failed check; NULL "
                                              "when verified."),
    ),
    POSITION_KEY,
)

UNREADABLE = Table(
    "unreadable",
    "Records that could not be decoded as pcvhub envelopes: kept with the reason, never "
    "skipped silently.",
    (
        *POSITION,
        Column("record_key", "VARCHAR", "Record key as text (invalid UTF-8 replaced)."),
        Column("record_sha256", "VARCHAR", "SHA-256 (hex) of the record's bytes."),
        Column("record", "BLOB", "The record's bytes as read."),
        Column("error", "VARCHAR", "What could not be read, and where."),
    ),
    POSITION_KEY,
)

REJECTED_ENVELOPES = Table(
    "rejected_envelopes",
    "The envelope inside each refusal's original bytes (who claimed to sign the refused "
    "event), read from the rejected topic; the claim is not verified.",
    (
        *POSITION,
        Column("original_event_id", "VARCHAR", "Event id the refused record claims."),
        Column("original_event_type", "VARCHAR", "Short type the refused record claims."),
        Column("original_coi", "VARCHAR", "Chain-of-identity id the refused record claims."),
        Column("original_occurred_at", "TIMESTAMPTZ", "Event time the refused record claims."),
        Column("original_producer", "VARCHAR", "Signer the refused record claims."),
        Column("original_key_id", "VARCHAR", "Key id the refused record claims."),
        Column("decode_error", "VARCHAR", "Why the original bytes are not a readable "
                                          "envelope; NULL when they are."),
    ),
    POSITION_KEY,
)

STAGE_ENTRIES = Table(
    "stage_entries",
    "One row each time a therapy enters a lifecycle stage (repeated doses re-enter "
    "DISPENSED, ADMINISTERED and FOLLOW_UP), from the canonical topic in chain order.",
    (
        Column("log_partition", "INTEGER", "Kafka partition of the event that moved the stage."),
        Column("log_offset", "BIGINT", "Kafka offset of the event that moved the stage."),
        Column("coi", "VARCHAR", "Chain-of-identity id of the therapy."),
        Column("stage", "VARCHAR", "Stage entered (see pcvhub.projections.lifecycle.Stage)."),
        Column("entered_at", "TIMESTAMPTZ", "Event time of the event that moved the stage."),
        Column("event_id", "VARCHAR", "Event that moved the stage."),
        Column("event_type", "VARCHAR", "Short type of that event."),
    ),
    ("log_partition", "log_offset"),
)

THERAPY_PROGRESS = Table(
    "therapy_progress",
    "One row per chain (therapy, or the registry chain): where its fold stands after the "
    "last event read. The runner continues the fold from here after a restart.",
    (
        Column("coi", "VARCHAR", "Chain-of-identity id."),
        Column("chain_seq", "BIGINT", "Number of events of the chain on the canonical topic."),
        Column("head", "VARCHAR", "Chain digest (hex) of the last event of the chain."),
        Column("stage", "VARCHAR", "Current lifecycle stage."),
        Column("state", "VARCHAR", "What the lifecycle fold remembers (JSON, sorted keys)."),
    ),
    ("coi",),
    primary_key=("coi",),
)

OFFSETS = Table(
    "offsets",
    "Next offset to read per topic and partition, written in the same transaction as the "
    "rows read before it: a restarted runner resumes exactly here.",
    (
        Column("topic", "VARCHAR", "Topic by role: events, rejected or alerts."),
        Column("partition", "INTEGER", "Kafka partition."),
        Column("next_offset", "BIGINT", "Offset of the next record to read."),
    ),
    ("topic", "partition"),
    primary_key=("topic", "partition"),
)

META = Table(
    "meta",
    "What this file is: the table layout it was built with and the deployment it reads.",
    (
        Column("key", "VARCHAR", "Setting name."),
        Column("value", "VARCHAR", "Setting value."),
    ),
    ("key",),
    primary_key=("key",),
)

TRUST_ANCHOR = Table(
    "trust_anchor",
    "The registrar of the deployment's trust anchor file, whose keys verify the registry "
    "chain; empty when the runner had no anchor file.",
    (
        Column("actor_id", "VARCHAR", "Registrar actor id."),
        Column("display_name", "VARCHAR", "Registrar name."),
        Column("roles", "VARCHAR[]", "Roles of the registrar."),
        Column("site_id", "VARCHAR", "Site or organisation of the registrar."),
        Column("key_id", "VARCHAR", "Registrar key id."),
        Column("valid_from", "TIMESTAMPTZ", "Start of the registrar key's validity."),
    ),
    ("actor_id", "key_id"),
)


def payload_table(event_type: str) -> Table:
    """The typed table of one event type: record columns, then the payload's fields."""
    catalog = load_catalog()
    version = catalog.schema(event_type)
    short = catalog.short_name(event_type)
    taken = {c.name for c in RECORD_COLUMNS}
    columns = list(RECORD_COLUMNS)
    for field in version.raw["fields"]:
        name = field["name"]
        if name in taken:
            raise UnsupportedAvroType(f"{short}.{name} collides with a record column")
        columns.append(Column(name, avro_sql_type(field["type"], f"{short}.{name}"),
                              field.get("doc", "")))
    return Table(snake(short), version.raw.get("doc", short), tuple(columns),
                 POSITION_KEY, event_type=short)


def payload_tables() -> dict[str, Table]:
    """Typed tables by short event type, for every event type of the catalog."""
    catalog = load_catalog()
    return {catalog.short_name(name): payload_table(name) for name in catalog.event_types()}


def all_tables() -> list[Table]:
    fixed = [META, OFFSETS, TRUST_ANCHOR, ENVELOPES, UNREADABLE, REJECTED_ENVELOPES,
             STAGE_ENTRIES, THERAPY_PROGRESS]
    return fixed + sorted(payload_tables().values(), key=lambda t: t.name)


def layout_digest() -> str:
    """Identifies this layout: a file built with another one must be rebuilt."""
    text = "\n".join(t.ddl() for t in all_tables())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def create(con: duckdb.DuckDBPyConnection, meta: dict[str, str]) -> None:
    """Create every table of schema ``log`` in an empty file, with comments and ``meta``."""
    con.execute(f"CREATE SCHEMA {SCHEMA}")
    for table in all_tables():
        con.execute(table.ddl())
        for statement in table.comments():
            con.execute(statement)
    # The audit query reads one therapy's records: an index keeps it off a full scan.
    con.execute(f"CREATE INDEX envelopes_by_coi ON {ENVELOPES.qualified} (coi)")
    rows = sorted({**meta, "layout": layout_digest()}.items())
    con.executemany(f"INSERT INTO {META.qualified} VALUES (?, ?)", rows)


def check_layout(con: duckdb.DuckDBPyConnection) -> None:
    """Raise LayoutError if the file was built by another layout of the tables."""
    stored = con.execute(f"SELECT value FROM {META.qualified} WHERE key = 'layout'").fetchall()
    found = stored[0][0] if stored else None
    if found != layout_digest():
        raise LayoutError(
            f"this projection file was built by table layout {found!r}, this code reads and "
            f"writes layout {layout_digest()!r}; projections are not migrated: rebuild from "
            "the log with `pcvhub projections rebuild --out NEW_FILE`")


def check(con: duckdb.DuckDBPyConnection, meta: dict[str, str]) -> None:
    """Raise LayoutError if the file was built by another layout or for other topics."""
    check_layout(con)
    stored = dict(con.execute(f"SELECT key, value FROM {META.qualified}").fetchall())
    for key, value in meta.items():
        if stored.get(key) != value:
            raise LayoutError(
                f"this projection file has {key} = {stored.get(key)!r}, but this runner has "
                f"{value!r}: it was built for another deployment or trust anchor, and its rows "
                "would not be those of a rebuild; use another file (or rebuild this one)")
