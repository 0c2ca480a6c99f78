"""Strategies that damage valid inputs the way real feeds (and attackers) damage them.

Random bytes alone rarely get past the first check of a parser (a magic number, an MSH
segment, a JSON brace). So every strategy here starts from a VALID input that a test or
the demo builds, and mutates it a few times: at the byte level (flips, truncation,
insertion, deletion, duplicated slices) and at the level of the format's own
units (HL7 segments and fields, CSV cells, JSON values, X12 segments and elements), with
values chosen to hit edge cases: empty, huge, non-finite or negative numbers, dates at
the ends of the calendar, the format's delimiters, control characters and odd unicode.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

#: Values that break parsers, by kind: numbers at the limits (and what ``float`` or
#: ``Decimal`` read that a format does not allow), calendar edges, the delimiters of every
#: format under test, control characters (MLLP's 0x0B / 0x1C among them), unicode that
#: is not what it seems (other digits, a BOM, right-to-left override, astral plane) and
#: values of the wrong size or kind.
EDGE_NUMBERS = ("0", "-0", "-1", "1.5", "4.5", "1e400", "-1e400", "nan", "NaN", "inf",
                "-Infinity", "sNaN", "2147483648", "-9223372036854775809", "9" * 30,
                "9" * 5000, "0x1F", "1_000", "1,5", "1.", ".5", "+1")
EDGE_DATES = ("00010101", "99991231235959+1400", "20260101+2400", "20261301", "2026",
              "99999999999999999999", "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-23:59",
              "2026-13-01", "2026-01-20T09:00:00", "2026-01-20T25:00:00Z", "2026-01-20")
EDGE_DELIMITERS = ("|", "^", "~", "\\", "&", "#", "*", ":", ",", ";", '"', "'", "{", "}",
                   "[", "]", "\r", "\n", "\r\n", "\t")
EDGE_CONTROL = ("\x00", "\x0b", "\x1c", "\x1c\r", "\x7f", "\x1f")
EDGE_UNICODE = ("\u0661\u0662", "\uff11", "\u00bd", "\ufeff", "\u202e", "\u00e9",
                "\U0001d518", "\u0130", "\u00df")
EDGE_OTHER = ("", " ", "A" * 300, "PCV-KYOTO01-2026-0123456789ABX", "MSH|^~\\&|", "ISA*",
              "null", "true", "[]", "{}", "%s")
EDGE_GROUPS = (EDGE_NUMBERS, EDGE_DATES, EDGE_DELIMITERS, EDGE_CONTROL, EDGE_UNICODE,
               EDGE_OTHER)
EDGE_TEXT = tuple(v for group in EDGE_GROUPS for v in group)
#: An edge value: first a kind, then a value of it, so that the few numbers that matter
#: are drawn as often as the many delimiters.
edge_values = st.one_of(*(st.sampled_from(group) for group in EDGE_GROUPS))

#: JSON values of every type, for a JSON document's leaves. JSON text may escape a lone
#: UTF-16 surrogate (``"\\ud800"``), which Python reads into a str no UTF-8 encoder takes.
_JSON_LEAVES = st.one_of(
    edge_values,
    st.sampled_from(("\ud800", "x\udfff")),
    st.text(max_size=12),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=8,
)


# -- bytes -------------------------------------------------------------------------------

def _position(draw: st.DrawFn, data: bytes | bytearray) -> int:
    return draw(st.integers(min_value=0, max_value=len(data)))


def _span(draw: st.DrawFn, data: bytes | bytearray) -> tuple[int, int]:
    start = _position(draw, data)
    return start, draw(st.integers(min_value=start, max_value=min(len(data), start + 64)))


def _flip(draw: st.DrawFn, data: bytearray) -> bytearray:
    if data:
        at = draw(st.integers(min_value=0, max_value=len(data) - 1))
        data[at] ^= draw(st.sampled_from([0x01, 0x80, 0xFF, 0x20, 0x40]))
    return data


def _set_byte(draw: st.DrawFn, data: bytearray) -> bytearray:
    if data:
        at = draw(st.integers(min_value=0, max_value=len(data) - 1))
        data[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0B, 0x1C, 0x0D,
                                         0xC3, 0x7C, 0x5E]))
    return data


def _insert(draw: st.DrawFn, data: bytearray) -> bytearray:
    at = _position(draw, data)
    chunk = draw(st.binary(max_size=16) | edge_values.map(str.encode))
    return data[:at] + chunk + data[at:]


def _delete(draw: st.DrawFn, data: bytearray) -> bytearray:
    start, end = _span(draw, data)
    return data[:start] + data[end:]


def _duplicate(draw: st.DrawFn, data: bytearray) -> bytearray:
    start, end = _span(draw, data)
    at = _position(draw, data)
    return data[:at] + data[start:end] + data[at:]


def _truncate(draw: st.DrawFn, data: bytearray) -> bytearray:
    return data[:_position(draw, data)]


_BYTE_OPS = (_flip, _set_byte, _insert, _delete, _duplicate, _truncate)


@st.composite
def mutated_bytes(draw: st.DrawFn, seeds: Sequence[bytes], max_ops: int = 4) -> bytes:
    """A seed damaged by up to ``max_ops`` byte-level mutations (0: the seed itself)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(min_value=0, max_value=max_ops))):
        data = draw(st.sampled_from(_BYTE_OPS))(draw, data)
    return bytes(data)


