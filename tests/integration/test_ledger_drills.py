"""The issue's drills on the real broker: someone with file or admin access to the broker
alters one record's bytes in a segment file, drops one record, truncates a chain's tail;
a log operator shows two different checkpoints of one size. Each is named by `pcvhub audit
verify` or by the ledger itself (`pcvhub ledger run`, restarted over the tampered log).

The log is the one `test_audit_bundle` builds (a sealed cohort, logged by a real ledger).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from pcvhub.audit.bundle import CHECKPOINT, verify_bundle
from pcvhub.infra.kafka import LocalKafka
from pcvhub.ledger.leaf import LedgerLeaf
from pcvhub.ledger.log import TransparencyLog, load_keys
from pcvhub.streams.sandbox import PASSPHRASE, Sandbox
from pcvhub.topics import partition_for, topic_name, topic_spec

from .test_audit_bundle import busiest_therapy, cli, logged
from .test_ledger_follow import LedgerProcess
from .test_projection_kill import hub  # noqa: F401 - the sandbox fixture

pytestmark = pytest.mark.kafka


def segment(kafka: LocalKafka, sandbox: Sandbox, suffix: str, partition: int) -> Path:
    """The active segment file of a partition on the (single) node."""
    folder = kafka.node_dir(1) / "data" / (
        f"{topic_name(suffix, sandbox.settings.topic_prefix)}-{partition}")
    return sorted(folder.glob("*.log"))[-1]


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as Kafka's record batches carry it."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _varint(data: bytes, at: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[at]
        value |= (b & 0x7F) << shift
        at += 1
        if not b & 0x80:
            return (value >> 1) ^ -(value & 1), at  # zigzag
        shift += 7


def cut_tail(data: bytes, offset: int) -> bytes:
    """The segment without the records from ``offset`` on, as a careful operator would
    leave it: the batch that holds ``offset`` rewritten with its first records only (record
    count, last offset delta, length and CRC-32C redone), every later batch gone."""
    at = 0
    while at + 12 <= len(data):
        base, length = struct.unpack_from(">qi", data, at)
        end = at + 12 + length
        (last_delta,) = struct.unpack_from(">i", data, at + 23)
        if base + last_delta < offset:
            at = end
            continue
        if base >= offset:
            return data[:at]
        header = bytearray(data[at:at + 61])
        keep, position = offset - base, at + 61
        for _ in range(keep):  # offsets in a batch are consecutive (no compaction here)
            size, body = _varint(data, position)
            position = body + size
        records = data[at + 61:position]
        struct.pack_into(">i", header, 8, 49 + len(records))
        struct.pack_into(">i", header, 23, keep - 1)
        struct.pack_into(">i", header, 57, keep)
        struct.pack_into(">I", header, 17, crc32c(bytes(header[21:]) + records))
        return data[:at] + bytes(header) + records
    return data


def ledger_rerun(sandbox: Sandbox) -> str:
    """`pcvhub ledger run` again over the log it has logged; its output once caught up."""
    again = LedgerProcess(sandbox, "run", "--seconds", "1")
    again.wait_for(lambda p: "caught up" in p.output, 120)
    os.killpg(again.proc.pid, signal.SIGTERM)
    again.proc.wait(30)
    return again.output


def therapy_records(sandbox: Sandbox, coi: str):
    return [r for r in sandbox.read_all("events") if r.key == coi.encode()]


def test_altered_bytes_a_dropped_refusal_and_a_split_view_are_named(
        hub: Sandbox, kafka: LocalKafka, tmp_path: Path) -> None:  # noqa: F811
    origin = "drills.pcvhub.example/ledger"
    logged(hub, origin)
    coi = busiest_therapy(hub)
    clean = tmp_path / "clean"
    assert cli(hub, "audit", "export", coi, "--out", str(clean)).returncode == 0
    assert verify_bundle(clean).ok

    # -- two checkpoints of one size: the log's keys sign a second tree, one leaf changed --
    folder = Path(hub.settings.data_dir) / "ledger"
    keys = load_keys(folder / "keys.json", PASSPHRASE.encode())
    with TransparencyLog(folder, keys) as real:
        entries = list(real.entries(0, real.size))
    with TransparencyLog(tmp_path / "fork", keys) as fork:
        leaf = LedgerLeaf.decode(entries[-1])
        entries[-1] = LedgerLeaf(bytes(32), leaf.topic, leaf.partition, leaf.offset,
                                 leaf.seal).encode()
        for entry in entries:
            fork.append(entry)
        fork.checkpoint(real.latest.timestamp if real.latest else 0)
    split = cli(hub, "audit", "verify", str(clean), "--against",
                str(tmp_path / "fork" / "tiles" / CHECKPOINT))
    assert split.returncode == 1
    assert f"SPLIT VIEW: the log signed two trees of size {len(entries)}" in split.stderr

    # -- one byte of one canonical record, changed in place in the broker's segment file --
    victim = therapy_records(hub, coi)[5]
    path = segment(kafka, hub, "events", victim.partition)
    data = path.read_bytes()
    at = data.find(victim.value)
    assert at > 0 and data.find(victim.value, at + 1) < 0
    with path.open("r+b") as f:  # the broker serves the file as it is: no restart needed
        f.seek(at + len(victim.value) // 2)
        f.write(bytes([data[at + len(victim.value) // 2] ^ 0x01]))
    assert therapy_records(hub, coi)[5].value != victim.value

    # -- one refusal dropped, with the broker's own admin API (the first of a partition) --
    dropped = partition_for(coi.encode(), topic_spec("rejected").partitions)
    admin = AdminClient(hub.admin.librdkafka())
    name = topic_name("rejected", hub.settings.topic_prefix)
    for future in admin.delete_records([TopicPartition(name, dropped, 1)]).values():
        future.result(30)

    tampered = tmp_path / "tampered"
    out = cli(hub, "audit", "export", coi, "--out", str(tampered))
    assert out.returncode == 0, out.stderr
    assert "1 logged record(s) MISSING" in out.stdout
    bad = cli(hub, "audit", "verify", str(tampered))
    assert bad.returncode == 1
    assert f"FAILED therapy {coi} {victim.position}" in bad.stderr, bad.stderr
    failures = verify_bundle(tampered).failures
    assert any(f.where == f"rejected[{dropped}]@0" and "MISSING_FROM_LOG" in f.detail
               for f in failures), failures
    # every later record of the chain is named too: it no longer links
    assert any("HASH_CHAIN_BROKEN" in f.detail for f in failures)

    # -- and the ledger, restarted over the tampered log, names both --
    output = ledger_rerun(hub)
    assert (f"discrepancy {victim.position} was logged as leaf" in output
            and "now quarantined" in output), output
    assert f"discrepancy rejected[{dropped}]@0 was logged as leaf" in output, output
    assert "no longer on the log" in output


# Out of the default run: it stops and restarts the session's broker (about 60 s here);
# `pytest -m slow` runs it.
@pytest.mark.slow
def test_a_truncated_chain_tail_is_named_by_the_ledger_and_the_bundle(
        hub: Sandbox, kafka: LocalKafka, tmp_path: Path) -> None:  # noqa: F811
    logged(hub, "tail.pcvhub.example/ledger")
    coi = busiest_therapy(hub)
    records = therapy_records(hub, coi)
    partition = records[0].partition
    # cut the partition's log before the therapy's last three records
    path = segment(kafka, hub, "events", partition)
    kafka.down()
    try:
        path.write_bytes(cut_tail(path.read_bytes(), records[-3].offset))
        for index in path.parent.glob(path.stem + ".*index"):
            index.unlink()  # the broker rebuilds them from the segment (recovery)
    finally:
        kafka.up()
    hub.wait_for_leaders()
    deadline = time.monotonic() + 60
    while True:  # a restarted broker answers NOT_LEADER while it loads its logs
        try:
            left = therapy_records(hub, coi)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert len(left) < len(records) and left == records[:len(left)]
    gone = records[len(left):]

    output = ledger_rerun(hub)
    for record in gone:
        assert f"discrepancy {record.position} was logged as leaf" in output, output

    bundle = tmp_path / "bundle"
    out = cli(hub, "audit", "export", coi, "--out", str(bundle))
    assert out.returncode == 0, out.stderr
    failures = verify_bundle(bundle).failures
    named = {f.where for f in failures if "MISSING_FROM_LOG" in f.detail}
    assert {str(r.position) for r in gone} <= named, failures
    bad = subprocess.run([sys.executable, "-m", "pcvhub.cli", "audit", "verify", str(bundle)],
                         env=hub.env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert bad.returncode == 1 and "MISSING_FROM_LOG" in bad.stdout + bad.stderr
