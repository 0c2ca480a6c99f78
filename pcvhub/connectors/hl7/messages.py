"""HL7 v2 messages: checking what arrived, reading fields, and writing ACKs.

Parsing uses ``hl7`` (python-hl7) from PyPI: a small, dependency-free parser that reads
the separators each message declares in MSH-1/MSH-2, gives 1-based access to
field/repetition/component the way the HL7 standard numbers them, and parses HL7 DTM
timestamps with their offsets. It is fast enough to parse thousands of messages a
second in one thread. ``hl7apy`` validates whole message structures against the 2.5.1
tables, but it is an order of magnitude slower and refuses the slightly-off messages
real interface engines send; the checks the hub relies on (segment shape, required
fields, coded values) are the explicit ones in this package, each naming the segment
and field in an ERR segment, which is what an interface analyst needs to fix the feed.

Every check failure is an :class:`HL7Problem`: where (ERR-2), the HL7 table 0357 code
(ERR-3), and a sentence (ERR-8). ``AR`` refuses a message the hub cannot read at all
(framing, MSH, unsupported type or version); ``AE`` an application error in a readable
message (a missing PID-3, an unknown patient, a value outside its table). An ACK says one
connector :class:`~pcvhub.connectors.outcome.Outcome`: MSA-3 its reason, one ERR segment
per problem.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import hl7

from pcvhub.connectors.outcome import Outcome, Problem

#: HL7 table 0357 (message error condition codes) used in ERR-3.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION_ID = "203"
UNKNOWN_KEY_IDENTIFIER = "204"
APPLICATION_INTERNAL_ERROR = "207"
TABLE_0357 = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}

#: Machine-readable reason codes for the rejected topic, per table 0357 code.
REASON_CODES = {
    SEGMENT_SEQUENCE_ERROR: "HL7_SEGMENT_ERROR",
    REQUIRED_FIELD_MISSING: "HL7_REQUIRED_FIELD_MISSING",
    DATA_TYPE_ERROR: "HL7_DATA_TYPE_ERROR",
    TABLE_VALUE_NOT_FOUND: "HL7_TABLE_VALUE_NOT_FOUND",
    UNSUPPORTED_MESSAGE_TYPE: "HL7_UNSUPPORTED_MESSAGE_TYPE",
    UNSUPPORTED_EVENT_CODE: "HL7_UNSUPPORTED_EVENT",
    UNSUPPORTED_PROCESSING_ID: "HL7_UNSUPPORTED_PROCESSING_ID",
    UNSUPPORTED_VERSION_ID: "HL7_UNSUPPORTED_VERSION",
    UNKNOWN_KEY_IDENTIFIER: "HL7_UNKNOWN_PATIENT",
    APPLICATION_INTERNAL_ERROR: "HL7_INTERNAL_ERROR",
}

SUPPORTED_VERSIONS = ("2.5.1", "2.5", "2.6", "2.7", "2.7.1", "2.8")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


@dataclass(frozen=True)
class Location:
    """ERR-2 (ERL): segment id, its sequence in the message, field, repetition, component."""

    segment: str
    sequence: int = 1
    field: int = 0
    repetition: int = 0
    component: int = 0

    def __str__(self) -> str:
        where = f"{self.segment}-{self.field}" if self.field else self.segment
        if self.component:
            where += f".{self.component}"
        if self.sequence > 1:
            where += f" (segment #{self.sequence})"
        return where

    def erl(self) -> str:
        parts = [self.segment, str(self.sequence), str(self.field) if self.field else ""]
        if self.component:
            parts += [str(self.repetition or 1), str(self.component)]
        elif self.repetition:
            parts.append(str(self.repetition))
        return "^".join(parts).rstrip("^")


class HL7Problem(Exception):
    """Why a message is not taken: ``ack`` (AR or AE), ``code`` (table 0357), where, why."""

    def __init__(self, ack: str, code: str, where: Location | None, reason: str) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.ack = ack
        self.code = code
        self.where = where
        self.reason = reason

    @property
    def reason_code(self) -> str:
        return REASON_CODES.get(self.code, "HL7_ERROR")

    @property
    def sentence(self) -> str:
        return str(self)

    @property
    def problem(self) -> Problem:
        """As one problem of an outcome: where in HL7's words (PID-3.4) and as an ERL."""
        if self.where is None:
            return Problem("", self.reason, self.code)
        return Problem(str(self.where), self.reason, self.code, self.where.erl())

    def refusal(self, rule: str = "HL7", code: str | None = None) -> Outcome:
        """The connector's refusal for this problem (``code``: the reason code, if not the
        table 0357 code's own)."""
        return Outcome.refuse(rule, code or self.reason_code, self.sentence, (self.problem,))


def refuse(code: str, where: Location | None, reason: str) -> HL7Problem:
    """AR: the message cannot be read or is of a kind the hub does not take."""
    return HL7Problem("AR", code, where, reason)


