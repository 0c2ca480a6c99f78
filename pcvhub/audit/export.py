"""``pcvhub audit export COI --out BUNDLE``: one therapy's records, as the broker holds them,
with their ledger proofs, into a bundle (``pcvhub.audit.bundle``) that verifies offline.

The exporter reads, with the reader principal and as raw records (nothing is re-encoded):
the registry chain (every key and actor that signed), the therapy's partition of the
canonical topic, and the rejected and alerts topics, keeping the records keyed by the
therapy's CoI; the gatekeeper's batch heads those records name; and the ledger's folder,
read-only beside a running ``pcvhub ledger run`` (``LogSnapshot``: its signed checkpoint
and what it covers). It waits (``wait``) for a checkpoint that covers every record, and
lists the leaves the ledger logged on the partitions it read that the broker no longer
holds. It checks nothing itself: ``audit verify`` does, with no network.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcvhub.audit.bundle import (
    LEDGER_ENTRY,
    BundledRecord,
    BundleError,
    MissingLeaf,
    strip_note,
    write_bundle,
)
from pcvhub.config import Settings
from pcvhub.ledger.archive import ARCHIVE_DIR
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import KEY_FILE, LogSnapshot, archive_public_key
from pcvhub.ledger.note import VerifierKey
from pcvhub.ledger.proofs import ConsistencyProof
from pcvhub.log.reader import SealLookup, read_raw, registry_partition
from pcvhub.log.verify import ALERTS, CANONICAL, REJECTED, RawRecord
from pcvhub.topics import SEAL_HEADER, partition_for, topic_spec
from pcvhub.trust.registry import ANCHOR_FILE, REGISTRY_COI
from pcvhub.trust.seal import Seal, SealError

Position = tuple[str, int, int]


@dataclass(frozen=True)
class Exported:
    """What an export wrote: counts and the checkpoint the proofs lead to."""

    coi: str
    records: int
    therapy_records: int
    heads: int
    missing: int
    size: int
    root: bytes
    out: Path


def ledger_keys(anchor: dict[str, Any], ledger: Path) -> tuple[VerifierKey, VerifierKey]:
    """The ledger's vkeys: the trust anchor's entry (``ledger init`` writes it there), else
    the public half of the ledger folder's key file."""
    entry = anchor.get(LEDGER_ENTRY)
    if entry is None:
        path = ledger / KEY_FILE
        if not path.exists():
            raise BundleError(f"the trust anchor names no ledger keys and {path} does not "
                              "exist: is the ledger folder right (--ledger)?")
        record = json.loads(path.read_text())
        entry = {"origin": record["name"], "vkey": record["ed25519_vkey"],
                 "mldsa_vkey": record["ml_dsa_44_vkey"]}
        archive_key = archive_public_key(path)
        if archive_key is not None:
            entry["archive_key"] = archive_key.hex()
        anchor[LEDGER_ENTRY] = entry
    return VerifierKey.parse(entry["vkey"]), VerifierKey.parse(entry["mldsa_vkey"])


def _read(settings: Settings, coi: str) -> tuple[list[RawRecord], set[tuple[str, int]],
                                                 set[Position]]:
    """The registry chain and the therapy's records (log order per partition), the
    partitions read, and every position seen on them."""
    keys = {REGISTRY_COI.encode(), coi.encode()}
    canonical = sorted({registry_partition(),
                        partition_for(coi.encode(), topic_spec(CANONICAL).partitions)})
    wanted: list[RawRecord] = []
    seen: set[Position] = set()
    read: set[tuple[str, int]] = set()
    for suffix, partitions in ((CANONICAL, canonical), (REJECTED, None), (ALERTS, None)):
        count = topic_spec(suffix).partitions
        read |= {(suffix, p) for p in (partitions or range(count))}
        for record in read_raw(settings, suffix, partitions):
            seen.add((record.topic, record.partition, record.offset))
            if record.key in keys and (suffix == CANONICAL or record.key == coi.encode()):
                wanted.append(record)
    # the registry chain first: its records are the keys everything else is checked with
    registry = [r for r in wanted if r.key == REGISTRY_COI.encode()]
    therapy = [r for r in wanted if r.key != REGISTRY_COI.encode()]
    return registry + therapy, read, seen


