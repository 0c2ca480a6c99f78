"""The schema catalog: every ``.avsc`` of the hub, current and released (ground floor).

``pcvhub/schemas/avro/`` holds the current schemas: ``Envelope.avsc`` and one file per
event type under ``events/``. ``pcvhub/schemas/released/<full name>/v<N>.avsc`` holds
every version that has ever been released; events on the log were written with one of
them, so a reader looks the writer schema up by the fingerprint the envelope carries
and resolves it against the current schema (Avro schema resolution).

Fingerprints are CRC-64-AVRO (the Rabin fingerprint of the Avro specification) of the
Parsing Canonical Form, as 8 little-endian bytes: exactly the 8 bytes after ``C3 01`` in
Avro single-object encoding, so any Avro implementation computes and finds the same value
from the ``.avsc`` alone.

Legacy byte order: until this was fixed, pcvhub wrote every fingerprint byte-reversed
(the value's most significant byte first), both in the single-object header and in the
envelope's ``schema_fingerprint``. Such records are on logs kept forever, and their
signatures cover ``schema_fingerprint`` as written, so they cannot be rewritten. Readers
therefore find a writer schema by either form through :meth:`Catalog.version_for_fingerprint`,
which says which form it was (:attr:`FingerprintForm.LEGACY_REVERSED`); writers only ever
use the spec's form (:func:`fingerprint`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import fastavro
from fastavro.schema import fingerprint as _fingerprint_hex
from fastavro.schema import to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).parent / "avro"
RELEASED_DIR = Path(__file__).parent / "released"
EVENT_NAMESPACE = "pcvhub.events"
ENVELOPE_NAME = "pcvhub.Envelope"


def fingerprint(schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, little-endian (single-object header).

    fastavro's hex string already spells the bytes in little-endian order (for
    ``Envelope.avsc`` the value is 0xb2a3e5216910b837 and the hex ``37b8106921e5a3b2``),
    so the bytes are read straight from it, not re-ordered.
    """
    return bytes.fromhex(_fingerprint_hex(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def legacy_reversed_fingerprint(spec_fingerprint: bytes) -> bytes:
    """The byte-reversed form of a fingerprint that pcvhub wrote before the fix (read only)."""
    return bytes(reversed(spec_fingerprint))


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


class FingerprintForm(Enum):
    """Which byte order a fingerprint found on the log was written in."""

    SPEC = "spec"  # little-endian, as the Avro specification says: what pcvhub writes
    LEGACY_REVERSED = "legacy-reversed"  # byte-reversed, as pcvhub wrote it before the fix


class FingerprintMatch(NamedTuple):
    """The schema version a fingerprint names, and the byte order it was written in."""

    version: SchemaVersion
    form: FingerprintForm

    @property
    def is_legacy(self) -> bool:
        return self.form is FingerprintForm.LEGACY_REVERSED


class UnknownEventType(KeyError):
    def __str__(self) -> str:
        return f"unknown event type {self.args[0]!r}: no schema of that name in pcvhub/schemas/avro"


class Catalog:
    """Current schemas by name, every known version by fingerprint."""

    def __init__(self, current: list[SchemaVersion], released: list[SchemaVersion]) -> None:
        self.current = {s.full_name: s for s in current}
        self._by_short = {s.short_name: s.full_name for s in current}
        #: Every known version by its fingerprint in the spec's byte order (the only form
        #: pcvhub writes). To read a record, use :meth:`version_for_fingerprint`.
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for version in [*released, *current]:
            self.by_fingerprint.setdefault(version.fingerprint, version)
        self._envelope_releases = {int(v.path.stem[1:]): v for v in released
                                   if v.full_name == ENVELOPE_NAME}
        self._by_legacy_fingerprint = {legacy_reversed_fingerprint(fp): version
                                       for fp, version in self.by_fingerprint.items()}
        for legacy, version in self._by_legacy_fingerprint.items():
            other = self.by_fingerprint.get(legacy)
            # A reversed fingerprint equal to another version's real one would make a record
            # ambiguous. With 64-bit fingerprints that is astronomically unlikely, but if a
            # new schema ever did it, loading the catalog must fail rather than misread.
            if other is not None and other is not version:
                raise ValueError(f"fingerprint {legacy.hex()} of {other.path} is the "
                                 f"byte-reversed fingerprint of {version.path}")

    def version_for_fingerprint(self, fingerprint: bytes) -> FingerprintMatch | None:
        """The schema version a fingerprint read from the log names, in either byte order.

        The spec's little-endian form is tried first; the byte-reversed form that pcvhub
        wrote before the fix is accepted so that records already on logs stay readable
        (their signatures cover the bytes as written, so they are never rewritten).
        ``None`` when no current or released version has that fingerprint.
        """
        fingerprint = bytes(fingerprint)
        if (version := self.by_fingerprint.get(fingerprint)) is not None:
            return FingerprintMatch(version, FingerprintForm.SPEC)
        if (version := self._by_legacy_fingerprint.get(fingerprint)) is not None:
            return FingerprintMatch(version, FingerprintForm.LEGACY_REVERSED)
        return None

    @property
    def envelope(self) -> SchemaVersion:
        return self.current[ENVELOPE_NAME]

    def envelope_schema(self, version: int) -> SchemaVersion:
        """The released ``pcvhub.Envelope`` schema of envelope ``version`` (1, 2, ...)."""
        try:
            return self._envelope_releases[version]
        except KeyError:
            raise ValueError(f"no released pcvhub.Envelope v{version} in {RELEASED_DIR}") from None

    def envelope_version(self, schema: SchemaVersion) -> int:
        """Which envelope version a ``pcvhub.Envelope`` schema read from the log is: it picks
        the signing context, so it comes from the released file's name, never from a guess
        about the fields."""
        for number, released in self._envelope_releases.items():
            if released.fingerprint == schema.fingerprint:
                return number
        raise ValueError(f"pcvhub.Envelope schema {schema.path} is not a released version")

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