def error(code: str, where: Location | None, reason: str) -> HL7Problem:
    """AE: a readable message whose content cannot be applied."""
    return HL7Problem("AE", code, where, reason)


@dataclass(frozen=True)
class Message:
    """A checked HL7 v2 message: the parsed form plus the MSH facts every mapping needs."""

    text: str
    parsed: hl7.Message
    message_type: str  # MSH-9.1, e.g. ADT
    trigger: str  # MSH-9.2, e.g. A01
    control_id: str  # MSH-10
    sending_application: str  # MSH-3.1
    sending_facility: str  # MSH-4.1
    version: str  # MSH-12
    sent_at: dt.datetime | None  # MSH-7

    @property
    def kind(self) -> str:
        return f"{self.message_type}^{self.trigger}"

    def segments(self, segment_id: str) -> list[hl7.Segment]:
        return [s for s in self.parsed if str(s[0]) == segment_id]

    def segment(self, segment_id: str, required: bool = True) -> hl7.Segment | None:
        found = self.segments(segment_id)
        if not found:
            if required:
                raise error(SEGMENT_SEQUENCE_ERROR, Location(segment_id),
                            f"{self.kind} needs a {segment_id} segment, and this message has "
                            "none")
            return None
        return found[0]


def value(segment: hl7.Segment, field: int, repetition: int = 1, component: int = 1) -> str:
    """One component of one field repetition as text; "" when absent (1-based, as HL7)."""
    try:
        return str(segment.extract_field(1, field, repetition, component, 1)).strip()
    except IndexError:
        return ""


def repetitions(segment: hl7.Segment, field: int) -> int:
    try:
        content = segment[field]
    except IndexError:
        return 0
    return len(content) if str(content) else 0


def required(segment: hl7.Segment, field: int, what: str, *, sequence: int = 1,
             component: int = 1, repetition: int = 1) -> str:
    """A field the mapping cannot do without: AE 101 naming it when empty."""
    text = value(segment, field, repetition, component)
    if not text:
        seg = str(segment[0])
        raise error(REQUIRED_FIELD_MISSING,
                    Location(seg, sequence, field, component=component if component > 1 else 0),
                    f"{seg}-{field}{f'.{component}' if component > 1 else ''} ({what}) is "
                    "empty; the hub needs it")
    return text