def _covering(ledger: Path, keys: tuple[VerifierKey, VerifierKey], records: list[RawRecord],
              wait: float) -> tuple[LogSnapshot, dict[Position, int]]:
    """The ledger as of a checkpoint covering every record (waiting up to ``wait`` s), and
    the leaf index of each position it logged."""
    deadline = time.monotonic() + wait
    while True:
        snapshot = LogSnapshot(ledger, *keys)
        logged = {}
        for index, entry in enumerate(snapshot.entries(0, snapshot.size)):
            leaf = LedgerLeaf.decode(entry, f"leaf {index}")
            logged[(leaf.topic, leaf.partition, leaf.offset)] = index
        uncovered = [r for r in records if (r.topic, r.partition, r.offset) not in logged]
        if not uncovered:
            return snapshot, logged
        snapshot.close()
        if time.monotonic() >= deadline:
            raise BundleError(f"{len(uncovered)} of the records (first "
                              f"{uncovered[0].position}) are not covered by the ledger's "
                              f"checkpoint (size {snapshot.size}) after {wait:.0f} s: is "
                              "`pcvhub ledger run` following this deployment? Export again "
                              "once it has checkpointed them")
        time.sleep(0.5)


def export(settings: Settings, coi: str, out: Path, ledger: Path | None = None,
           wait: float = 30.0) -> Exported:
    """Write the bundle of therapy ``coi`` to ``out`` (see the module doc)."""
    ledger = ledger if ledger is not None else settings.data_dir / "ledger"
    anchor_path = settings.data_dir / ANCHOR_FILE
    if not anchor_path.exists():
        raise BundleError(f"no trust anchor at {anchor_path}")
    anchor = json.loads(anchor_path.read_text())
    keys = ledger_keys(anchor, ledger)
    records, read, seen = _read(settings, coi)
    therapy = sum(1 for r in records if r.key == coi.encode())
    if not therapy:
        raise BundleError(f"the log holds no record of therapy {coi} (canonical partition "
                          f"{partition_for(coi.encode(), topic_spec(CANONICAL).partitions)}, "
                          "rejected, alerts)")
    snapshot, logged = _covering(ledger, keys, records, wait)
    with snapshot:
        size = snapshot.size
        bundled = [BundledRecord(r, snapshot.inclusion_proof(
            logged[(r.topic, r.partition, r.offset)], size)) for r in records]
        gone = sorted(index for position, index in logged.items()
                      if position[:2] in read and position not in seen)
        missing = [MissingLeaf(snapshot.entry(i), snapshot.inclusion_proof(i, size))
                   for i in gone]
        note = strip_note(snapshot.latest, *keys)
        root = snapshot.latest.checkpoint.root
        archive = _archive_seal(ledger, snapshot)
    heads = _heads(settings, records)
    write_bundle(out, coi, anchor, note, bundled, heads, missing, archive)
    return Exported(coi, len(bundled), therapy, len(heads), len(missing), size, root, out)


def _archive_seal(ledger: Path, snapshot: LogSnapshot
                  ) -> tuple[bytes, ConsistencyProof] | None:
    """The newest archive seal of a checkpoint the snapshot's covers, and the consistency
    proof from it to the snapshot's size (None if the log sealed none yet). Unchecked here:
    ``audit verify`` checks both."""
    folder = ledger / "tiles" / ARCHIVE_DIR
    sizes = sorted((int(p.name) for p in folder.glob("[0-9]*") if p.name.isdigit()),
                   reverse=True) if folder.is_dir() else []
    size = next((n for n in sizes if n <= snapshot.size), None)
    if size is None:
        return None
    return (folder / str(size)).read_bytes(), snapshot.consistency_proof(size, snapshot.size)


def _heads(settings: Settings, records: list[RawRecord]) -> dict[int, bytes]:
    """The seals topic's records the records' seals name (a head not found is left out:
    verify names the records that name it)."""
    offsets = set()
    for record in records:
        header = record.header(SEAL_HEADER)
        if header is None:
            continue
        try:
            offsets.add(Seal.decode(header).head_offset)
        except SealError:
            continue
    lookup = SealLookup(settings)
    try:
        found = {offset: lookup(offset) for offset in sorted(offsets)}
    finally:
        lookup.close()
    return {offset: value for offset, value in found.items() if value is not None}
