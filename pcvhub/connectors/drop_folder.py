"""The drop folder: files put into a folder, each processed once, its result beside it.

The MES / LIMS connector (:mod:`.mes`) and the payer's remittance inbox (:mod:`.payer`)
are both fed this way; each gives a handler (file name and bytes -> :class:`FileResult`)
and :class:`DropFolder` does the rest: watch, wait until a file has settled, write the
result file, move the file to ``done/`` or ``failed/``.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchfiles import awatch

__all__ = ["RESULT_SUFFIX", "DropFolder", "FileResult", "Handler", "TransientFailure",
           "write_atomically"]

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