def timestamp(text: str, where: Location) -> dt.datetime:
    """An HL7 DTM as an aware datetime; a DTM without offset is taken as UTC."""
    try:
        parsed = hl7.parse_datetime(text)
        if parsed is not None:
            # python-hl7 accepts any offset (+2400, +9999); datetime refuses those only
            # when the offset is first used, so use it here
            parsed.utcoffset()
    except (ValueError, TypeError, OverflowError):  # OverflowError: a 30-digit year
        parsed = None
    if parsed is None:
        raise error(DATA_TYPE_ERROR, where, f"{where} is {text!r}, which is not an HL7 "
                    "date/time (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ])")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def decode_frame(payload: bytes) -> str:
    """The message text of an MLLP frame's payload; line feeds are read as HL7's CR."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse(DATA_TYPE_ERROR, None,
                     f"byte {exc.start} of the message is not UTF-8 (declare and send UTF-8, "
                     "MSH-18 UNICODE UTF-8)") from None
    # Interface engines often end segments with CR LF or LF; HL7 says CR.
    return text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")


def check(text: str) -> Message:
    """Read MSH and the segment structure; raise AR problems naming segment and field."""
    if not text.startswith("MSH"):
        raise refuse(SEGMENT_SEQUENCE_ERROR, Location("MSH"),
                     f"a message starts with an MSH segment; this one starts with "
                     f"{text[:12]!r}")
    if len(text) < 8:
        raise refuse(REQUIRED_FIELD_MISSING, Location("MSH", field=2),
                     "the MSH segment ends before its encoding characters (MSH-2)")
    separator = text[3]
    encoding = text[4:].split(separator, 1)[0]
    if separator.isalnum() or separator in "\r ":
        raise refuse(DATA_TYPE_ERROR, Location("MSH", field=1),
                     f"MSH-1 (field separator) is {separator!r}; it must be a punctuation "
                     "character, normally '|'")
    if len(encoding) not in (4, 5) or len(set(encoding)) != len(encoding) \
            or separator in encoding or any(c.isalnum() or c.isspace() for c in encoding):
        raise refuse(DATA_TYPE_ERROR, Location("MSH", field=2),
                     f"MSH-2 (encoding characters) is {encoding!r}; it must be four distinct "
                     "punctuation characters other than the field separator, normally '^~\\&'")
    lines = text.split("\r")
    counts: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        segment_id, sep, _ = line.partition(separator)
        if not _SEGMENT_ID.match(segment_id) or (not sep and len(line) != 3):
            shown = line[:24] + ("..." if len(line) > 24 else "")
            # ERR-2 carries the id unescaped: name it only if it is one ("?" otherwise),
            # so a broken segment's delimiters or control bytes never get into the ACK.
            named = segment_id[:3] if _SEGMENT_ID.match(segment_id[:3]) else "?"
            raise refuse(SEGMENT_SEQUENCE_ERROR, Location(named, number),
                         f"segment {number} ({shown!r}) does not start with a three-character "
                         f"segment id followed by the field separator {separator!r} that MSH-1 "
                         "declares: wrong field separators or a broken segment")
        counts[segment_id] = counts.get(segment_id, 0) + 1
    if counts.get("MSH") != 1:
        raise refuse(SEGMENT_SEQUENCE_ERROR, Location("MSH", 2),
                     "the message holds more than one MSH segment: send one message per frame")
    parsed = hl7.parse(text)
    msh = parsed.segment("MSH")
    control_id = value(msh, 10)
    if not control_id:
        raise refuse(REQUIRED_FIELD_MISSING, Location("MSH", field=10),
                     "MSH-10 (message control id) is empty; every message needs a unique "
                     "control id so that the hub can acknowledge it and detect repeats")
    message_type, trigger = value(msh, 9, 1, 1), value(msh, 9, 1, 2)
    if not message_type or not trigger:
        raise refuse(REQUIRED_FIELD_MISSING, Location("MSH", field=9),
                     f"MSH-9 (message type) is {value(msh, 9)!r}; it needs the message code "
                     "and trigger event, e.g. ADT^A01^ADT_A01")
    version = value(msh, 12)
    if version not in SUPPORTED_VERSIONS:
        raise refuse(UNSUPPORTED_VERSION_ID, Location("MSH", field=12),
                     f"MSH-12 (version id) is {version!r}; this listener reads HL7 v2.5.1 "
                     f"(and {', '.join(v for v in SUPPORTED_VERSIONS if v != '2.5.1')})")
    processing = value(msh, 11)
    if processing not in ("P", "T", "D"):
        raise refuse(UNSUPPORTED_PROCESSING_ID, Location("MSH", field=11),
                     f"MSH-11 (processing id) is {processing!r}; use P (production), "
                     "T (training) or D (debugging)")
    sent = value(msh, 7)
    return Message(
        text=text, parsed=parsed, message_type=message_type, trigger=trigger,
        control_id=control_id, sending_application=value(msh, 3),
        sending_facility=value(msh, 4), version=version,
        sent_at=timestamp(sent, Location("MSH", field=7)) if sent else None)


def control_id_of(text: str) -> str:
    """MSH-10 of a message that failed its checks, if it can be found at all (for MSA-2)."""
    if not text.startswith("MSH") or len(text) < 4:
        return ""
    fields = text.split("\r", 1)[0].split(text[3])
    return fields[9] if len(fields) > 9 else ""


# -- acknowledgements -------------------------------------------------------------------

def escape(text: str) -> str:
    """HL7 escape sequences for the standard delimiters, so a reason never breaks the ACK,
    and for MLLP's block characters (hex data escapes), so it never breaks the ACK's frame:
    the MSH-10 echoed from a broken frame may hold them."""
    out = text.replace("\\", "\\E\\")
    for char, seq in (("|", "\\F\\"), ("^", "\\S\\"), ("~", "\\R\\"), ("&", "\\T\\"),
                      ("\x0b", "\\X0B\\"), ("\x1c", "\\X1C\\")):
        out = out.replace(char, seq)
    return out.replace("\r", " ").replace("\n", " ")


def ack(code: str, outcome: Outcome, *, control_id: str, ack_control_id: str,
        request: Message | None = None, receiving_application: str = "PCVHUB",
        receiving_facility: str = "HUB") -> str:
    """An original-mode ACK of ``outcome``: MSH, MSA (``code`` AA/AE/AR, the request's
    MSH-10, the outcome's reason) and one ERR per problem, each an error (ERR-4 E) of a
    refusal or a warning (W) of an accepted message.
    """
    severity = "W" if outcome.accepted else "E"
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S.%f")[:-3] + "+0000"
    trigger = request.trigger if request is not None else ""
    sender_app = request.sending_application if request is not None else ""
    sender_facility = request.sending_facility if request is not None else ""
    version = request.version if request is not None else "2.5.1"
    lines = [
        "|".join(["MSH", "^~\\&", receiving_application, receiving_facility,
                  escape(sender_app), escape(sender_facility), now, "",
                  f"ACK^{escape(trigger)}^ACK", ack_control_id, "P", version]),
        "|".join(["MSA", code, escape(control_id), escape(outcome.reason[:200])]),
    ]
    for problem in outcome.problems:
        lines.append("|".join([
            "ERR", "", problem.locator,
            f"{problem.code}^{TABLE_0357.get(problem.code, 'Error')}^HL70357",
            severity, "", "", "", escape(problem.what)]))
    return "\r".join(lines) + "\r"