# -- delimited text (HL7 segments and fields, X12 segments and elements, CSV) ------------

@st.composite
def mutated_units(draw: st.DrawFn, units: list[list[str]], max_ops: int = 4,
                  components: str | None = None) -> list[list[str]]:
    """Records of fields (segments of fields, CSV rows of cells) with fields replaced by
    edge values, deleted or duplicated, records deleted, duplicated or swapped; with
    ``components`` (HL7 ``^``, X12 ``:``) also one component of a field replaced.

    A field to change is drawn from all fields of all records alike, so that a field of
    a long segment is as likely to be hit as one of a short segment."""
    records = [list(r) for r in units]
    for _ in range(draw(st.integers(min_value=0, max_value=max_ops))):
        cells = [(i, j) for i, fields in enumerate(records) for j in range(len(fields))]
        if not cells:
            break
        i, j = draw(st.sampled_from(cells))
        fields = records[i]
        op = draw(st.sampled_from(("value", "value", "value", "component", "drop-field",
                                   "dup-field", "drop-record", "dup-record", "swap-records",
                                   "append")))
        if op == "value":
            fields[j] = draw(edge_values | st.text(max_size=8) | st.just(fields[j] * 2))
        elif op == "component" and components:
            parts = fields[j].split(components)
            k = draw(st.integers(min_value=0, max_value=len(parts) - 1))
            parts[k] = draw(edge_values)
            fields[j] = components.join(parts)
        elif op == "drop-field":
            del fields[j]
        elif op == "dup-field":
            fields.insert(j, fields[j])
        elif op == "drop-record":
            del records[i]
        elif op == "dup-record":
            records.insert(i, list(fields))
        elif op == "swap-records":
            k = draw(st.integers(min_value=0, max_value=len(records) - 1))
            records[i], records[k] = records[k], records[i]
        elif op == "append":
            fields.append(draw(edge_values))
    return records


# -- JSON --------------------------------------------------------------------------------

