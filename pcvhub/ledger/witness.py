"""``pcvhub witness``: another organisation's witness of the ledger (c2sp.org/tlog-witness).

A witness (the manufacturer, a payer, a patient advocate) keeps, per log it is configured
for, the latest checkpoint it cosigned. ``POST <prefix>/add-checkpoint`` brings a new one
with a consistency proof from that size; the witness checks, in the spec's order:

- the body's form (``old <size>``, at most 63 proof lines, a blank line, a signed note),
  else 400; the origin is configured, else 404; the log's signature lines verify with the
  log keys the witness trusts (pcvhub requires both, Ed25519 and ML-DSA-44), else 403;
  old size <= new size, else 400;
- old size is the size of the latest checkpoint it cosigned (0 if none), else **409**
  with that size (``text/x.tlog.size``): the log catches up and asks again;
- same size: same root, else **409**; otherwise the RFC 6962 consistency proof from its
  stored root to the new one verifies, else **422**. The 409 is a split view proven (two
  roots the log signed for one size); the 422 is one unless the log sent a broken proof
  (a later, valid proof settles which). Either way the witness keeps both notes and the
  proof as evidence (``evidence/``), says so on stderr, and lists them at
  ``GET <prefix>/evidence``;
- then it stores the new checkpoint (atomically, fsynced) and only then answers 200 with
  its two cosignature lines (``cosign.WitnessKeys.cosign``).

Check and store happen under one lock (the spec's rollback race), and the folder is
locked against a second process. The stored checkpoint is the log's signed note: on start
the witness verifies it again, so a SIGKILL at any moment resumes from the last
checkpoint it answered for, or the one before (never a half-written file).

Folder::

    keys.json      the witness's keys, encrypted (log.save_keys)
    logs.json      the logs it witnesses: origin -> the log's two vkeys
    state/<id>     the latest cosigned checkpoint of each log (id: SHA-256(origin)[:8] hex)
    evidence/      one JSON file per split view
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pcvhub.ledger.cosign import WitnessKeys
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.note import (
    Checkpoint,
    SignedNote,
    VerifiedCheckpoint,
    VerifierKey,
    base64_hash,
    verify_checkpoint,
)
from pcvhub.ledger.proofs import ConsistencyProof, verify_consistency
from pcvhub.ledger.serve import require_loopback
from pcvhub.ledger.tiles import write_file
from pcvhub.trust import merkle

log = logging.getLogger(__name__)

KEY_FILE = "keys.json"
LOGS_FILE = "logs.json"
#: tlog-witness: a client sends at most 63 proof lines
MAX_PROOF_LINES = 63
#: a checkpoint with a few dozen signatures is a few hundred KB at most (ML-DSA lines)
MAX_REQUEST = 1 << 20
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_OLD = re.compile(r"old (0|[1-9][0-9]*)")


@dataclass(frozen=True)
class WitnessedLog:
    """A log the witness is configured for: its origin and the two keys it signs with."""

    origin: str
    ed25519: VerifierKey
    ml_dsa_44: VerifierKey

    def to_json(self) -> dict[str, str]:
        return {"vkey": str(self.ed25519), "mldsa_vkey": str(self.ml_dsa_44)}


def read_logs(folder: Path) -> dict[str, WitnessedLog]:
    path = folder / LOGS_FILE
    if not path.exists():
        return {}
    logs = {}
    for origin, keys in json.loads(path.read_text()).items():
        logs[origin] = WitnessedLog(origin, VerifierKey.parse(keys["vkey"]),
                                    VerifierKey.parse(keys["mldsa_vkey"]))
    return logs


def trust_log(folder: Path, vkey: str, mldsa_vkey: str) -> WitnessedLog:
    """Add (or replace) a log in ``logs.json``; its origin is its keys' name."""
    ed, pq = VerifierKey.parse(vkey), VerifierKey.parse(mldsa_vkey)
    if ed.name != pq.name:
        raise LedgerError(f"the two vkeys name two logs: {ed.name} and {pq.name}")
    entry = WitnessedLog(ed.name, ed, pq)
    logs = read_logs(folder)
    logs[entry.origin] = entry
    write_file(folder / LOGS_FILE, json.dumps(
        {o: w.to_json() for o, w in sorted(logs.items())}, indent=1).encode())
    return entry


