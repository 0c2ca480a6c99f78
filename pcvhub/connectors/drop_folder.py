"""The drop folder: files put into a folder, each processed once, its result beside it.

The MES / LIMS connector (:mod:`.mes`), the data logger uploads (:mod:`.loggers`) and the
payer's remittance inbox (:mod:`.payer`) are all fed this way. :class:`DropFolder` is the
folder: watch, wait until a file has settled, hand it to a handler (file path and bytes ->
:class:`FileResult`), write the result file, move the file to ``done/`` or ``failed/``.
:class:`DropConnector` is what each connector does with the entries of a file (a row, an
upload, a claim payment): send each one's event and wait for the gatekeeper's verdict, or
refuse it on the connector's own authority, and say which in the result file, one
:class:`~.outcome.Outcome` an entry.

Folder layout (``folder`` is created if missing)::

    folder/NAME                    dropped here (write to a dot-file or *.part, then rename)
    folder/done/NAME               processed: every entry of it accepted or refused, with why
    folder/done/NAME.result.json   the result file (also written for failed files)
    folder/failed/NAME             unreadable as a whole (the result file says why)

A handler that cannot finish for a reason outside the file (Kafka unreachable) raises
:class:`TransientFailure`: the file stays where it was dropped and is tried again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from watchfiles import awatch

from pcvhub.config import Settings
from pcvhub.connectors.core import Connector, EventRequest
from pcvhub.connectors.outcome import Outcome, Status
from pcvhub.connectors.writer import IngressWriteError
from pcvhub.times import utc_iso
from pcvhub.trust.issuer import now_us

__all__ = ["RESULT_SUFFIX", "DropConnector", "DropFolder", "FileResult", "Handler",
           "TransientFailure", "write_atomically"]

log = logging.getLogger(__name__)


class TransientFailure(RuntimeError):
    """Processing could not finish for a reason outside the file (Kafka unreachable): the
    file stays where it was dropped and is tried again."""


@dataclass(frozen=True)
class FileResult:
    """What a handler made of one file: the result document and where the file goes."""

    result: dict[str, Any]
    failed: bool = False  # True: unreadable, to failed/; False: processed, to done/
    extra_files: Mapping[str, bytes] = field(default_factory=dict)  # suffix -> content


Handler = Callable[[Path, bytes], FileResult]
RESULT_SUFFIX = ".result.json"


class DropFolder:
    """A folder that files are dropped into, processed once each, and moved out of.

    Watching: ``watchfiles`` (inotify/FSEvents through the Rust ``notify`` crate) wakes
    the loop within ~0.1 s of a change; every wake, and a timeout every ``settle_s``,
    rescans the whole folder, so a missed notification (network shares, a crash) only
    delays a file, never loses it; ``force_polling`` serves folders that send no
    notifications at all. A file is taken once its size and modification time stayed the
    same for ``settle_s`` (writers should still write ``.NAME`` or ``NAME.part`` and
    rename). The result is written (atomically) before the file is moved, so a crash in
    between only means the file is processed again, which the handlers make harmless.
    """

    def __init__(self, folder: Path, suffixes: tuple[str, ...], handle: Handler, *,
                 settle_s: float = 0.3, force_polling: bool = False,
                 retry_s: float = 5.0) -> None:
        self.folder = Path(folder)
        self.done = self.folder / "done"
        self.failed = self.folder / "failed"
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.handle = handle
        self.settle_s = settle_s
        self.force_polling = force_polling
        self.retry_s = retry_s
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> size, mtime, since
        self._retry_after: dict[str, float] = {}
        for where in (self.folder, self.done, self.failed):
            where.mkdir(parents=True, exist_ok=True)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Process files until ``stop_event`` is set; blocking work runs in a thread."""
        await asyncio.to_thread(self.scan)
        async for _ in awatch(self.folder, stop_event=stop_event, recursive=False,
                              debounce=100, step=20, rust_timeout=int(self.settle_s * 1000),
                              yield_on_timeout=True, force_polling=self.force_polling,
                              watch_filter=None):
            await asyncio.to_thread(self.scan)

    def candidates(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir()
                      if p.is_file() and p.name.lower().endswith(self.suffixes)
                      and not p.name.startswith((".", "~"))
                      and not p.name.endswith(RESULT_SUFFIX))

    def scan(self) -> int:
        """Process every settled file once; return how many were processed."""
        now = time.monotonic()
        processed = 0
        present = set()
        for path in self.candidates():
            present.add(path.name)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            seen = self._seen.get(path.name)
            if seen is None or seen[:2] != (stat.st_size, stat.st_mtime_ns):
                self._seen[path.name] = (stat.st_size, stat.st_mtime_ns, now)
                if self.settle_s > 0:
                    continue
            elif now - seen[2] < self.settle_s:
                continue
            if self._retry_after.get(path.name, 0.0) > now:
                continue
            if self.process(path):
                processed += 1
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return processed

    def process(self, path: Path) -> bool:
        """Handle one file and move it out; False if it stays for a retry."""
        try:
            data = path.read_bytes()
            outcome = self.handle(path, data)
        except TransientFailure as exc:
            log.warning("%s stays in %s for another try in %.0f s: %s", path.name, self.folder,
                        self.retry_s, exc)
            self._retry_after[path.name] = time.monotonic() + self.retry_s
            return False
        except FileNotFoundError:
            return False  # taken away while we looked at it
        destination = self._destination(self.failed if outcome.failed else self.done, path.name,
                                        data)
        write_atomically(destination.with_name(destination.name + RESULT_SUFFIX),
                          json.dumps(outcome.result, indent=1, default=str).encode())
        for suffix, content in outcome.extra_files.items():
            write_atomically(destination.with_name(destination.name + suffix), content)
        os.replace(path, destination)
        self._seen.pop(path.name, None)
        self._retry_after.pop(path.name, None)
        return True

    @staticmethod
    def _destination(folder: Path, name: str, data: bytes) -> Path:
        """``folder/name``, or with the content digest in the name if that is taken."""
        target = folder / name
        if not target.exists():
            return target
        stem, dot, suffix = name.rpartition(".")
        return folder / f"{stem}.{hashlib.sha256(data).hexdigest()[:12]}{dot}{suffix}"


