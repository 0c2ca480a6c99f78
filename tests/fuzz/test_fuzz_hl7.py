"""HL7 v2 over MLLP: framing, message checks, mapping and the ACK, under damaged input.

The refusal of this edge is :class:`HL7Problem`: AR or AE, an HL7 table 0357 code, and a
location (segment, field, component) that the ACK's ERR segment carries. Whatever arrives
on the socket, the listener must answer each frame with one well-formed ACK frame and
never fail with any other exception, or hang.

Seeds are the messages the demo's EMR sends (``pcvhub.demo.messages``) plus outcome and
adverse-event panels, for a patient the connector knows, with a bedside identity check
on the log, so that mutated messages reach every mapping, not only the first checks.
The listener part drives the real ``FrameReader`` and ``MllpListener`` answer path
in-process over an ``asyncio.StreamReader``: it needs neither a socket, nor TLS, nor Kafka.
"""

from __future__ import annotations

import asyncio
import re
import ssl

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pcvhub.connectors.hl7.listener import (
    CARRIAGE_RETURN,
    END_BLOCK,
    START_BLOCK,
    Frame,
    FrameReader,
    MllpListener,
    frame,
)
from pcvhub.connectors.hl7.mapping import MessageMapper
from pcvhub.connectors.hl7.messages import (
    TABLE_0357,
    HL7Problem,
    ack,
    check,
    control_id_of,
    decode_frame,
)
from pcvhub.demo import messages as demo
from pcvhub.demo.cohort import build_cohort
from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import SchemaValidationError, encode_payload

from .mutate import mutated_bytes, mutated_units
from .offline import SITE, OfflineConnector
from .profiles import bounded, fuzz_settings, label

pytestmark = pytest.mark.fuzz

KNOWN, NEW = build_cohort(2).patients  # KNOWN is enrolled in the connector, NEW is not
AT_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
DOSE_ID = "DOSE-1"


def _panel(control_id: str, panel: str, observations: list[tuple[str, str, str]]) -> str:
    msh = demo._msh("ORU^R01^ORU_R01", control_id, SITE, AT_US)
    obr = f"OBR|1|{panel}-1||{panel}^Panel^99PCV|||{demo.hl7_time(AT_US)}"
    obx = [f"OBX|{n}|{kind}|{code}^Observation^99PCV||{value}||||||F"
           for n, (kind, code, value) in enumerate(observations, start=1)]
    return "\r".join([msh, demo._pid(KNOWN), obr, *obx])


SEEDS = [
    demo.admit(NEW, "C-ADMIT", SITE, AT_US),
    demo.admit(KNOWN, "C-UPDATE", SITE, AT_US).replace("ADT^A01", "ADT^A08"),
    demo.diagnosis(KNOWN, "C-DX", SITE, AT_US),
    demo.order(KNOWN, "C-ORDER", SITE, AT_US, "PL-1", "DR-OKAFOR"),
    demo.administration(KNOWN, "C-RAS", SITE, AT_US, administration_id="ADM-1",
                        dose_number=1, dose_id=DOSE_ID, nurse="RN-LINDQVIST"),
    _panel("C-OUTCOME", "PCV-OUTCOME", [
        ("ST", "PCV-TIMEPOINT", "week-12"), ("CWE", "PCV-RECIST", "PR"),
        ("CWE", "PCV-CTDNA", "NOT_DETECTED"), ("NM", "PCV-CTDNA-MTM", "0.5"),
        ("CWE", "PCV-VITAL", "ALIVE"), ("ST", "PCV-CRITERIA", "RECIST 1.1")]),
    _panel("C-AE", "PCV-AE", [
        ("ST", "PCV-AE-TERM", "Injection site reaction"), ("NM", "PCV-AE-GRADE", "2"),
        ("ID", "PCV-AE-SERIOUS", "N"), ("CWE", "PCV-AE-RELATED", "PROBABLE"),
        ("DTM", "PCV-AE-ONSET", demo.hl7_time(AT_US)), ("ST", "PCV-AE-CTCAE", "5.0"),
        ("CWE", "PCV-AE-MEDDRA", "10022086")]),
]
SEED_BYTES = [s.encode() for s in SEEDS]
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
#: ERR-2 as ``Location.erl`` writes it: segment id, then numbers joined by ^.
_ERL = re.compile(r"^(\?|[A-Z][A-Z0-9]{2})(\^\d*)*$")


def _known_patient(connector: OfflineConnector) -> OfflineConnector:
    coi = connector.enrol(KNOWN.mrn)
    connector.verify_bedside(coi, KNOWN.mrn, DOSE_ID)
    return connector


MAPPER = MessageMapper(_known_patient(OfflineConnector("hl7")))


@pytest.fixture(scope="module", autouse=True)
def _close_the_mappers_connector():
    yield
    MAPPER.connector.close()


# -- strategies --------------------------------------------------------------------------

