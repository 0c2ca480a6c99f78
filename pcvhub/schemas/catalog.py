"""The schema catalog: every ``.avsc`` of the hub, current and released (ground floor).

``pcvhub/schemas/avro/`` holds the current schemas: ``Envelope.avsc`` and one file per
event type under ``events/``. ``pcvhub/schemas/released/<full name>/v<N>.avsc`` holds
every version that has ever been released; events on the log were written with one of
them, so a reader looks the writer schema up by the fingerprint the envelope carries
and resolves it against the current schema (Avro schema resolution).

Fingerprints are CRC-64-AVRO of the Parsing Canonical Form, as 8 little-endian bytes,
exactly the header of Avro single-object encoding; any Avro implementation computes
the same value from the ``.avsc`` alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _fingerprint_hex
from fastavro.schema import to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).parent / "avro"
RELEASED_DIR = Path(__file__).parent / "released"
EVENT_NAMESPACE = "pcvhub.events"
ENVELOPE_NAME = "pcvhub.Envelope"


def fingerprint(schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, little-endian (single-object header)."""
    digest = _fingerprint_hex(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    return int(digest, 16).to_bytes(8, "little")


@dataclass(frozen=True)
class SchemaVersion:
    """One schema as written in a file, parsed once for fastavro."""

    full_name: str
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes
    path: Path

    @classmethod
    def load(cls, path: Path) -> SchemaVersion:
        raw = json.loads(path.read_text())
        name = raw["name"] if "." in raw["name"] else f"{raw.get('namespace', '')}.{raw['name']}"
        # _write_hint=False and a private named_schemas: each file stands alone.
        parsed = fastavro.parse_schema(raw, named_schemas={}, _write_hint=False)
        return cls(name.lstrip("."), raw, parsed, fingerprint(raw), path)

    @property
    def short_name(self) -> str:
        return self.full_name.rsplit(".", 1)[-1]


class UnknownEventType(KeyError):
    def __str__(self) -> str:
        return f"unknown event type {self.args[0]!r}: no schema of that name in pcvhub/schemas/avro"


class Catalog:
    """Current schemas by name, every known version by fingerprint."""

    def __init__(self, current: list[SchemaVersion], released: list[SchemaVersion]) -> None:
        self.current = {s.full_name: s for s in current}
        self._by_short = {s.short_name: s.full_name for s in current}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for version in [*released, *current]:
            self.by_fingerprint.setdefault(version.fingerprint, version)

    @property
    def envelope(self) -> SchemaVersion:
        return self.current[ENVELOPE_NAME]

    def event_types(self) -> list[str]:
        """Full names of every event type (the envelope is not an event)."""
        return sorted(n for n in self.current if n.startswith(EVENT_NAMESPACE + "."))

    def full_name(self, name: str) -> str:
        """``DoseAdministered`` or ``pcvhub.events.DoseAdministered`` -> the full name."""
        if name in self.current:
            return name
        try:
            return self._by_short[name]
        except KeyError:
            raise UnknownEventType(name) from None

    def short_name(self, name: str) -> str:
        return self.full_name(name).rsplit(".", 1)[-1]

    def schema(self, name: str) -> SchemaVersion:
        return self.current[self.full_name(name)]


def current_schema_files() -> list[Path]:
    return [SCHEMA_DIR / "Envelope.avsc", *sorted((SCHEMA_DIR / "events").glob("*.avsc"))]


def released_schema_files() -> list[Path]:
    return sorted(RELEASED_DIR.glob("*/v*.avsc"))


@cache
def load_catalog() -> Catalog:
    return Catalog([SchemaVersion.load(p) for p in current_schema_files()],
                   [SchemaVersion.load(p) for p in released_schema_files()])
