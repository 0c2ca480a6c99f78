"""Encode and decode envelopes and payloads (ground floor).

Wire format (argued in the issue note): Avro **single-object encoding** of the
``pcvhub.Envelope`` record: ``C3 01`` + CRC-64-AVRO fingerprint (8 bytes, little-endian)
+ Avro binary body. The payload inside is the Avro binary body of the event schema, and
the envelope names that schema's fingerprint (same 8-byte form). Any Avro implementation
can therefore read the log with the ``.avsc`` files alone: no registry service has to be
up, reachable or kept for decades beside the archive.

Records written before the byte-order fix carry both fingerprints byte-reversed (see
``pcvhub.schemas.catalog``). The decoders accept that legacy form through
``Catalog.version_for_fingerprint`` and keep ``Envelope.schema_fingerprint`` exactly as
read, because the signature and the chain digest cover those bytes. Encoders always
write the spec's form.

Errors say what was wrong and where: ``SchemaValidationError`` names the field of a
payload being written, ``DecodeError`` names the part of the bytes that could not be
read. Both are ``ValueError`` so callers at a boundary catch one family.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from pcvhub.schemas.catalog import SchemaVersion, load_catalog
from pcvhub.schemas.envelope import (
    Envelope,
    HybridSignature,
    LateEntry,
    MerkleProof,
    SignatureMeaning,
)

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SchemaValidationError(ValueError):
    """A payload that does not match its schema; ``field`` is the Avro path of the culprit."""

    def __init__(self, event_type: str, field: str, reason: str) -> None:
        super().__init__(f"{event_type}: field {field}: {reason}")
        self.event_type, self.field, self.reason = event_type, field, reason


class DecodeError(ValueError):
    """Bytes that are not a readable pcvhub event; ``where`` names the part that failed."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"cannot decode {where}: {reason}")
        self.where, self.reason = where, reason


def to_us(value: datetime | int) -> int:
    """Microseconds since the epoch from what fastavro returns for timestamp-micros."""
    if isinstance(value, datetime):
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return int(value)


# --- payloads -------------------------------------------------------------------------

def validate_payload(version: SchemaVersion, datum: Mapping[str, Any]) -> None:
    known = {f["name"] for f in version.raw["fields"]}
    extra = sorted(set(datum) - known)
    if extra:
        raise SchemaValidationError(version.full_name, extra[0],
                                    f"is not a field of {version.short_name} "
                                    f"(its fields: {', '.join(sorted(known))})")
    try:
        validate(dict(datum), version.parsed, raise_errors=True)
    except ValidationError as exc:
        problem = exc.errors[0]
        field = str(problem.field)
        leaf = field.rsplit(".", 1)[-1]
        got = problem.datum
        reason = ("is missing (required)" if got is None and leaf not in datum
                  else f"got {got!r} ({type(got).__name__}), expected {problem.schema}")
        raise SchemaValidationError(version.full_name, field, reason) from None


