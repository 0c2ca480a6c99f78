"""What the ledger process does with each admitted record, without a broker: one leaf per
position, checkpoints by count and by time, and the discrepancies it names on a re-read."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest

from pcvhub.config import Settings
from pcvhub.ledger.follow import LedgerFollower
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import TransparencyLog
from pcvhub.ledger.note import LogKeys
from pcvhub.log.verify import LogPosition, Quarantined, VerifiedRecord

SETTINGS = cast(Settings, None)  # never read: nothing here follows a broker


@pytest.fixture(scope="module")
def keys() -> LogKeys:
    return LogKeys.generate("ledger.pcvhub.example/follow")


def record(topic: str, offset: int, digest: bytes | None = None) -> VerifiedRecord:
    """An admitted record as the follower sees it (the leaf needs position and digest)."""
    return VerifiedRecord(LogPosition(topic, 2, offset), b"k", cast(Any, None),
                          digest or offset.to_bytes(32, "big"))


def test_each_record_is_one_leaf_and_checkpoints_come_every_n(tmp_path: Path, keys):
    published = []
    with TransparencyLog(tmp_path, keys) as log:
        follower = LedgerFollower(SETTINGS, log, every=4, seconds=3600,
                                  publish=published.append, clock=lambda: 1_800_000_000)
        for offset in range(10):
            follower.on_record(record("events", offset))
        assert [c.checkpoint.size for c in published] == [4, 8]
        assert follower.flush().checkpoint.size == 10
        assert LedgerLeaf.decode(log.entry(3)) == LedgerLeaf(
            (3).to_bytes(32, "big"), "events", 2, 3)


def test_a_lone_record_is_checkpointed_after_the_time_bound(tmp_path: Path, keys):
    with TransparencyLog(tmp_path, keys) as log:
        follower = LedgerFollower(SETTINGS, log, every=1000, seconds=0.05)
        follower.on_record(record("alerts", 0))
        assert follower.tick() is None  # not yet
        time.sleep(0.06)
        assert follower.tick().checkpoint.size == 1
        assert follower.tick() is None  # nothing new


def test_a_re_read_names_changed_quarantined_and_missing_records(tmp_path: Path, keys):
    with TransparencyLog(tmp_path, keys) as log:
        first = LedgerFollower(SETTINGS, log)
        for offset in range(5):
            first.on_record(record("rejected", offset))
        first.flush()
    with TransparencyLog(tmp_path, keys) as log:
        again = LedgerFollower(SETTINGS, log)
        again.on_record(record("rejected", 0))  # the same record: nothing to say, no leaf
        again.on_record(record("rejected", 1, digest=b"\xff" * 32))
        again.on_quarantine(Quarantined(LogPosition("rejected", 2, 2), b"k", b"raw",
                                        "SIGNATURE_INVALID", "altered"))
        again.on_record(record("rejected", 4))
        assert log.size == 5
        assert again.discrepancies == [
            "rejected[2]@1 is not the record logged as leaf 1: it changed on the broker since",
            "rejected[2]@2 was logged as leaf 2 but is now quarantined (SIGNATURE_INVALID): "
            "altered on the broker since"]
        assert again.missing() == ["rejected[2]@3 was logged as leaf 3 but is no longer on "
                                   "the log"]
        again.on_record(record("rejected", 5))
        assert log.size == 6