@st.composite
def damaged_messages(draw: st.DrawFn) -> bytes:
    """A seed message with segments and fields damaged, joined by CR, LF or CR LF."""
    seed = draw(st.sampled_from(SEEDS))
    segments = [line.split("|") for line in seed.split("\r")]
    damaged = draw(mutated_units(segments, components="^"))
    separator = draw(st.sampled_from(["|"] * 6 + ["#", "^", " "]))
    terminator = draw(st.sampled_from(["\r", "\r", "\n", "\r\n"]))
    return terminator.join(separator.join(fields) for fields in damaged).encode()


MESSAGES = (damaged_messages() | mutated_bytes(SEED_BYTES)
            | st.binary(max_size=64).map(lambda tail: b"MSH|^~\\&|" + tail))


# -- what a refusal must say -------------------------------------------------------------

def assert_names_where(problem: HL7Problem) -> None:
    """AR/AE, a table 0357 code, and a location the ERR segment can carry."""
    assert problem.ack in ("AR", "AE")
    assert problem.code in TABLE_0357, problem.code
    assert problem.reason.strip()
    if problem.where is None:
        # Only a payload that is not UTF-8 has no segment to name; it names the byte.
        assert re.search(r"\bbyte \d+\b", problem.reason), problem.reason
        return
    assert _SEGMENT_ID.match(problem.where.segment) or problem.where.segment == "?", \
        f"ERR-2 would name segment {problem.where.segment!r}"
    assert str(problem).startswith(str(problem.where))


def assert_well_formed_ack(text: str, code: str, problems: int) -> None:
    """MSH, MSA and one ERR per problem, each with exactly its fields: a reason or a
    location never adds a field, a segment or an MLLP control byte to the ACK."""
    assert "\x0b" not in text and "\x1c" not in text
    assert text.endswith("\r")
    segments = [line.split("|") for line in text[:-1].split("\r")]
    assert [s[0] for s in segments] == ["MSH", "MSA", *["ERR"] * problems], text
    assert len(segments[0]) == 12 and len(segments[1]) == 4, text
    assert segments[1][1] == code
    for err in segments[2:]:
        assert len(err) == 9, err
        assert err[2] == "" or _ERL.match(err[2]), err[2]


def maps_or_refuses(payload: bytes) -> None:
    text = ""
    try:
        with bounded(5, "check and map"):
            text = decode_frame(payload)
            message = check(text)
            mapped = MAPPER.map(message)
    except HL7Problem as problem:
        label(f"refused {problem.ack} {problem.code}")
        assert_names_where(problem)
        answer = ack(problem.ack, problem.refusal(), control_id=control_id_of(text),
                     ack_control_id="A1")
        assert_well_formed_ack(answer, problem.ack, 1)
        return
    label(f"mapped {message.kind}")
    catalog = load_catalog()
    for request in mapped.requests:
        # The listener answers AE for a payload the codec refuses; anything else would
        # escape it as an unexpected exception.
        try:
            encode_payload(catalog.full_name(request.event_type), request.payload)
        except SchemaValidationError:
            label(f"{request.event_type} refused by the codec")


# -- message checks and mapping ------------------------------------------------------------

# Inputs that broke this property before their fix (found by the fuzzing, or by probing
# the same property by hand): each raised something other than HL7Problem, or made an
# ACK that is not well formed.
ADMIT, RAS = SEED_BYTES[0], SEED_BYTES[4]
FOUND = [
    # a broken segment id went into ERR-2 unescaped: with MSH-1 "#", "P|D" added a field
    # to the ERR segment; a control byte ("\x1cID") would break the ACK's MLLP frame
    ADMIT.replace(b"|", b"#").replace(b"PID#", b"P|D#"),
    ADMIT.replace(b"PID|", b"\x1cID|"),
    # MSH-7 with a 30-digit year: OverflowError from python-hl7
    ADMIT.replace(b"|20260101000000+0000|", b"|999999999999999999999999999999|", 1),
    # EVN-2 with an offset of 24 h or more: ValueError when the event time was computed
    ADMIT.replace(b"EVN|A01|20260101000000+0000", b"EVN|A01|20260101000000+2400"),
    # RXA-2 (dose number) nan and inf: ValueError / OverflowError from int()
    RAS.replace(b"RXA|0|1|", b"RXA|0|nan|"),
    RAS.replace(b"RXA|0|1|", b"RXA|0|1e400|"),
]


@fuzz_settings(1.0)
@given(MESSAGES)
@example(FOUND[0])
@example(FOUND[1])
@example(FOUND[2])
@example(FOUND[3])
@example(FOUND[4])
@example(FOUND[5])
def test_damaged_messages_map_or_are_refused_with_segment_and_field(payload):
    maps_or_refuses(payload)


