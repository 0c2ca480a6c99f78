"""Valid sample data for any Avro schema, so every event type can be round-tripped.

Values are drawn from a seeded ``random.Random`` so a failure is reproducible; each
type gets a value of its logical type (datetimes for timestamps, Decimal for money...).
``plain`` turns such a value (or what a decoder returns) into plain JSON values, so
data read by another implementation, or stored in a fixture, compares field by field.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

_START = datetime(2026, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def sample(schema: Any, rng: random.Random, named: dict[str, Any] | None = None) -> Any:
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in named:
            return sample(named[schema], rng, named)
        schema = {"type": schema}
    if isinstance(schema, list):  # a union: pick any branch, null included
        return sample(rng.choice(schema), rng, named)
    kind, logical = schema["type"], schema.get("logicalType")
    if isinstance(kind, (dict, list)):
        return sample(kind, rng, named)
    if "name" in schema and kind in ("record", "enum", "fixed"):
        named[schema["name"]] = schema
        if "namespace" in schema:
            named[f"{schema['namespace']}.{schema['name']}"] = schema
    if logical == "timestamp-micros":
        return _START + timedelta(microseconds=rng.randrange(10**14))
    if logical == "date":
        return date(1940, 1, 1) + timedelta(days=rng.randrange(30000))
    if logical == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if logical == "decimal":
        scale = schema.get("scale", 0)
        return Decimal(rng.randrange(-10**9, 10**9)).scaleb(-scale)
    match kind:
        case "null":
            return None
        case "boolean":
            return rng.random() < 0.5
        case "int":
            return rng.randrange(-2**31, 2**31)
        case "long":
            return rng.randrange(-2**63, 2**63)
        case "float" | "double":
            # a float holds only 24 bits of mantissa: use integral values so it round-trips
            return rng.uniform(-1e6, 1e6) if kind == "double" else float(rng.randrange(-999, 999))
        case "string":
            return "".join(rng.choice("abcXYZ0123-_ éü漢") for _ in range(rng.randrange(0, 24)))
        case "bytes":
            return rng.randbytes(rng.randrange(0, 40))
        case "fixed":
            return rng.randbytes(schema["size"])
        case "enum":
            return rng.choice(schema["symbols"])
        case "array":
            return [sample(schema["items"], rng, named) for _ in range(rng.randrange(0, 4))]
        case "map":
            size = rng.randrange(0, 3)
            return {f"k{i}": sample(schema["values"], rng, named) for i in range(size)}
        case "record":
            return {f["name"]: sample(f["type"], rng, named) for f in schema["fields"]}
    if kind in named:
        return sample(named[kind], rng, named)
    raise ValueError(f"no sample for Avro type {kind!r}")


def plain(value: Any) -> Any:
    """A datum as JSON values, in the one form every Avro reader can be compared in.

    Timestamps become microseconds since the epoch, dates ISO strings, decimals plain
    strings (no exponent, all digits of the scale), UUIDs strings, bytes and fixed lower
    hex; enum symbols are strings already. Records and maps become dicts, arrays lists.
    """
    if isinstance(value, datetime):
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