def encode_payload(event_type: str, datum: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Validate and write a payload: returns (schema fingerprint, Avro binary body)."""
    version = load_catalog().schema(event_type)
    validate_payload(version, datum)
    out = io.BytesIO()
    schemaless_writer(out, version.parsed, dict(datum))
    return version.fingerprint, out.getvalue()


def _plain(value: Any) -> Any:
    """UUIDs as strings, so ids compare equal whatever logical type carried them."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _read_exactly(body: bytes, writer: Any, reader: Any, where: str) -> Any:
    stream = io.BytesIO(body)
    try:
        datum = schemaless_reader(stream, writer, reader)
    except Exception as exc:  # fastavro raises many kinds on garbage: all mean "unreadable"
        raise DecodeError(where, f"{type(exc).__name__}: {exc}") from None
    if stream.tell() != len(body):
        raise DecodeError(where, f"{len(body) - stream.tell()} trailing bytes after the record")
    return datum


def decode_payload(schema_fingerprint: bytes, body: bytes, event_type: str | None = None
                   ) -> tuple[str, dict[str, Any]]:
    """Read a payload written with any known version; resolve it to the current schema.

    ``schema_fingerprint`` may be in the spec's byte order or the legacy reversed one.
    """
    catalog = load_catalog()
    match = catalog.version_for_fingerprint(schema_fingerprint)
    if match is None:
        raise DecodeError("payload", f"schema fingerprint {bytes(schema_fingerprint).hex()} "
                                     "is not in the catalog (current or released), in the "
                                     "spec's byte order or the legacy reversed one")
    writer = match.version
    if event_type is not None and writer.full_name != event_type:
        raise DecodeError("event_type", f"envelope says {event_type} but the fingerprint is "
                                        f"that of {writer.full_name}")
    reader = catalog.current.get(writer.full_name, writer)
    datum = _read_exactly(body, writer.parsed, reader.parsed, f"payload of {writer.full_name}")
    return writer.full_name, _plain(datum)


# --- envelopes ------------------------------------------------------------------------

def _envelope_record(env: Envelope) -> dict[str, Any]:
    return {
        "event_id": env.event_id,
        "event_type": env.event_type,
        "schema_fingerprint": env.schema_fingerprint,
        "coi": env.coi,
        "occurred_at": env.occurred_at_us,
        "signed_at": env.signed_at_us,
        "producer": env.producer,
        "key_id": env.key_id,
        "meaning": env.meaning.value,
        "prev_hash": env.prev_hash,
        "payload": env.payload,
        "signature": None if env.signature is None else {
            "ed25519": env.signature.ed25519, "ml_dsa_65": env.signature.ml_dsa_65},
        "batch_proof": None if env.batch_proof is None else {
            "leaf_index": env.batch_proof.leaf_index,
            "tree_size": env.batch_proof.tree_size,
            "path": list(env.batch_proof.path),
            "root": env.batch_proof.root},
        "late_entry": None if env.late_entry is None else {"reason": env.late_entry.reason},
    }


def encode_envelope(env: Envelope) -> bytes:
    """Single-object encoding of the envelope: what goes on a topic.

    ``env.schema_fingerprint`` is written as given: :func:`encode_payload` gives the
    spec's form, and an envelope read from the log keeps the bytes it was signed with.
    """
    # The schema of the envelope's own version: a v1 record read from the log re-encodes
    # to the bytes it was signed in (a v1 schema simply has no late_entry field to write).
    schema = load_catalog().envelope_schema(env.version)
    out = io.BytesIO()
    out.write(SINGLE_OBJECT_MAGIC + schema.fingerprint)
    schemaless_writer(out, schema.parsed, _envelope_record(env))
    return out.getvalue()


def decode_envelope(data: bytes) -> Envelope:
    """Envelope from wire bytes; the payload stays encoded (see :func:`decode_payload`).

    The header's fingerprint may be in the spec's byte order or the legacy reversed one;
    ``schema_fingerprint`` is returned exactly as it is in the record, in either form.
    """
    catalog = load_catalog()
    if len(data) < 10 or data[:2] != SINGLE_OBJECT_MAGIC:
        raise DecodeError("envelope header", f"expected Avro single-object marker C3 01, got "
                                             f"{bytes(data[:2]).hex() or 'nothing'}")
    match = catalog.version_for_fingerprint(data[2:10])
    if match is None or match.version.full_name != catalog.envelope.full_name:
        raise DecodeError("envelope header", f"fingerprint {bytes(data[2:10]).hex()} is not a "
                                             "known version of pcvhub.Envelope")
    writer = match.version
    rec = _read_exactly(bytes(data[10:]), writer.parsed, catalog.envelope.parsed, "envelope")
    sig, proof, late = rec["signature"], rec["batch_proof"], rec["late_entry"]
    try:
        meaning = SignatureMeaning(rec["meaning"])
    except ValueError:
        raise DecodeError("envelope field meaning", f"unknown meaning {rec['meaning']!r}") from None
    return Envelope(
        event_id=str(rec["event_id"]),
        event_type=rec["event_type"],
        schema_fingerprint=rec["schema_fingerprint"],
        coi=rec["coi"],
        occurred_at_us=to_us(rec["occurred_at"]),
        signed_at_us=to_us(rec["signed_at"]),
        producer=rec["producer"],
        key_id=rec["key_id"],
        meaning=meaning,
        prev_hash=rec["prev_hash"],
        payload=rec["payload"],
        signature=None if sig is None else HybridSignature(sig["ed25519"], sig["ml_dsa_65"]),
        batch_proof=None if proof is None else MerkleProof(
            proof["leaf_index"], proof["tree_size"], tuple(proof["path"]), proof["root"]),
        late_entry=None if late is None else LateEntry(late["reason"]),
        version=catalog.envelope_version(writer),
    )


def written_in_legacy_form(data: bytes, env: Envelope) -> bool:
    """True if a record names its schemas in the legacy byte-reversed form (header or
    ``schema_fingerprint``): readable, since such records are on logs already, but not
    what any current producer writes, so the gatekeeper refuses it as new input."""
    catalog = load_catalog()
    found = (catalog.version_for_fingerprint(data[2:10]),
             catalog.version_for_fingerprint(env.schema_fingerprint))
    return any(match is not None and match.is_legacy for match in found)

