"""The ledger's side of the witnesses: send each checkpoint, attach the cosignatures.

``Cosigning`` is called with each new checkpoint the log signed. To every configured
witness it sends ``add-checkpoint`` (c2sp.org/tlog-witness) with a consistency proof from
the size that witness last cosigned: the client starts at 0, and a 409 answer names the
witness's size, so a restarted ledger (or a restarted witness) needs no state of its own
about witnesses. Each answer's lines are verified (``cosign.verify_cosignature``) before
they are attached; lines of a witness that fail, a timeout, or a refusal (a 422/409 split
view) leave that witness out of this checkpoint, with a sentence saying why.

The cosigned note (the log's two lines, then two per witness, in configuration order)
replaces ``tiles/checkpoint`` (same body: the log's commit point is unchanged) and is
appended to ``checkpoints.jsonl``, the ledger's history of what each checkpoint got:
``pcvhub ledger checkpoints`` reads it and flags the checkpoints below quorum.

Witness configuration (JSON)::

    {"quorum": 2, "witnesses": [{"url": "http://127.0.0.1:8601",
                                 "vkey": "<type 0x04 vkey>", "mldsa_vkey": "<0x06 vkey>"}]}

``mldsa_vkey`` may be left out for a witness that cosigns with Ed25519 only.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pcvhub.ledger.cosign import WitnessCount, WitnessKey, count_cosignatures, verify_cosignature
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.log import TransparencyLog
from pcvhub.ledger.note import SignedNote, VerifiedCheckpoint, VerifierKey, verify_checkpoint
from pcvhub.ledger.witness import SIZE_CONTENT_TYPE, Submission

log = logging.getLogger(__name__)

HISTORY_FILE = "checkpoints.jsonl"
#: a witness that does not answer within this is left out of the checkpoint, not waited on
TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class WitnessPolicy:
    """The configured witnesses and how many must cosign a checkpoint."""

    witnesses: tuple[WitnessKey, ...]
    quorum: int

    @classmethod
    def read(cls, path: Path) -> WitnessPolicy:
        try:
            data = json.loads(Path(path).read_text())
            witnesses = tuple(WitnessKey.parse(w["vkey"], w.get("mldsa_vkey"), w.get("url", ""))
                              for w in data["witnesses"])
            quorum = int(data.get("quorum", len(witnesses)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LedgerError(f"witness configuration {path}: {exc}") from None
        if len({w.name for w in witnesses}) != len(witnesses):
            raise LedgerError(f"witness configuration {path} names a witness twice")
        if not 0 <= quorum <= len(witnesses):
            raise LedgerError(f"witness configuration {path}: quorum {quorum} of "
                              f"{len(witnesses)} witnesses")
        return cls(witnesses, quorum)

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"quorum": self.quorum, "witnesses": [
            {"url": w.url, "vkey": str(w.ed25519)}
            | ({"mldsa_vkey": str(w.ml_dsa_44)} if w.ml_dsa_44 is not None else {})
            for w in self.witnesses]}, indent=1))


class WitnessClient:
    """One witness's add-checkpoint over a kept-alive HTTP connection."""

    def __init__(self, witness: WitnessKey, timeout: float = TIMEOUT_SECONDS) -> None:
        if not witness.url:
            raise LedgerError(f"witness {witness.name} has no URL to send checkpoints to")
        self.witness = witness
        self._url = urllib.parse.urlsplit(witness.url.rstrip("/"))
        self._timeout = timeout
        self._connection: http.client.HTTPConnection | None = None
        #: the size this witness last cosigned, as far as the ledger knows
        self.known_size = 0

    def _post(self, body: bytes) -> tuple[int, str, bytes]:
        for attempt in (1, 2):  # a kept-alive connection the witness closed: reconnect once
            if self._connection is None:
                self._connection = http.client.HTTPConnection(
                    self._url.hostname, self._url.port, timeout=self._timeout)
            try:
                self._connection.request("POST", self._url.path + "/add-checkpoint", body,
                                         {"Content-Type": "text/plain"})
                response = self._connection.getresponse()
                return (response.status, response.getheader("Content-Type", ""),
                        response.read())
            except (OSError, http.client.HTTPException):
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def add_checkpoint(self, tlog: TransparencyLog, signed: VerifiedCheckpoint) -> bytes:
        """The witness's verified cosignature lines on ``signed``, or ``LedgerError``."""
        head, name = signed.checkpoint, self.witness.name
        for _ in range(3):  # 409 tells the witness's size: ask again once from there
            old = self.known_size
            proof = tlog.consistency_proof(old, head.size).path if 0 < old < head.size else ()
            try:
                status, kind, body = self._post(Submission(old, proof, signed.note).encode())
            except (OSError, http.client.HTTPException) as exc:
                raise LedgerError(f"witness {name} at {self.witness.url} did not answer: "
                                  f"{exc}") from None
            if status == 200:
                note = SignedNote.parse(signed.note + body, f"cosignature of {name}")
                verify_cosignature(note, self.witness, f"{name}'s answer for size {head.size}")
                self.known_size = head.size
                return b"".join(line for line in body.splitlines(keepends=True)
                                if line.split(b" ", 2)[1:2] == [name.encode()])
            text = body.decode("utf-8", "replace").strip()
            if status == 409 and kind.startswith(SIZE_CONTENT_TYPE) and text.isdigit():
                theirs = int(text)
                if theirs > head.size:
                    raise LedgerError(f"witness {name} has cosigned size {theirs} of "
                                      f"{head.origin}, larger than this log's {head.size}: "
                                      "the log lost leaves it once signed, or another log "
                                      "signs with its keys")
                self.known_size = theirs
                continue
            raise LedgerError(f"witness {name} refused size {head.size} (HTTP {status}): "
                              f"{text[:300]}")
        raise LedgerError(f"witness {name} kept answering 409 for size {head.size}")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