def _state_id(origin: str) -> str:
    return hashlib.sha256(origin.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Answer:
    """An add-checkpoint response: status, content type, body."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Submission:
    """An add-checkpoint request body, parsed (tlog-witness)."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes

    @classmethod
    def parse(cls, body: bytes) -> Submission:
        head, sep, note = body.partition(b"\n\n")
        if not sep:
            raise LedgerError("add-checkpoint body has no blank line between the old size "
                              "and proof lines and the checkpoint")
        lines = head.decode("ascii", "replace").split("\n")
        match = _OLD.fullmatch(lines[0])
        if match is None:
            raise LedgerError(f"add-checkpoint line 1 is {lines[0][:40]!r}, not 'old <size>' "
                              "(decimal, no leading zeroes)")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise LedgerError(f"add-checkpoint carries {len(lines) - 1} proof lines; at most "
                              f"{MAX_PROOF_LINES}")
        proof = []
        for number, line in enumerate(lines[1:], start=2):
            digest = base64_hash(line)
            if digest is None:
                raise LedgerError(f"add-checkpoint line {number} is not the base64 of a "
                                  "32-byte hash")
            proof.append(digest)
        return cls(int(match.group(1)), tuple(proof), note)

    def encode(self) -> bytes:
        lines = [f"old {self.old_size}"] + [base64.b64encode(h).decode() for h in self.proof]
        return ("\n".join(lines) + "\n\n").encode() + self.note


class Witness:
    """The witness's state and its one decision (``add_checkpoint``); no HTTP here.

    :param folder: see the module doc; ``keys`` unlock ``keys.json``.
    :param clock: POSIX seconds, for the cosignatures' timestamps.
    """

    def __init__(self, folder: Path, keys: WitnessKeys,
                 clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder)
        self.keys = keys
        self.clock = clock
        self.logs = read_logs(self.folder)
        self._lock = threading.Lock()
        self._folder_lock = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._folder_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._folder_lock)
            raise LedgerError(f"another witness process holds {self.folder}: one writer per "
                              "state folder") from None
        self.latest: dict[str, VerifiedCheckpoint] = {}
        for origin, known in self.logs.items():
            path = self.folder / "state" / _state_id(origin)
            if path.exists():
                self.latest[origin] = verify_checkpoint(path.read_bytes(), known.ed25519,
                                                        known.ml_dsa_44, where=str(path))

    def close(self) -> None:
        if self._folder_lock >= 0:
            os.close(self._folder_lock)  # releases the folder to the next process
            self._folder_lock = -1

    # -- the protocol ---------------------------------------------------------------------

    def add_checkpoint(self, body: bytes) -> Answer:
        try:
            request = Submission.parse(body)
            note = SignedNote.parse(request.note, "submitted checkpoint")
            head = Checkpoint.parse_body(note.text)
        except (LedgerError, UnicodeDecodeError) as exc:
            return Answer(HTTPStatus.BAD_REQUEST, f"{exc}\n".encode())
        known = self.logs.get(head.origin)
        if known is None:
            return Answer(HTTPStatus.NOT_FOUND, f"{self.keys.name} does not witness "
                                                f"{head.origin}\n".encode())
        try:
            signed = verify_checkpoint(request.note, known.ed25519, known.ml_dsa_44,
                                       where=f"checkpoint {head.origin} size {head.size}")
        except LedgerError as exc:
            return Answer(HTTPStatus.FORBIDDEN, f"{exc}\n".encode())
        if request.old_size > head.size:
            return Answer(HTTPStatus.BAD_REQUEST, f"old size {request.old_size} exceeds the "
                                                  f"checkpoint's size {head.size}\n".encode())
        with self._lock:
            latest = self.latest.get(head.origin)
            latest_size = latest.checkpoint.size if latest is not None else 0
            if request.old_size != latest_size:
                return Answer(HTTPStatus.CONFLICT, f"{latest_size}\n".encode(),
                              SIZE_CONTENT_TYPE)
            if request.proof and request.old_size in (0, head.size):
                return Answer(HTTPStatus.BAD_REQUEST, f"from size {request.old_size} to "
                              f"{head.size} the proof is empty, not {len(request.proof)} "
                              "lines\n".encode())
            latest_root = latest.checkpoint.root if latest is not None else merkle.root_of([])
            try:
                verify_consistency(ConsistencyProof(request.old_size, head.size, request.proof),
                                   latest_root, head.root)
            except LedgerError as exc:
                if request.old_size == head.size:  # two roots the log signed for one size
                    reason = f"split view: {exc}"
                    status = HTTPStatus.CONFLICT
                else:
                    reason = (f"split view, or a broken proof (both checkpoints kept): {exc}")
                    status = HTTPStatus.UNPROCESSABLE_ENTITY
                self._keep_evidence(latest, signed, request, reason)
                return Answer(status, f"{reason}\n".encode())
            # persisted before answering: a cosignature is never given for a state a
            # restart could forget
            write_file(self.folder / "state" / _state_id(head.origin), request.note)
            self.latest[head.origin] = signed
            lines = self.keys.cosign(head, int(self.clock()))
        return Answer(HTTPStatus.OK, lines)

    # -- evidence -------------------------------------------------------------------------

    def _keep_evidence(self, latest: VerifiedCheckpoint | None, shown: VerifiedCheckpoint,
                       request: Submission, reason: str) -> Path:
        record = {"witness": self.keys.name, "origin": shown.checkpoint.origin,
                  "found_at": int(self.clock()), "reason": reason,
                  "cosigned": latest.note.decode() if latest is not None else None,
                  "shown": shown.note.decode(), "old_size": request.old_size,
                  "proof": [base64.b64encode(h).decode() for h in request.proof]}
        data = json.dumps(record, indent=1).encode()
        path = (self.folder / "evidence"
                / f"{_state_id(shown.checkpoint.origin)}-{hashlib.sha256(data).hexdigest()[:16]}"
                  ".json")
        write_file(path, data)
        log.error("witness %s: SPLIT VIEW of %s: cosigned size %s, shown size %s: %s "
                  "(evidence %s)", self.keys.name, shown.checkpoint.origin,
                  latest.checkpoint.size if latest else 0, shown.checkpoint.size, reason, path)
        return path

    def evidence(self) -> list[dict[str, object]]:
        """Every split view kept, oldest first."""
        folder = self.folder / "evidence"
        records = [json.loads(p.read_text()) for p in folder.glob("*.json")] \
            if folder.exists() else []
        return sorted(records, key=lambda r: (r["found_at"], r["shown"]))


