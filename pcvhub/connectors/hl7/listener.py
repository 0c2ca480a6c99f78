"""The MLLP listener: HL7 v2 messages over TCP + mutual TLS, one ACK per message.

MLLP (HL7 v2 Minimal Lower Layer Protocol) frames each message as
``0x0B <message> 0x1C 0x0D``. The sender waits for the ACK of a message before it sends
the next one (original-mode acknowledgement), so one connection is handled strictly in
order; several connections are served at once.

What each frame gets:

* a complete, valid message whose events Kafka acknowledged: ``AA``;
* a repeated MSH-10 from the same sender: ``AA`` again, nothing written twice (the event
  ids are derived from sender + MSH-10, and the connector knows every id it wrote);
* a message the hub cannot read or does not take: ``AR``; a readable message whose
  content cannot be applied: ``AE``; both with an ERR segment naming segment, field and
  reason, after the refusal is durably on the rejected topic with the exact bytes;
* a truncated frame (a new start block before the end block, an end block without its
  carriage return, or silence mid-frame longer than ``frame_timeout_s``): ``AR`` naming
  MLLP framing; bytes outside any frame and a frame cut by the peer closing the
  connection are recorded on the rejected topic (there is no one left to answer).

Authentication (why mutual TLS): hospital interface engines (Mirth/NextGen Connect,
Rhapsody, Cloverleaf, Epic Bridges) all speak MLLP over TLS with client certificates,
and IHE ATNA's "secure node" asks for exactly that, so it is what a hospital IT team
already runs and audits; MLLP has no place for a token. The client certificate is
issued by the deployment's CA over the sending system's *registered* Ed25519 key (see
``LocalCA``), so the handshake proves possession of a key the log knows; the listener then
requires that actor to be registered, its key valid and not revoked, and its site to be
this listener's site, and MSH-4 to name that site. A caller without a valid certificate
fails the handshake (logged); a registered caller of another site gets ``AR`` for every
message (logged and recorded), so its interface engine shows the error instead of
retrying a dead socket.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pcvhub.connectors.callers import CallerCheck, CallerRefused
from pcvhub.connectors.core import Connector
from pcvhub.connectors.hl7.mapping import Mapped, MessageMapper
from pcvhub.connectors.hl7.messages import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    SEGMENT_SEQUENCE_ERROR,
    HL7Problem,
    Location,
    Message,
    ack,
    check,
    control_id_of,
    decode_frame,
    error,
    refuse,
)
from pcvhub.connectors.outcome import Outcome
from pcvhub.connectors.writer import IngressWriteError
from pcvhub.schemas.codec import SchemaValidationError

log = logging.getLogger(__name__)
T = TypeVar("T")

START_BLOCK = 0x0B
END_BLOCK = 0x1C
CARRIAGE_RETURN = 0x0D


@dataclass(frozen=True)
class Frame:
    """What the framing layer read: a complete payload, or a broken frame and why."""

    raw: bytes  # the exact bytes received, framing included
    payload: bytes | None  # the message bytes of a complete frame
    problem: str = ""  # why the frame is broken (payload is None)
    answerable: bool = True  # False when the peer is gone


class FrameReader:
    """Splits a byte stream into MLLP frames, reporting broken ones instead of hanging."""

    def __init__(self, reader: asyncio.StreamReader, frame_timeout_s: float,
                 max_frame_bytes: int) -> None:
        self._reader = reader
        self._timeout = frame_timeout_s
        self._max = max_frame_bytes
        self._buffer = bytearray()
        self._eof = False

    async def _fill(self, inside_frame: bool) -> bool:
        """Read more bytes; False at end of stream. Inside a frame, silence is bounded."""
        if self._eof:
            return False
        read = self._reader.read(65536)
        chunk = await (asyncio.wait_for(read, self._timeout) if inside_frame else read)
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    async def next(self) -> Frame | None:
        """The next frame, or None when the peer closed the connection cleanly."""
        while True:
            start = self._buffer.find(START_BLOCK)
            if start > 0 or (start < 0 and self._buffer.strip()):
                junk_end = start if start > 0 else len(self._buffer)
                junk = bytes(self._buffer[:junk_end])
                del self._buffer[:junk_end]
                if junk.strip():
                    return Frame(junk, None, f"{len(junk)} bytes arrived outside an MLLP frame "
                                 "(no start block 0x0B before them)", answerable=False)
                continue
            if start < 0:
                self._buffer.clear()
                if not await self._fill(inside_frame=False):
                    return None
                continue
            frame = await self._complete_frame()
            if frame is not None:
                return frame

    async def _complete_frame(self) -> Frame | None:
        """With a start block at buffer[0]: the frame it opens, or None to read on."""
        end = self._buffer.find(END_BLOCK, 1)
        restart = self._buffer.find(START_BLOCK, 1)
        if restart > 0 and (end < 0 or restart < end):
            raw = bytes(self._buffer[:restart])
            del self._buffer[:restart]
            return Frame(raw, None, "MLLP frame truncated: a new start block (0x0B) arrived "
                         f"after {len(raw) - 1} message bytes, before the end block 0x1C 0x0D")
        if end > 0 and end + 1 < len(self._buffer):
            raw = bytes(self._buffer[:end + 2])
            del self._buffer[:end + 2]
            if raw[-1] != CARRIAGE_RETURN:
                return Frame(raw, None, "MLLP frame broken: the end block 0x1C is followed "
                             f"by 0x{raw[-1]:02X} instead of 0x0D")
            return Frame(raw, raw[1:-2])
        if len(self._buffer) > self._max:
            raw = bytes(self._buffer)
            self._buffer.clear()
            return Frame(raw, None, f"MLLP frame longer than {self._max} bytes without an end "
                         "block")
        try:
            more = await self._fill(inside_frame=True)
        except TimeoutError:
            raw = bytes(self._buffer)
            self._buffer.clear()
            return Frame(raw, None, f"MLLP frame truncated: no end block 0x1C 0x0D within "
                         f"{self._timeout:g} s after {len(raw) - 1} message bytes")
        if not more:
            raw = bytes(self._buffer)
            self._buffer.clear()
            return Frame(raw, None, "MLLP frame truncated: the connection closed after "
                         f"{len(raw) - 1} message bytes, before the end block 0x1C 0x0D",
                         answerable=False)
        return None


class _HeldConnection(asyncio.Protocol):
    """A new TCP connection, not read from until TLS takes it over: bytes of the client's
    hello read by anyone else would be lost to the handshake."""

    def __init__(self, listener: MllpListener) -> None:
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self.listener._accept(transport))
        self.listener._connections.add(task)
        task.add_done_callback(self.listener._connections.discard)


def frame(message: str) -> bytes:
    """An MLLP frame around a message (for ACKs, and for clients in tests and benchmarks)."""
    return bytes([START_BLOCK]) + message.encode("utf-8") + bytes([END_BLOCK, CARRIAGE_RETURN])


class MllpListener:
    """An asyncio MLLP server on one host/port, writing through one :class:`Connector`."""

    def __init__(self, connector: Connector, mapper: MessageMapper,
                 ssl_context: ssl.SSLContext, host: str = "127.0.0.1", port: int = 0, *,
                 frame_timeout_s: float = 30.0, max_frame_bytes: int = 4 * 1024 * 1024,
                 write_threads: int = 64) -> None:
        """
        :param write_threads: how many connections' writes may wait at once for the
            connector's group commit (each connection has at most one message in flight).
        """
        self.connector = connector
        self.mapper = mapper
        self.callers = CallerCheck(connector.registry, connector.site_id)
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.frame_timeout_s = frame_timeout_s
        self.max_frame_bytes = max_frame_bytes
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        # Writes wait for Kafka, mostly idle: their own threads, not the loop's default
        # executor (cpu_count + 4 threads), which would cap how many connections' messages
        # one group commit can take and leave the rest queued behind it. Not shut down in
        # close: a connection still open may write; idle threads end with the listener.
        self._writes = ThreadPoolExecutor(write_threads, thread_name_prefix="mllp-write")

    @property
    def endpoint(self) -> str:
        return f"mllp://{self.host}:{self.port}"

    async def start(self) -> MllpListener:
        # TLS is started per connection by us, so a failed handshake is ours to log and record.
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _HeldConnection(self), self.host,
                                                self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.warning("MLLP listener on %s (mutual TLS, site %s)", self.endpoint,
                    self.connector.site_id)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    # -- one connection -------------------------------------------------------------

    async def _accept(self, transport: asyncio.Transport) -> None:
        """TLS handshake on a held connection, then serve it as streams."""
        loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        reader = asyncio.StreamReader(limit=self.max_frame_bytes + 65536)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            tls = await loop.start_tls(transport, protocol, self.ssl_context, server_side=True,
                                       ssl_handshake_timeout=15)
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = (f"TLS handshake from {peer[0]}:{peer[1]} failed "
                      f"({type(exc).__name__}: {exc}); this listener takes only callers with "
                      "a client certificate of the hub's CA")
            log.warning("MLLP caller refused: %s", reason)
            transport.close()
            await self._record(b"", refuse(APPLICATION_INTERNAL_ERROR, None, reason).refusal(
                "AUTH", code="UNAUTHENTICATED"))
            return
        if tls is None:  # the peer left during the handshake
            return
        protocol.connection_made(tls)
        writer = asyncio.StreamWriter(tls, protocol, reader, loop)
        await self._serve_connection(reader, writer)

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ssl_object = writer.get_extra_info("ssl_object")
        refusal: CallerRefused | None = None
        caller = None
        try:
            caller = self.callers.check_certificate(
                ssl_object.getpeercert(binary_form=True) if ssl_object else None)
        except CallerRefused as exc:
            refusal = exc
            log.warning("MLLP caller %s refused: %s %s", peer, exc.code, exc.reason)
        frames = FrameReader(reader, self.frame_timeout_s, self.max_frame_bytes)
        try:
            while True:
                received = await frames.next()
                if received is None:
                    break
                answer = await self._answer(received, refusal)
                if answer is not None and received.answerable:
                    writer.write(answer)
                    await writer.drain()
        except (ConnectionError, ssl.SSLError) as exc:
            log.info("MLLP connection from %s (%s) ended: %s", peer,
                     caller.actor_id if caller else "unauthenticated", exc)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass

    async def _answer(self, received: Frame, refusal: CallerRefused | None) -> bytes | None:
        """The ACK frame for one received frame (after recording any refusal)."""
        if received.payload is None:
            broken = refuse(SEGMENT_SEQUENCE_ERROR, None, received.problem)
            text = received.raw[1:].decode("utf-8", "replace") if received.raw[:1] == b"\x0b" \
                else ""
            return await self._refuse(received, broken.ack, control_id_of(text), None,
                                      broken.refusal("MLLP"))
        if refusal is not None:
            text = received.payload.decode("utf-8", "replace")
            caller = refuse(APPLICATION_INTERNAL_ERROR, Location("MSH", field=4),
                            f"caller refused: {refusal.reason}")
            return await self._refuse(received, caller.ack, control_id_of(text), None,
                                      caller.refusal("AUTH", code=refusal.code))
        try:
            message = check(decode_frame(received.payload))
        except HL7Problem as problem:
            text = received.payload.decode("utf-8", "replace")
            return await self._refuse(received, problem.ack, control_id_of(text), None,
                                      problem.refusal())
        return await self._apply(received, message)

    async def _apply(self, received: Frame, message: Message) -> bytes:
        if self.connector.already_written(self.mapper.event_id(message)):
            return self._ack("AA", message.control_id, message, Outcome.already_accepted(
                f"message {message.control_id} was received before and is already applied; "
                "not applied again"))
        try:
            mapped: Mapped = self.mapper.map(message)
        except HL7Problem as problem:
            return await self._refuse(received, problem.ack, message.control_id, message,
                                      problem.refusal())
        accepted = Outcome.accept(mapped.note, [w.problem for w in mapped.warnings])
        if not mapped.requests:
            return self._ack("AA", message.control_id, message, accepted)
        try:
            await self._write(self.connector.emit, mapped.requests)
        except SchemaValidationError as exc:
            invalid = error(DATA_TYPE_ERROR, None,
                            f"the message maps to an invalid {mapped.requests[0].event_type}: "
                            f"{exc}")
            return await self._refuse(received, invalid.ack, message.control_id, message,
                                      invalid.refusal(), coi=mapped.coi)
        except IngressWriteError as exc:
            # Nothing was acknowledged: the sender must resend (same MSH-10, so no double).
            # Nothing was refused either, so nothing goes to the rejected topic.
            unstored = error(APPLICATION_INTERNAL_ERROR, None, f"not stored, resend: {exc}")
            log.error("MLLP message %s not written: %s", message.control_id, exc)
            return self._ack(unstored.ack, message.control_id, message, unstored.refusal())
        return self._ack("AA", message.control_id, message, accepted)

    async def _refuse(self, received: Frame, code: str, control_id: str,
                      message: Message | None, refusal: Outcome, *,
                      coi: str | None = None) -> bytes:
        """Record the refusal of a frame, then the negative ACK (``code`` AR or AE)."""
        await self._record(received.raw, refusal, message=message, coi=coi)
        return self._ack(code, control_id, message, refusal)

    async def _record(self, raw: bytes, refusal: Outcome, *, message: Message | None = None,
                      coi: str | None = None) -> None:
        """Durably record a refusal before the negative ACK goes out."""
        try:
            await self._write(
                self.connector.record_refusal, raw, self.endpoint, refusal, coi=coi,
                event_type=message.kind if message is not None else None)
        except IngressWriteError as exc:
            log.error("could not record the refusal of a message on %s: %s (%s)",
                      self.endpoint, exc, refusal.reason)

    async def _write(self, write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking connector write (``emit``, ``record_refusal``) off the loop."""
        return await asyncio.get_running_loop().run_in_executor(
            self._writes, functools.partial(write, *args, **kwargs))

    @staticmethod
    def _ack(code: str, control_id: str, message: Message | None, outcome: Outcome) -> bytes:
        return frame(ack(code, outcome, control_id=control_id,
                         ack_control_id=uuid.uuid4().hex[:20], request=message))