@dataclass(frozen=True)
class Witnessed:
    """A checkpoint with the cosignatures it got, and why each missing one is missing."""

    signed: VerifiedCheckpoint
    count: WitnessCount


class Cosigning:
    """Sends each checkpoint of ``tlog`` to the policy's witnesses (in parallel), attaches
    what they cosigned, and records it (see the module doc)."""

    def __init__(self, tlog: TransparencyLog, policy: WitnessPolicy,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.log = tlog
        self.policy = policy
        self.clients = [WitnessClient(w, timeout) for w in policy.witnesses]
        self._pool = ThreadPoolExecutor(max(1, len(self.clients)),
                                        thread_name_prefix="witness")

    def __call__(self, signed: VerifiedCheckpoint) -> Witnessed:
        def ask(client: WitnessClient) -> bytes | str:
            try:
                return client.add_checkpoint(self.log, signed)
            except LedgerError as exc:
                log.warning("ledger: %s", exc)
                return str(exc)

        answers = list(self._pool.map(ask, self.clients))
        note = signed.note + b"".join(a for a in answers if isinstance(a, bytes))
        refused = {c.witness.name: a for c, a in zip(self.clients, answers, strict=True)
                   if isinstance(a, str)}
        cosigned = VerifiedCheckpoint(signed.checkpoint, signed.timestamp, note)
        self.log.attach_cosignatures(cosigned)
        count = count_cosignatures(note, self.policy.witnesses, self.policy.quorum)
        count = WitnessCount(count.checkpoint, count.cosigned,
                             tuple((n, refused.get(n, why)) for n, why in count.missing),
                             count.quorum)
        record = {"note": note.decode(), "refused": refused}
        with open(self.log.root / HISTORY_FILE, "a") as history:
            history.write(json.dumps(record) + "\n")
            history.flush()
            os.fsync(history.fileno())
        return Witnessed(cosigned, count)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for client in self.clients:
            client.close()


def read_history(folder: Path, log_vkey: VerifierKey, log_mldsa_vkey: VerifierKey,
                 policy: WitnessPolicy) -> Iterator[WitnessCount]:
    """Every recorded checkpoint, its log lines verified and its cosignatures counted
    again (the file is not trusted); a torn last line (a kill mid-append) is skipped."""
    path = Path(folder) / HISTORY_FILE
    if not path.exists():
        return
    with open(path) as history:
        for number, line in enumerate(history, start=1):
            if not line.endswith("\n"):
                break
            where = f"{path} line {number}"
            note = json.loads(line)["note"].encode()
            verify_checkpoint(note, log_vkey, log_mldsa_vkey, where)
            yield count_cosignatures(note, policy.witnesses, policy.quorum, where)