def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) to a value inside a JSON document, down to a depth
    of 12 (a deeply nested value made by a mutation counts as one value, not 2000)."""
    found = [prefix]
    if len(prefix) >= 12:
        return found
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _replace_at(node: Any, path: tuple[Any, ...], change: Callable[[Any], Any]) -> Any:
    if not path:
        return change(node)
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {**node, head: _replace_at(node[head], rest, change)}
    copy = list(node)
    copy[head] = _replace_at(node[head], rest, change)
    return copy


def _delete_at(node: Any, path: tuple[Any, ...]) -> Any:
    """The document without the value at ``path`` (a non-empty path)."""
    def without(parent: Any) -> Any:
        if isinstance(parent, dict):
            return {k: v for k, v in parent.items() if k != path[-1]}
        return parent[:path[-1]] + parent[path[-1] + 1:]
    return _replace_at(node, path[:-1], without)


_EDGE_INTS = (0, -1, 2 ** 31, -(2 ** 63) - 1, 2 ** 64, 10 ** 30)
_EDGE_FLOATS = (0.0, -0.0, -1.5, 1e308, 5e-324, 0.1)


def _same_kind(draw: st.DrawFn, old: Any) -> Any:
    """A value of the same JSON type as ``old``, at an edge."""
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return draw(st.sampled_from(_EDGE_INTS))
    if isinstance(old, float):
        return draw(st.sampled_from(_EDGE_FLOATS))
    if isinstance(old, str):
        return draw(edge_values | st.sampled_from(("\ud800", old[:1], old.upper(), "")))
    if isinstance(old, list):
        return draw(st.sampled_from(([], old[:1], old + old, old[::-1])))
    if isinstance(old, dict) and old:
        key = draw(st.sampled_from(sorted(old)))
        return {k: v for k, v in old.items() if k != key}
    return draw(JSON_VALUES)


@st.composite
def mutated_json(draw: st.DrawFn, seeds: Sequence[Any], max_ops: int = 3) -> Any:
    """A JSON document from ``seeds`` with values deleted, replaced by edge values of the
    same type (lists emptied, cut or doubled; objects without a key: damage that gets past
    a model to the mapping behind it), replaced by values of any type, wrapped in a list
    or an object, or nested deeply."""
    document = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(min_value=1, max_value=max_ops))):
        path = draw(st.sampled_from(_paths(document)))
        op = draw(st.sampled_from(("same-kind", "same-kind", "same-kind", "delete", "delete",
                                   "value", "wrap-list", "wrap-object", "deep")))
        if op == "same-kind":
            new = _same_kind(draw, _value_at(document, path))
            document = _replace_at(document, path, lambda _old, new=new: new)
        elif op == "delete" and path:
            document = _delete_at(document, path)
        elif op == "value":
            new = draw(JSON_VALUES)
            document = _replace_at(document, path, lambda _old, new=new: new)
        elif op == "wrap-list":
            document = _replace_at(document, path, lambda old: [old])
        elif op == "wrap-object":
            key = draw(st.sampled_from(("value", "coding", "extension", "x")))
            document = _replace_at(document, path, lambda old, key=key: {key: old})
        elif op == "deep":
            depth = draw(st.sampled_from((50, 500, 2000)))
            document = _replace_at(document, path,
                                   lambda old, depth=depth: _nested(old, depth))
    return document


def _value_at(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _nested(leaf: Any, depth: int) -> Any:
    """``leaf`` inside ``depth`` alternating lists and objects: deep, but built without
    recursion so that only the parser under test can run out of stack. 2000 levels are
    more than ``json.loads`` reads; 500 more than the FHIR models validate."""
    node = leaf
    for level in range(depth):
        node = [node] if level % 2 else {"extension": node}
    return node


def json_bytes(document: Any) -> bytes:
    """A document as UTF-8 JSON text; lone surrogates stay as \\u escapes (valid JSON)."""
    try:
        return json.dumps(document).encode()
    except RecursionError:  # json.dumps recurses too: write a deep document by hand
        return _dumps_iteratively(document).encode()


def _dumps_iteratively(document: Any) -> str:
    parts: list[str] = []
    stack: list[Any] = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            parts.append(item.text)
        elif isinstance(item, dict):
            stack.append(_Raw("}"))
            for n, (key, value) in enumerate(reversed(list(item.items()))):
                stack.append(value)
                stack.append(_Raw(json.dumps(key) + ":"))
                if n < len(item) - 1:
                    stack.append(_Raw(","))
            stack.append(_Raw("{"))
        elif isinstance(item, list):
            stack.append(_Raw("]"))
            for n, value in enumerate(reversed(item)):
                stack.append(value)
                if n < len(item) - 1:
                    stack.append(_Raw(","))
            stack.append(_Raw("["))
        else:
            parts.append(json.dumps(item))
    return "".join(parts)


class _Raw:
    """Text to copy as is while writing JSON by hand."""

    def __init__(self, text: str) -> None:
        self.text = text