def write_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` so that a reader sees the old file or the new one,
    never half of it (a dot-file beside it, then renamed over it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


class DropConnector:
    """A connector fed by a drop folder; a subclass reads a file into entries (``handle``)
    and says, per entry, what became of it through ``send``/``verdict`` or ``refuse``."""

    #: the ingress topic it writes to (``ingress.<source>``)
    source: ClassVar[str]
    #: the file names it takes
    suffixes: ClassVar[tuple[str, ...]]
    #: the rule its own refusals name on the rejected topic (FILE, X12-835)
    rule: ClassVar[str]
    #: what the result file calls the entries it counts (rows, claim payments)
    entries: ClassVar[str]
    #: who it is when ``serve`` is not told otherwise
    default_actor: ClassVar[str]
    default_site: ClassVar[str]

    def __init__(self, connector: Connector, folder: Path, *, verdict_timeout_s: float = 30.0,
                 settle_s: float = 0.3, force_polling: bool = False) -> None:
        self.connector = connector
        self.verdict_timeout_s = verdict_timeout_s
        self.drop = DropFolder(folder, self.suffixes, self.handle, settle_s=settle_s,
                               force_polling=force_polling)

    @property
    def folder(self) -> Path:
        return self.drop.folder

    async def run(self, stop_event: asyncio.Event) -> None:
        await self.drop.run(stop_event)

    @classmethod
    async def serve(cls, settings: Settings, folder: Path, stop_event: asyncio.Event, *,
                    actor_id: str | None = None, site_id: str | None = None,
                    passphrase: bytes | None = None, force_polling: bool = False,
                    ready: Callable[[], object] | None = None) -> None:
        """Open the connector (as ``actor_id`` of ``site_id``; the key store unlocked with
        ``passphrase``, else ``PCVHUB_KEY_PASSPHRASE``), follow the log, call ``ready``, and
        serve ``folder`` until ``stop_event`` is set (``pcvhub serve`` runs the MES one so)."""
        connector = await asyncio.to_thread(Connector.open, settings,
                                            actor_id or cls.default_actor, cls.source,
                                            site_id=site_id or cls.default_site,
                                            passphrase=passphrase)
        try:
            # made before the connector starts: what it watches on the log, it sees whole
            drop = cls(connector, folder, force_polling=force_polling)
            await asyncio.to_thread(connector.start)
            if ready is not None:
                ready()  # the log is read: what is dropped from now on is judged against it
            await drop.run(stop_event)
        finally:
            connector.close()

    def handle(self, path: Path, data: bytes) -> FileResult:
        """Read one dropped file into entries and say what became of each (the subclass's
        protocol); the ``DropFolder`` writes the result and moves the file."""
        raise NotImplementedError

    # -- one entry -------------------------------------------------------------------

    def send(self, request: EventRequest) -> None:
        """Write an entry's event (its ``event_id`` set) so that ``verdict`` can wait for
        the gatekeeper's answer; Kafka unreachable: ``TransientFailure``."""
        assert request.event_id is not None
        self.connector.expect(request.event_id)
        try:
            self.connector.emit([request])
        except IngressWriteError as exc:
            raise TransientFailure(str(exc)) from exc

    def verdict(self, event_id: str) -> dict[str, Any]:
        """The gatekeeper's answer to a sent event, as its result-file entry states it."""
        outcome = self.connector.wait_verdict(event_id, self.verdict_timeout_s)
        if outcome.status is Status.PENDING:
            outcome = replace(outcome, reason=f"{outcome.reason}; drop the file again later "
                                              "to see it here")
        return outcome.as_result(refused_by="gatekeeper")

    def post(self, request: EventRequest) -> dict[str, Any]:
        """Send one entry's event (unless already on the log) and wait for the gatekeeper's
        verdict: its result-file entry (event type, id, status and, if refused, why)."""
        assert request.event_id is not None
        event = {"event_type": request.event_type, "event_id": request.event_id}
        if self.connector.is_accepted(request.event_id):
            return {**event, "status": Status.ALREADY_ACCEPTED.value}
        self.send(request)
        return {**event, **self.verdict(request.event_id)}

    def refuse(self, original: bytes, endpoint: str, refusal: Outcome, *,
               coi: str | None = None, event_type: str | None = None) -> str:
        """Record the connector's own refusal of ``original`` on the rejected topic; the
        refusal's event id (for the result file)."""
        try:
            issued = self.connector.record_refusal(original, endpoint, refusal, coi=coi,
                                                   event_type=event_type)
        except IngressWriteError as exc:
            raise TransientFailure(str(exc)) from exc
        return issued.envelope.event_id

    # -- the result file ---------------------------------------------------------------

    def result(self, name: str, sha256: str, entries: Sequence[dict[str, Any]]
               ) -> dict[str, Any]:
        """The result file of a file read into ``entries``: how many of each status, and
        each entry."""
        counts = {status.value: sum(1 for e in entries if e["status"] == status)
                  for status in Status}
        return {"file": name, "sha256": sha256, "connector": self.connector.actor_id,
                "processed_at": utc_iso(now_us()), self.entries: len(entries), **counts,
                "results": list(entries)}

    def unreadable(self, path: Path, data: bytes, code: str, reason: str, error: str, *,
                   details: Mapping[str, Any] | None = None,
                   extra_files: Mapping[str, bytes] | None = None) -> FileResult:
        """A file that cannot be read into entries at all: refused whole (on the rejected
        topic, with its bytes) and moved to ``failed/`` with ``error`` in its result."""
        refusal = self.refuse(data, f"file://{path}", Outcome.refuse(self.rule, code, reason))
        result = self.result(path.name, hashlib.sha256(data).hexdigest(), [])
        result.update(error=error, refusal_event_id=refusal, **(details or {}))
        return FileResult(result, failed=True, extra_files=extra_files or {})

