"""An audit bundle: one therapy's records and all it takes to verify them with no network.

A bundle is a folder (``pcvhub audit export COI --out BUNDLE`` writes it)::

    manifest.json      {"format", "coi", "records", "seals", "missing", "archive"}: what
                       the files hold ("archive": 1 with an archive seal; older bundles
                       have no "archive" and no seal)
    trust-anchor.json  the deployment's trust anchor (the first registrar's public keys)
                       with the ledger's two verifier keys under "ledger"
    checkpoint         the ledger's signed checkpoint every proof leads to (its two lines)
    records.jsonl      one record a line, in log order per partition: the registry chain
                       first (the keys and actors that signed), then the therapy's canonical
                       events, refusals and alerts. Each: topic, partition, offset, key,
                       value and headers exactly as the broker returned them, and the ledger
                       leaf index and inclusion path of its leaf
    seals.jsonl        the gatekeeper's signed batch heads the records name, by offset
    missing.jsonl      leaves the ledger logged on the partitions read that the broker no
                       longer holds (the entry and its inclusion path): each is a failure
    schemas/           the catalog's .avsc files (any Avro reader decodes the values)
    archive-seal       (if the log had sealed one) the latest daily archive seal of a
                       checkpoint no larger than ``checkpoint`` (``ledger.archive``), and
    archive-proof.json the consistency proof from that checkpoint to ``checkpoint``

Every JSON line and file is canonical (sorted keys, no spaces, bytes as lowercase hex), and
the reader rejects any that is not: so a one-byte change is never a harmless re-spelling,
it is a different claim that some check below refuses, naming what failed.

``verify_bundle`` checks a bundle offline, with the code the hub reads its own log with:

1. the checkpoint's Ed25519 and ML-DSA-44 lines against the ledger's keys in the anchor;
2. every record through a ``LogVerifier`` started from the bundle's trust anchor, reading
   batch heads from ``seals.jsonl`` (decoding, the signer's registration, both
   signatures, the gatekeeper's seal, the therapy's hash chain: what ``pcvhub log check``
   checks);
3. each admitted record's ledger leaf (``follow.leaf_of``: chain digest, position, seal)
   against the checkpoint's root along its inclusion path;
4. the .avsc files are the released ones of the verifying pcvhub;
5. the archive seal (SPHINCS+, hash-based) against the archive key in the anchor, and the
   consistency proof from the sealed checkpoint to the bundle's: the history the bundle
   proves against extends one sealed with no trust in Ed25519 or ML-DSA.

What it cannot see: that the bundle holds *all* of the therapy's records. The hash chain
ties every canonical event to the one before it (a record cut from the middle breaks it),
and the exporter lists in ``missing.jsonl`` whatever the ledger logged that the broker lost;
a tail cut before export and not logged is the ledger's to name (``pcvhub ledger run``
reports each logged record that is gone).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcvhub.ledger.archive import verify_archive_seal
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.follow import leaf_of
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.note import (
    EM_DASH,
    SignedNote,
    VerifiedCheckpoint,
    VerifierKey,
    verify_checkpoint,
)
from pcvhub.ledger.proofs import (
    ConsistencyProof,
    InclusionProof,
    verify_consistency,
    verify_inclusion,
)
from pcvhub.log.reader import registry_partition
from pcvhub.log.verify import (
    CANONICAL,
    LogPosition,
    LogVerifier,
    Quarantined,
    RawRecord,
    VerifiedRecord,
)
from pcvhub.schemas.catalog import SCHEMA_DIR
from pcvhub.times import utc_iso
from pcvhub.topics import SEAL_HEADER
from pcvhub.trust.archive import ARCHIVE_ALGORITHM, ArchiveBackendMissing
from pcvhub.trust.consent import ConsentRecord
from pcvhub.trust.registry import REGISTRY_COI, load_anchor
from pcvhub.trust.seal import Seal, SealError

FORMAT = "pcvhub-audit-bundle/v1"
MANIFEST, ANCHOR, CHECKPOINT = "manifest.json", "trust-anchor.json", "checkpoint"
RECORDS, SEALS, MISSING, SCHEMAS = "records.jsonl", "seals.jsonl", "missing.jsonl", "schemas"
ARCHIVE_SEAL, ARCHIVE_PROOF = "archive-seal", "archive-proof.json"
_MANIFEST_KEYS = {"format", "coi", "records", "seals", "missing"}
#: the anchor's entry that names the ledger's verifier keys
LEDGER_ENTRY = "ledger"
CONSENT_EVENTS = ("ConsentGranted", "ConsentWitnessed", "ConsentWithdrawn")
_HEX = re.compile(r"(?:[0-9a-f]{2})*")


class BundleError(ValueError):
    """A bundle file that cannot be read at all (named, with the line)."""


def canonical(value: Any) -> str:
    """The one spelling of a JSON value in a bundle."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _unhex(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise BundleError(f"{what} is not lowercase hex of whole bytes")
    return bytes.fromhex(value)


