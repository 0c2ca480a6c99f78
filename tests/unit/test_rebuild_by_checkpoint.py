"""A rebuild by a witnessed ledger checkpoint instead of every record's own signatures.

Given the scripted log and a ledger built from it the way ``pcvhub ledger run`` builds one
(the one log reader admits each record, its leaf is appended, a checkpoint is signed and
cosigned by two witnesses), when a projection is rebuilt by that checkpoint, then it is the
same file as the rebuild by signatures, the reader says how many records it took on the
checkpoint's word (none of the registry chain), a record altered since it was logged is
quarantined exactly as before, records past the checkpoint are verified by their
signatures, and a checkpoint below quorum or a tile folder that does not verify is refused.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pcvhub.ledger.cosign import WitnessKey, WitnessKeys
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.follow import leaf_of
from pcvhub.ledger.log import TransparencyLog
from pcvhub.ledger.note import LogKeys, VerifiedCheckpoint
from pcvhub.ledger.trusted import CheckpointTrust
from pcvhub.ledger.witnessing import WitnessPolicy
from pcvhub.log.verify import LogVerifier, RawRecord, VerifiedRecord
from pcvhub.projections.digest import digest_file
from pcvhub.topics import SEAL_HEADER, partition_for
from pcvhub.trust.registry import REGISTRY_COI

from .sealing import SEAL_BOOK
from .test_projection_scenario import PARTITIONS, ScriptedLog, project, scripted_log

REGISTRY_PARTITION = partition_for(REGISTRY_COI.encode(), PARTITIONS)


@pytest.fixture(scope="module")
def scripted() -> ScriptedLog:
    return scripted_log()


@pytest.fixture(scope="module")
def records(scripted: ScriptedLog) -> list[RawRecord]:
    return scripted.gatekeep()


@pytest.fixture(scope="module")
def log_keys() -> LogKeys:
    return LogKeys.generate("ledger.hub.example/rebuild")


@pytest.fixture(scope="module")
def witnesses() -> list[WitnessKeys]:
    return [WitnessKeys.generate("manufacturer.example/witness"),
            WitnessKeys.generate("payer.example/witness")]


def policy(witnesses: list[WitnessKeys], quorum: int = 2) -> WitnessPolicy:
    return WitnessPolicy(tuple(WitnessKey(w.name, w.ed25519_vkey, w.ml_dsa_44_vkey)
                               for w in witnesses), quorum)


def build_ledger(folder: Path, records: list[RawRecord], scripted: ScriptedLog,
                 keys: LogKeys, cosigners: list[WitnessKeys]) -> Path:
    """The ledger of ``records`` as ``pcvhub ledger run`` writes it, cosigned by
    ``cosigners``; returns its tile folder."""
    def read_registry(from_offset: int) -> list[RawRecord]:
        return [r for r in records if r.topic == "events" and r.partition == REGISTRY_PARTITION
                and r.key == REGISTRY_COI.encode() and r.offset >= from_offset]

    verifier = LogVerifier(scripted.anchor.copy(), REGISTRY_PARTITION,
                           lookahead=read_registry, seals=SEAL_BOOK, reader="ledger")
    with TransparencyLog(folder, keys) as log:
        for record in records:
            outcome = verifier.admit(record)
            if isinstance(outcome, VerifiedRecord):
                log.append(leaf_of(outcome).encode())
        signed = log.checkpoint(1_900_000_000)
        note = signed.note + b"".join(w.cosign(signed.checkpoint, 1_900_000_001)
                                      for w in cosigners)
        log.attach_cosignatures(VerifiedCheckpoint(signed.checkpoint, signed.timestamp, note))
    return folder / "tiles"


def trust(tiles: Path, keys: LogKeys, witnesses: list[WitnessKeys], quorum: int = 2
          ) -> CheckpointTrust:
    return CheckpointTrust.load(tiles, keys.ed25519_vkey, keys.ml_dsa_44_vkey,
                                policy(witnesses, quorum))


def test_a_rebuild_by_checkpoint_is_the_same_file_and_says_which_records_it_trusted(
        tmp_path: Path, scripted: ScriptedLog, records: list[RawRecord], log_keys: LogKeys,
        witnesses: list[WitnessKeys]) -> None:
    tiles = build_ledger(tmp_path / "ledger", records, scripted, log_keys, witnesses)
    trusted = trust(tiles, log_keys, witnesses)
    by_signatures = project(tmp_path / "signatures.duckdb", records, scripted.anchor)
    by_checkpoint = project(tmp_path / "checkpoint.duckdb", records, scripted.anchor,
                            checkpoint=trusted)
    assert digest_file(tmp_path / "checkpoint.duckdb").sha256 == \
        digest_file(tmp_path / "signatures.duckdb").sha256
    assert by_checkpoint.admitted == by_signatures.admitted == trusted.size
    assert by_checkpoint.by_code == by_signatures.by_code  # the scripted faults, alike
    registry = sum(1 for r in records if r.key == REGISTRY_COI.encode()
                   and r.topic == "events")
    assert registry > 0 and by_checkpoint.by_checkpoint == trusted.size - registry
    assert by_signatures.by_checkpoint == 0
    assert "cosigned by 2 of 2 witnesses" in trusted.describe()


def test_a_record_altered_after_it_was_logged_is_quarantined_as_before(
        tmp_path: Path, scripted: ScriptedLog, records: list[RawRecord], log_keys: LogKeys,
        witnesses: list[WitnessKeys]) -> None:
    tiles = build_ledger(tmp_path / "ledger", records, scripted, log_keys, witnesses)
    target = next(i for i, r in enumerate(records)
                  if r.topic == "events" and r.key != REGISTRY_COI.encode())
    record = records[target]
    value = bytearray(record.value or b"")
    value[-40] ^= 0x01  # inside the ML-DSA-65 signature: not in the chain digest
    sig_flip = RawRecord(record.position, record.key, bytes(value), record.headers)
    payload = bytearray(record.value or b"")
    payload[60] ^= 0x01  # inside the signed fields: the leaf no longer matches
    for altered in (bytes(payload),):
        tampered = [*records[:target],
                    RawRecord(record.position, record.key, altered, record.headers),
                    *records[target + 1:]]
        by_checkpoint = project(tmp_path / "c.duckdb", tampered, scripted.anchor,
                                checkpoint=trust(tiles, log_keys, witnesses))
        by_signatures = project(tmp_path / "s.duckdb", tampered, scripted.anchor)
        [first] = [q for q in by_checkpoint.first if q.position == record.position]
        [again] = [q for q in by_signatures.first if q.position == record.position]
        assert (first.code, first.reason) == (again.code, again.reason)
        for path in (tmp_path / "c.duckdb", tmp_path / "s.duckdb"):
            path.unlink()
    # Only the signature bytes altered: the leaf (content, place, seal) still matches, but
    # the gatekeeper's seal covers every byte of the record, signatures included, and the
    # rebuild by checkpoint still checks the seal: quarantined, the seal named.
    tampered = [*records[:target], sig_flip, *records[target + 1:]]
    by_checkpoint = project(tmp_path / "c.duckdb", tampered, scripted.anchor,
                            checkpoint=trust(tiles, log_keys, witnesses))
    by_signatures = project(tmp_path / "s.duckdb", tampered, scripted.anchor)
    [caught] = [q for q in by_checkpoint.first if q.position == record.position]
    assert caught.code == "SEAL_INVALID", caught
    [named] = [q for q in by_signatures.first if q.position == record.position]
    assert named.code == "SIGNATURE_INVALID", named


def test_a_seal_header_no_leaf_could_hold_is_named_not_raised(
        tmp_path: Path, scripted: ScriptedLog, records: list[RawRecord], log_keys: LogKeys,
        witnesses: list[WitnessKeys]) -> None:
    """An attacker's 70 kB header: too large for any leaf, so no checkpoint covers it, and
    the seal check names it as it would without a checkpoint."""
    tiles = build_ledger(tmp_path / "ledger", records, scripted, log_keys, witnesses)
    target = next(i for i, r in enumerate(records)
                  if r.topic == "events" and r.key != REGISTRY_COI.encode())
    record = records[target]
    huge = replace(record, headers=((SEAL_HEADER, b"\x01" * 70_000),))
    report = project(tmp_path / "c.duckdb", [*records[:target], huge, *records[target + 1:]],
                     scripted.anchor, checkpoint=trust(tiles, log_keys, witnesses))
    [named] = [q for q in report.first if q.position == record.position]
    assert named.code == "SEAL_INVALID", named


def test_records_past_the_checkpoint_are_verified_by_their_signatures(
        tmp_path: Path, scripted: ScriptedLog, records: list[RawRecord], log_keys: LogKeys,
        witnesses: list[WitnessKeys]) -> None:
    half = len(records) // 2
    tiles = build_ledger(tmp_path / "ledger", records[:half], scripted, log_keys, witnesses)
    trusted = trust(tiles, log_keys, witnesses)
    report = project(tmp_path / "checkpoint.duckdb", records, scripted.anchor,
                     checkpoint=trusted)
    project(tmp_path / "signatures.duckdb", records, scripted.anchor)
    assert digest_file(tmp_path / "checkpoint.duckdb").sha256 == \
        digest_file(tmp_path / "signatures.duckdb").sha256
    assert 0 < report.by_checkpoint < trusted.size < report.admitted


def test_a_checkpoint_below_quorum_or_an_altered_tile_is_not_trusted(
        tmp_path: Path, scripted: ScriptedLog, records: list[RawRecord], log_keys: LogKeys,
        witnesses: list[WitnessKeys]) -> None:
    tiles = build_ledger(tmp_path / "ledger", records, scripted, log_keys, witnesses[:1])
    with pytest.raises(LedgerError, match="cosigned by 1 of 2 witnesses, below the quorum "
                                          "of 2.*payer.example/witness"):
        trust(tiles, log_keys, witnesses)
    assert trust(tiles, log_keys, witnesses, quorum=1).size > 0
    bundle = next(f for f in sorted((tiles / "tile" / "entries").rglob("*")) if f.is_file())
    data = bytearray(bundle.read_bytes())
    data[100] ^= 0x01
    bundle.write_bytes(bytes(data))
    with pytest.raises(LedgerError, match="entries"):
        trust(tiles, log_keys, witnesses, quorum=1)