class WitnessServer(ThreadingHTTPServer):
    """``witness`` over HTTP on loopback: ``POST /add-checkpoint``, ``GET /evidence``."""

    daemon_threads = True

    def __init__(self, witness: Witness, host: str = "127.0.0.1", port: int = 0) -> None:
        require_loopback(host, f"witness {witness.keys.name} listens")
        self.witness = witness
        super().__init__((host, port), _WitnessHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _WitnessHandler(BaseHTTPRequestHandler):
    server: WitnessServer
    protocol_version = "HTTP/1.1"  # keep-alive, as tlog-witness recommends

    def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
        if self.path.split("?", 1)[0] != "/add-checkpoint":
            self._send(Answer(HTTPStatus.NOT_FOUND, b"POST /add-checkpoint only\n"))
            return
        length = int(self.headers.get("Content-Length") or -1)
        if not 0 <= length <= MAX_REQUEST:
            self.close_connection = True  # the unread body must not be taken for a request
            self._send(Answer(HTTPStatus.BAD_REQUEST if length < 0
                              else HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"a body of 0 to {MAX_REQUEST} bytes with Content-Length\n"
                              .encode()))
            return
        self._send(self.server.witness.add_checkpoint(self.rfile.read(length)))

    def do_GET(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/evidence":
            self._send(Answer(HTTPStatus.NOT_FOUND, b"GET /evidence only\n"))
            return
        self._send(Answer(HTTPStatus.OK, json.dumps(self.server.witness.evidence()).encode(),
                          "application/json"))

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return