def _parse(text: str, where: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BundleError(f"{where} is not JSON: {exc}") from None
    if canonical(value) != text:
        raise BundleError(f"{where} is not in canonical form (sorted keys, no spaces): it was "
                          "edited after export")
    return value


# -- the bundle's parts ------------------------------------------------------------------------

@dataclass(frozen=True)
class BundledRecord:
    """One record as exported: the broker's bytes and its ledger inclusion proof."""

    record: RawRecord
    proof: InclusionProof

    def line(self) -> str:
        position = self.record.position
        return canonical({"topic": position.topic, "partition": position.partition,
                          "offset": position.offset, "key": _hex(self.record.key),
                          "value": _hex(self.record.value),
                          "headers": [[k, v.hex()] for k, v in self.record.headers],
                          "leaf": self.proof.index,
                          "path": [h.hex() for h in self.proof.path]})

    @classmethod
    def parse(cls, text: str, size: int, where: str) -> BundledRecord:
        data = _parse(text, where)
        try:
            position = LogPosition(str(data["topic"]), int(data["partition"]),
                                   int(data["offset"]))
            key = None if data["key"] is None else _unhex(data["key"], f"{where} key")
            value = None if data["value"] is None else _unhex(data["value"], f"{where} value")
            headers = tuple((str(k), _unhex(v, f"{where} header {k}"))
                            for k, v in data["headers"])
            path = tuple(_unhex(h, f"{where} path") for h in data["path"])
            leaf = int(data["leaf"])
            if set(data) != {"topic", "partition", "offset", "key", "value", "headers",
                             "leaf", "path"}:
                raise BundleError(f"{where} holds fields other than a record's")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(f"{where} is not a bundled record: {exc!r}") from None
        return cls(RawRecord(position, key, value, headers), InclusionProof(leaf, size, path))


@dataclass(frozen=True)
class MissingLeaf:
    """A leaf the ledger logged on a partition the export read, gone from the broker."""

    entry: bytes
    proof: InclusionProof

    def line(self) -> str:
        return canonical({"entry": self.entry.hex(), "leaf": self.proof.index,
                          "path": [h.hex() for h in self.proof.path]})


def strip_note(signed: VerifiedCheckpoint, ed25519_key: VerifierKey,
               ml_dsa_44_key: VerifierKey) -> bytes:
    """The checkpoint with the log's own two lines only (witness lines dropped: the bundle
    names no witness keys, so they could not be checked), each in canonical base64."""
    note = SignedNote.parse(signed.note)
    own = {ed25519_key.key_id, ml_dsa_44_key.key_id}
    lines = [f"{EM_DASH} {s.name} {base64.b64encode(s.key_id + s.signature).decode()}\n"
             for s in note.signatures if s.name == ed25519_key.name and s.key_id in own]
    return note.text + b"\n" + "".join(lines).encode()


def schema_files() -> Iterator[Path]:
    """The catalog's .avsc files, relative to the catalog folder."""
    for path in sorted(SCHEMA_DIR.rglob("*.avsc")):
        yield path.relative_to(SCHEMA_DIR)


def write_bundle(out: Path, coi: str, anchor: dict[str, Any], checkpoint: bytes,
                 records: Iterable[BundledRecord], heads: dict[int, bytes],
                 missing: Iterable[MissingLeaf] = (),
                 archive: tuple[bytes, ConsistencyProof] | None = None) -> int:
    """Write a bundle folder (it must not exist, or be empty); how many records.

    :param archive: an archive seal's bytes and the consistency proof from its checkpoint
        to ``checkpoint``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} exists and is not empty: a bundle goes to a fresh folder")
    out.mkdir(parents=True, exist_ok=True)
    records, missing = list(records), list(missing)
    (out / ANCHOR).write_text(canonical(anchor))
    (out / CHECKPOINT).write_bytes(checkpoint)
    (out / RECORDS).write_text("".join(r.line() + "\n" for r in records))
    (out / SEALS).write_text("".join(canonical({"offset": o, "value": v.hex()}) + "\n"
                                     for o, v in sorted(heads.items())))
    (out / MISSING).write_text("".join(m.line() + "\n" for m in missing))
    for rel in schema_files():
        target = out / SCHEMAS / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((SCHEMA_DIR / rel).read_bytes())
    if archive is not None:
        (out / ARCHIVE_SEAL).write_bytes(archive[0])
        (out / ARCHIVE_PROOF).write_text(canonical(archive[1].to_json()))
    (out / MANIFEST).write_text(canonical({"format": FORMAT, "coi": coi,
                                           "records": len(records), "seals": len(heads),
                                           "missing": len(missing),
                                           "archive": int(archive is not None)}))
    return len(records)


# -- verifying ----------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the verification: a record, or a part of the bundle, and its result."""

    part: str            # "registry", "therapy", "checkpoint", "schemas", "ledger", "bundle"
    where: str           # position (topic[partition]@offset), file or leaf
    what: str            # event type, or the part's name
    ok: bool
    detail: str = ""
    coi: str = ""
    occurred_at_us: int | None = None
    signer: str = ""

    def __str__(self) -> str:
        therapy = f"therapy {self.coi} " if self.coi else ""
        return f"{therapy}{self.where} ({self.what}): {self.detail}"


@dataclass(frozen=True)
class ConsentLine:
    """One consent event of the therapy, as the patient would read it."""

    occurred_at_us: int
    event_type: str
    scope: str
    signed_by: str
    signer: str
    position: str
    ok: bool
    detail: str = ""


@dataclass
class BundleReport:
    """What ``verify_bundle`` found: rows in order, the first failure, the consents."""

    coi: str = ""
    anchor_sha256: str = ""
    checkpoint: VerifiedCheckpoint | None = None
    rows: list[Row] = field(default_factory=list)
    consents: list[ConsentLine] = field(default_factory=list)
    registry_records: int = 0
    #: what the archive seal showed (empty: the bundle has none)
    archive: str = ""

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failures and self.checkpoint is not None

    def fail(self, part: str, where: str, what: str, detail: str, **extra: Any) -> None:
        self.rows.append(Row(part, where, what, False, detail, **extra))


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise BundleError(f"{path.name} is missing from the bundle")
    text = path.read_text(encoding="utf-8", errors="strict")
    if text and not text.endswith("\n"):
        raise BundleError(f"{path.name} does not end in a newline: cut short or edited")
    return text.splitlines()


def _anchor_keys(path: Path) -> tuple[VerifierKey, VerifierKey]:
    anchor = _parse(path.read_text(), ANCHOR)
    entry = anchor.get(LEDGER_ENTRY) if isinstance(anchor, dict) else None
    if not isinstance(entry, dict):
        raise BundleError(f"{ANCHOR} names no ledger keys (its {LEDGER_ENTRY!r} entry)")
    try:
        return VerifierKey.parse(entry["vkey"]), VerifierKey.parse(entry["mldsa_vkey"])
    except (KeyError, LedgerError) as exc:
        raise BundleError(f"{ANCHOR}: the ledger's keys are unreadable: {exc}") from None


def verify_bundle(folder: Path, pinned_anchor: Path | None = None,
                  against: Iterable[bytes] = ()) -> BundleReport:
    """Verify a bundle offline (see the module doc); every failure is a row naming it.

    :param pinned_anchor: a trust anchor the auditor holds (from the deployment, not from
        the bundle): the bundle's registrar and ledger keys must be its own.
    :param against: other checkpoints of the same log the auditor holds (another party's
        bundle, a witness's copy): one of the same size with another root is a split view.
    """
    folder = Path(folder)
    report = BundleReport()
    try:
        _verify(folder, report, pinned_anchor, list(against))
    except (LedgerError, OSError, ValueError, KeyError, TypeError) as exc:
        # BundleError and UnicodeDecodeError are ValueErrors: a file that cannot be read
        report.fail("bundle", folder.name, "bundle", str(exc) or repr(exc))
    return report


def _verify(folder: Path, report: BundleReport, pinned: Path | None,
            against: list[bytes]) -> None:
    manifest = _parse(_read_text(folder / MANIFEST), MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or set(manifest) not in (
            _MANIFEST_KEYS, _MANIFEST_KEYS | {"archive"}) or manifest.get("archive", 0) not in (
            0, 1):
        raise BundleError(f"{MANIFEST} is not a {FORMAT} manifest")
    coi = report.coi = str(manifest["coi"])
    anchor_path = folder / ANCHOR
    report.anchor_sha256 = hashlib.sha256(anchor_path.read_bytes()).hexdigest()
    ed_key, pq_key = _anchor_keys(anchor_path)
    if pinned is not None:
        _pin(anchor_path, pinned, report)

    # 1. the checkpoint, against the ledger's keys in the anchor
    note = (folder / CHECKPOINT).read_bytes()
    try:
        signed = verify_checkpoint(note, ed_key, pq_key, where=CHECKPOINT)
        if strip_note(signed, ed_key, pq_key) != note:
            raise LedgerError(f"{CHECKPOINT} holds lines other than the log's two, or a "
                              "signature not in canonical base64: edited after export")
    except LedgerError as exc:
        report.fail("checkpoint", CHECKPOINT, "checkpoint", str(exc))
        return
    report.checkpoint = signed
    head = signed.checkpoint
    for n, other in enumerate(against, start=1):
        _compare(signed, other, ed_key, pq_key, f"checkpoint given #{n}", report)
    _archive(folder, manifest, anchor_path, signed, ed_key, pq_key, report)

    # 2. the schemas are the released ones
    _schemas(folder, report)

    # 3. the records, through the hub's own log verifier, and their leaves in the ledger
    heads: dict[int, bytes] = {}
    seal_lines = _lines(folder / SEALS)
    for n, text in enumerate(seal_lines, start=1):
        try:
            data = _parse(text, f"{SEALS} line {n}")
            heads[int(data["offset"])] = _unhex(data["value"], f"{SEALS} line {n}")
        except (BundleError, KeyError, TypeError, ValueError) as exc:
            # left out: the records that name this head fail as unsealed, and say so
            report.fail("bundle", f"{SEALS} line {n}", "batch head", f"unreadable: {exc}")
    lines = _lines(folder / RECORDS)
    if len(lines) != manifest["records"] or len(seal_lines) != manifest["seals"]:
        report.fail("bundle", MANIFEST, "manifest",
                    f"says {manifest['records']} records and {manifest['seals']} batch heads; "
                    f"the bundle holds {len(lines)} and {len(seal_lines)}: a record or head was "
                    "added or removed")
    try:
        registry = load_anchor(anchor_path)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{ANCHOR}: the registrar's keys are unreadable: {exc!r}") from None
    verifier = LogVerifier(registry, registry_partition(),
                           seals=heads.get, reader="audit verify")
    consent = ConsentRecord()
    named: set[int] = set()
    for n, text in enumerate(lines, start=1):
        where = f"{RECORDS} line {n}"
        try:
            bundled = BundledRecord.parse(text, head.size, where)
        except BundleError as exc:
            report.fail("therapy", where, "record", f"{exc}; the record cannot be read",
                        coi=coi)
            continue
        _record(bundled, coi, verifier, head.root, consent, report, named)
    unnamed = sorted(set(heads) - named)
    if unnamed:
        report.fail("bundle", SEALS, "batch heads",
                    f"holds heads no record names (seals@{unnamed[0]}...): added after export")

    # 4. what the ledger logged and the broker lost
    missing = _lines(folder / MISSING)
    if len(missing) != manifest["missing"]:
        report.fail("bundle", MANIFEST, "manifest",
                    f"says {manifest['missing']} missing records; {MISSING} lists "
                    f"{len(missing)}: a line was removed or added")
    for n, text in enumerate(missing, start=1):
        _missing(text, f"{MISSING} line {n}", head.size, head.root, report)


def _archive(folder: Path, manifest: dict[str, Any], anchor_path: Path,
             signed: VerifiedCheckpoint, ed_key: VerifierKey, pq_key: VerifierKey,
             report: BundleReport) -> None:
    """5. the archive seal and its consistency proof to the bundle's checkpoint."""
    held = [name for name in (ARCHIVE_SEAL, ARCHIVE_PROOF) if (folder / name).exists()]
    if not manifest.get("archive"):
        if held:
            report.fail("archive", held[0], "archive seal",
                        f"the manifest lists no archive seal but the bundle holds {held[0]}: "
                        "added after export")
        return
    if len(held) != 2:
        missing = ARCHIVE_PROOF if ARCHIVE_SEAL in held else ARCHIVE_SEAL
        report.fail("archive", missing, "archive seal",
                    f"the manifest lists an archive seal but {missing} is missing")
        return
    entry = _parse(anchor_path.read_text(), ANCHOR).get(LEDGER_ENTRY, {})
    key = entry.get("archive_key") if isinstance(entry, dict) else None
    if key is None:
        report.fail("archive", ANCHOR, "archive seal",
                    f"the bundle holds an archive seal but {ANCHOR} names no archive key "
                    "(its ledger entry's archive_key)")
        return
    try:
        seal, sealed = verify_archive_seal((folder / ARCHIVE_SEAL).read_bytes(),
                                           _unhex(key, f"{ANCHOR} archive_key"), ed_key, pq_key,
                                           where=ARCHIVE_SEAL)
        proof = ConsistencyProof.from_json(_parse(_read_text(folder / ARCHIVE_PROOF),
                                                  ARCHIVE_PROOF))
        old, new = sealed.checkpoint, signed.checkpoint
        if (proof.old_size, proof.new_size) != (old.size, new.size):
            raise LedgerError(f"{ARCHIVE_PROOF} is a proof from {proof.old_size} to "
                              f"{proof.new_size} leaves, not from the sealed {old.size} to the "
                              f"bundle's {new.size}")
        verify_consistency(proof, old.root, new.root)
    except (LedgerError, ArchiveBackendMissing) as exc:
        report.fail("archive", ARCHIVE_SEAL, "archive seal", str(exc))
        return
    report.archive = (f"checkpoint {sealed.checkpoint.size} sealed with {ARCHIVE_ALGORITHM} "
                      f"at {utc_iso(seal.sealed_at * 1_000_000)}; the bundle's checkpoint "
                      f"{signed.checkpoint.size} extends it (consistency proof verified)")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise BundleError(f"{path.name} is missing: not an audit bundle")
    return path.read_text(encoding="utf-8", errors="strict")


def _pin(anchor_path: Path, pinned: Path, report: BundleReport) -> None:
    ours = json.loads(anchor_path.read_text())
    theirs = json.loads(pinned.read_text())
    fields = ("actor_id", "key_id", "ed25519", "ml_dsa_65", "valid_from_us")
    differ = [f for f in fields if ours.get(f) != theirs.get(f)]
    ledger = theirs.get(LEDGER_ENTRY)
    if ledger is not None and ledger != ours.get(LEDGER_ENTRY):
        differ.append(LEDGER_ENTRY)
    if differ:
        report.fail("bundle", ANCHOR, "trust anchor",
                    f"differs from the anchor {pinned} in {', '.join(differ)}: the bundle was "
                    "signed under other keys than this deployment's")


def _compare(signed: VerifiedCheckpoint, other: bytes, ed_key: VerifierKey,
             pq_key: VerifierKey, where: str, report: BundleReport) -> None:
    try:
        theirs = verify_checkpoint(other, ed_key, pq_key, where=where)
    except LedgerError as exc:
        report.fail("checkpoint", where, "checkpoint", f"not the log's: {exc}")
        return
    mine, them = signed.checkpoint, theirs.checkpoint
    if mine.size == them.size and mine.root != them.root:
        report.fail("checkpoint", where, "split view",
                    f"SPLIT VIEW: the log signed two trees of size {mine.size}, root "
                    f"{mine.root.hex()[:16]}... (this bundle) and {them.root.hex()[:16]}... "
                    f"({where}); keep both notes: together they prove the log forked")


def _schemas(folder: Path, report: BundleReport) -> None:
    ours = set(schema_files())
    held = {p.relative_to(folder / SCHEMAS) for p in (folder / SCHEMAS).rglob("*")
            if p.is_file()}
    for rel in sorted(ours | held):
        if rel not in held:
            report.fail("schemas", f"{SCHEMAS}/{rel}", "schema", "missing from the bundle")
        elif rel not in ours:
            report.fail("schemas", f"{SCHEMAS}/{rel}", "schema",
                        "is no schema of this pcvhub's catalog")
        elif (folder / SCHEMAS / rel).read_bytes() != (SCHEMA_DIR / rel).read_bytes():
            report.fail("schemas", f"{SCHEMAS}/{rel}", "schema",
                        "differs from the released schema of that name")


def _record(bundled: BundledRecord, coi: str, verifier: LogVerifier, root: bytes,
            consent: ConsentRecord, report: BundleReport, named: set[int]) -> None:
    record = bundled.record
    seal = record.header(SEAL_HEADER)
    if seal is not None:
        try:
            named.add(Seal.decode(seal).head_offset)
        except SealError:
            pass  # the verifier names it
    registry = record.key == REGISTRY_COI.encode() and record.topic == CANONICAL
    part = "registry" if registry else "therapy"
    if not registry and record.key != coi.encode():
        report.fail(part, str(record.position), "record",
                    f"its key {record.key!r} is neither the therapy {coi} nor the registry "
                    "chain", coi=coi)
        return
    extra: dict[str, Any] = {"coi": REGISTRY_COI if registry else coi}
    outcome = verifier.admit(record)
    if isinstance(outcome, Quarantined):
        env = outcome.envelope
        if env is not None:
            extra.update(occurred_at_us=env.occurred_at_us, signer=env.producer)
        report.fail(part, str(record.position), outcome.event_type or "record",
                    f"{outcome.code}: {outcome.reason}", **extra)
        _consent_line(outcome, None, report, False, f"{outcome.code}: {outcome.reason}")
        return
    extra.update(occurred_at_us=outcome.envelope.occurred_at_us,
                 signer=outcome.envelope.producer)
    leaf = leaf_of(outcome).encode()
    try:
        verify_inclusion(leaf, bundled.proof, root)
    except LedgerError as exc:
        report.fail(part, str(record.position), outcome.event_type,
                    f"NOT_IN_LEDGER: its leaf (chain digest, position, seal) is not proved "
                    f"by the checkpoint: {exc}", **extra)
        _consent_line(outcome, consent, report, False, "NOT_IN_LEDGER")
        return
    if registry:
        report.registry_records += 1
    chained = "chained; " if record.topic == CANONICAL else ""
    report.rows.append(Row(part, str(record.position), outcome.event_type, True,
                           f"signed, sealed, {chained}ledger leaf {bundled.proof.index}",
                           **extra))
    _consent_line(outcome, consent, report, True)


def _consent_line(outcome: VerifiedRecord | Quarantined, consent: ConsentRecord | None,
                  report: BundleReport, ok: bool, detail: str = "") -> None:
    if outcome.event_type not in CONSENT_EVENTS + ("PatientCredentialIssued",):
        return
    env = outcome.envelope
    if env is None:
        return
    signed_by = "?"
    if isinstance(outcome, VerifiedRecord) and consent is not None:
        # the one fold of consent facts (the gatekeeper's R2/R7 read the same)
        consent.fold(outcome.event_type, outcome.payload, env.event_id, env.occurred_at_us,
                     env.producer, env.key_id)
        if outcome.event_type == "ConsentWithdrawn":
            signed_by = "PATIENT" if consent.patient_credential(env.producer, env.key_id) \
                else "withdrawal"
        elif outcome.event_type in ("ConsentGranted", "ConsentWitnessed"):
            scope = outcome.payload["scope"]
            signed_by = str(consent.consents[scope][-1].signed_by)
    if outcome.event_type == "PatientCredentialIssued":
        return  # binds the card: needed to say PATIENT, not itself a consent
    scope = outcome.payload.get("scope", "?") if isinstance(outcome, VerifiedRecord) else "?"
    report.consents.append(ConsentLine(env.occurred_at_us, outcome.event_type, str(scope),
                                       signed_by, env.producer, str(outcome.position), ok,
                                       detail))


def _missing(text: str, where: str, size: int, root: bytes, report: BundleReport) -> None:
    data = _parse(text, where)
    entry = _unhex(data["entry"], f"{where} entry")
    proof = InclusionProof(int(data["leaf"]), size,
                           tuple(_unhex(h, f"{where} path") for h in data["path"]))
    try:
        leaf = LedgerLeaf.decode(entry, f"leaf {proof.index}")
        verify_inclusion(entry, proof, root)
    except LedgerError as exc:
        report.fail("ledger", where, "missing record", f"unproved: {exc}")
        return
    report.fail("ledger", leaf.position, "missing record",
                f"MISSING_FROM_LOG: the ledger logged it as leaf {proof.index} (proved by the "
                f"checkpoint; chain digest {leaf.chain_digest.hex()[:16]}...) but the broker "
                "no longer holds it: deleted or truncated after it was written")