def test_every_seed_maps_to_its_events():
    """The seeds reach the mappings (else the fuzzing above would test the first checks)."""
    kinds = [[r.event_type for r in MAPPER.map(check(s)).requests] for s in SEEDS]
    assert kinds == [["PatientEnrolled"], [], ["DiagnosisRecorded"], ["TherapyOrdered"],
                     ["DoseAdministered"], ["OutcomeRecorded"], ["AdverseEventReported"]]


# -- the listener: MLLP framing and one ACK per frame --------------------------------------

_PIECES = st.one_of(
    st.sampled_from(SEED_BYTES).map(lambda m: frame(m.decode())),
    MESSAGES.map(lambda m: bytes([START_BLOCK]) + m + bytes([END_BLOCK, CARRIAGE_RETURN])),
    MESSAGES.map(lambda m: bytes([START_BLOCK]) + m),  # no end block
    st.sampled_from([b"\x0b", b"\x1c", b"\x1c\r", b"\x1cX", b"\r\n", b"   ", b"junk"]),
    st.binary(max_size=24),
)


@st.composite
def byte_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """What a peer sends on one connection, and how TCP happens to cut it into reads."""
    stream = b"".join(draw(st.lists(_PIECES, min_size=1, max_size=5)))
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(len(stream) - 1, 1)),
                               max_size=6)))
    bounds = [0, *[c for c in cuts if c < len(stream)], len(stream)]
    return stream, [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


async def _read_frames(chunks: list[bytes], max_frame_bytes: int) -> list[Frame]:
    reader = asyncio.StreamReader()
    frames = FrameReader(reader, frame_timeout_s=5.0, max_frame_bytes=max_frame_bytes)

    async def feed() -> None:
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)  # let the reader see this read on its own
        reader.feed_eof()

    feeding = asyncio.create_task(feed())
    found: list[Frame] = []
    while (received := await frames.next()) is not None:
        found.append(received)
        assert len(found) <= sum(map(len, chunks)) + 1, "the frame reader does not advance"
    await feeding
    return found


_LAYOUT = b" \t\n\r\x0c"  # whitespace between frames, which the reader drops


def assert_frames_cover_the_stream(stream: bytes, frames: list[Frame]) -> None:
    """Every byte that is not layout between frames is in exactly one frame, in order;
    complete frames have their payload between the blocks, broken ones a reason."""
    received = b"".join(f.raw for f in frames)
    assert received.translate(None, _LAYOUT) == stream.translate(None, _LAYOUT)
    for f in frames:
        if f.payload is not None:
            assert f.raw == bytes([START_BLOCK]) + f.payload + bytes([END_BLOCK,
                                                                      CARRIAGE_RETURN])
            assert START_BLOCK not in f.payload and END_BLOCK not in f.payload
        else:
            assert "MLLP" in f.problem, f.problem


@fuzz_settings(0.5)
@given(byte_streams(), st.sampled_from([4 * 1024 * 1024, 64]))
def test_the_frame_reader_splits_any_stream_into_frames_and_never_hangs(streamed, limit):
    stream, chunks = streamed
    with bounded(10, "FrameReader"):
        frames = asyncio.run(_read_frames(chunks, limit))
    assert_frames_cover_the_stream(stream, frames)


async def _answers(frames: list[Frame]) -> tuple[list[bytes], OfflineConnector]:
    connector = _known_patient(OfflineConnector("hl7"))
    listener = MllpListener(connector, MessageMapper(connector),
                            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        # _answer is what the listener does with each frame once TLS and the caller
        # check passed; None: no refused caller.
        return [await listener._answer(f, None) for f in frames], connector
    finally:
        connector.close()


#: A frame whose end block is not followed by CR, right after MSH-10: the ACK echoes that
#: control id, 0x1C and all, which broke the ACK's frame until escape() wrote it \X1C\.
_BROKEN_END = b"\x0bMSH|^~\\&|EPIC|KYOTO01|PCVHUB|HUB|20260101||ADT^A01|C1\x1cX"


@fuzz_settings(0.5)
@given(byte_streams())
@example((_BROKEN_END, [_BROKEN_END]))
def test_the_listener_answers_every_frame_with_one_well_formed_ack(streamed):
    stream, chunks = streamed
    with bounded(20, "the MLLP listener"):
        frames = asyncio.run(_read_frames(chunks, 4 * 1024 * 1024))
        answers, connector = asyncio.run(_answers(frames))
    for received, answer in zip(frames, answers, strict=True):
        assert answer[:1] == bytes([START_BLOCK])
        assert answer[-2:] == bytes([END_BLOCK, CARRIAGE_RETURN])
        text = answer[1:-2].decode("utf-8")
        code = text.split("\r")[1].split("|")[1]
        label(f"ACK {code}")
        assert_well_formed_ack(text, code, text.count("\rERR|"))
        if code == "AA":
            assert received.payload is not None
    # every negative ACK went with a refusal recorded on the rejected topic
    refused = sum(1 for a in answers if b"MSA|AA|" not in a)
    assert len(connector.refusals) == refused
