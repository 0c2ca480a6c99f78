"""Apache Avro for Java reads what the hub writes, with the ``.avsc`` files alone.

The hub's promise is that any Avro implementation reads its log without a registry
service. This checks it against the reference implementation: the hub issues one signed
record of every event type (real codec, real hybrid signatures), and the reader of
``infra/avro-java`` decodes each with ``BinaryMessageDecoder`` (single-object header
looked up in a ``SchemaStore.Cache``) and then the payload by the envelope's
``schema_fingerprint``. Every field Java read must equal what the hub put in.

The same reader must fail on the legacy-log records (byte-reversed fingerprints, see
``tests/data/legacy-log``) with ``MissingSchemaException``: that is the defect that made
this test necessary (the hub wrote every record that way), and it shows the test can fail.

The reader is built once (``infra/avro-java/build.sh``, which ``make setup`` runs; the
jar is cached under ``.cache/avro-java``), so a warm run costs one JVM start.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pcvhub.schemas.catalog import RELEASED_DIR, SCHEMA_DIR, load_catalog
from pcvhub.schemas.codec import decode_envelope, encode_envelope
from pcvhub.schemas.envelope import Envelope
from pcvhub.trust.issuer import EventIssuer, IssuedEvent
from pcvhub.trust.signing import EventSigner, HybridKeyPair
from tests.unit.avro_samples import plain, sample

pytestmark = pytest.mark.java

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "infra" / "avro-java" / "build.sh"
LEGACY_RECORDS = REPO / "tests" / "data" / "legacy-log" / "records.jsonl"
CATALOG = load_catalog()
COI = "PCV-JAVA-2026-0000000000AB6"  # fixed and well formed (its check character is 6)
FIRST_OCCURRED_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
BATCHED_TYPES = ("pcvhub.events.SampleCollected", "pcvhub.events.ClaimSubmitted")


@pytest.fixture(scope="session")
def java_reader() -> Path:
    """The reader jar, built on first use and then taken from the cache."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the Java interop test needs Java 17 "
                    "and Maven (apt-get install openjdk-17-jdk-headless maven)")
    built = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                           timeout=900, check=False)
    if built.returncode != 0:
        pytest.fail(f"building the Java reader failed:\n{built.stderr}")
    return Path(built.stdout.strip().splitlines()[-1])


def read_with_java(jar: Path, wires: list[bytes]) -> list[dict[str, Any]]:
    """One JSON object per record, as ``ReadLog`` prints them, in input order."""
    ran = subprocess.run(
        ["java", "-jar", str(jar), str(SCHEMA_DIR), str(RELEASED_DIR)],
        input="".join(wire.hex() + "\n" for wire in wires), capture_output=True, text=True,
        timeout=120, check=False)
    assert ran.returncode == 0, f"the Java reader failed:\n{ran.stderr}"
    lines = ran.stdout.splitlines()
    assert len(lines) == len(wires), f"{len(wires)} records in, {len(lines)} lines out"
    return [json.loads(line) for line in lines]


def _null_count(value: Any) -> int:
    if value is None:
        return 1
    if isinstance(value, dict):
        return sum(_null_count(v) for v in value.values())
    if isinstance(value, list):
        return sum(_null_count(v) for v in value)
    return 0


def _fullest_sample(event_type: str) -> dict[str, Any]:
    """Of a few seeded samples, the one with the fewest nulls: more fields carry a value."""
    schema = CATALOG.schema(event_type).raw
    candidates = [sample(schema, random.Random(f"java-{event_type}-{seed}"))
                  for seed in range(12)]
    return min(candidates, key=lambda datum: _null_count(plain(datum)))


def issue_one_of_every_type() -> list[tuple[IssuedEvent, dict[str, Any]]]:
    """Every event type signed on its own, then two more signed as one batch."""
    issuer = EventIssuer(EventSigner("java-interop", "java-k1", HybridKeyPair.generate()))
    issued = []
    occurred = FIRST_OCCURRED_US
    for event_type in CATALOG.event_types():
        datum = _fullest_sample(event_type)
        issued.append((issuer.issue(event_type, COI, datum, occurred_at_us=occurred), datum))
        occurred += 1_000_000
    drafts, data = [], []
    for event_type in BATCHED_TYPES:
        data.append(_fullest_sample(event_type))
        drafts.append(issuer.chain(issuer.draft(event_type, COI, data[-1],
                                                occurred_at_us=occurred)))
        occurred += 1_000_000
    issued += list(zip(issuer.issue_batch(drafts), data, strict=True))
    # envelope v2's late-entry flag, and a v1 envelope (no such field) as older logs hold
    datum = _fullest_sample("DoseAdministered")
    issued.append((issuer.issue("DoseAdministered", COI, datum, occurred_at_us=occurred,
                                late_entry="charted on paper during the outage"), datum))
    v1 = replace(issuer.draft("DoseAdministered", COI, datum, occurred_at_us=occurred + 1),
                 version=1)
    sealed = issuer.signer.seal(v1)
    issued.append((IssuedEvent(sealed, encode_envelope(sealed)), datum))
    return issued


def envelope_as_put_in(env: Envelope) -> dict[str, Any]:
    """The envelope's Avro fields (names as in Envelope.avsc) in the plain JSON form."""
    sig, proof = env.signature, env.batch_proof
    return {
        "event_id": env.event_id,
        "event_type": env.event_type,
        "schema_fingerprint": env.schema_fingerprint.hex(),
        "coi": env.coi,
        "occurred_at": env.occurred_at_us,
        "signed_at": env.signed_at_us,
        "producer": env.producer,
        "key_id": env.key_id,
        "meaning": env.meaning.value,
        "prev_hash": env.prev_hash.hex(),
        "payload": env.payload.hex(),
        "signature": None if sig is None else {
            "ed25519": sig.ed25519.hex(), "ml_dsa_65": sig.ml_dsa_65.hex()},
        "batch_proof": None if proof is None else {
            "leaf_index": proof.leaf_index, "tree_size": proof.tree_size,
            "path": [step.hex() for step in proof.path], "root": proof.root.hex()},
        # a v1 envelope has no late_entry: Java resolves it to the v2 reader's default
        "late_entry": None if env.late_entry is None else {"reason": env.late_entry.reason},
    }


def _differences(where: str, put_in: dict[str, Any], read: dict[str, Any]) -> list[str]:
    found = [f"{where}.{name}: the hub wrote {value!r}, Java read {read.get(name)!r}"
             for name, value in put_in.items() if read.get(name, "<absent>") != value]
    found += [f"{where}.{name}: Java read a field the hub never wrote"
              for name in read.keys() - put_in.keys()]
    return found


def test_java_reads_every_event_type_the_hub_writes(java_reader):
    issued = issue_one_of_every_type()
    assert {event.envelope.event_type for event, _ in issued} == set(CATALOG.event_types())
    results = read_with_java(java_reader, [event.wire for event, _ in issued])
    problems = []
    for (event, datum), result in zip(issued, results, strict=True):
        env = event.envelope
        name = env.event_type.rsplit(".", 1)[-1]
        if not result["ok"]:
            problems.append(f"{name}: Java could not read it: {result['error']}: "
                            f"{result['message']}")
            continue
        assert result["payload_schema"] == env.event_type
        problems += _differences(f"{name} envelope", envelope_as_put_in(env),
                                 result["envelope"])
        problems += _differences(f"{name} payload", plain(datum), result["payload"])
    assert not problems, "\n".join(problems)


def test_java_cannot_resolve_the_legacy_byte_reversed_fingerprints(java_reader):
    """Records written before the byte-order fix are unreadable to a standard reader: the
    header names no known schema. Re-encoded by today's codec they get a spec header, but
    the signed schema_fingerprint inside stays reversed, so the payload's schema is not
    found either (the hub reads both through its named legacy path)."""
    lines = LEGACY_RECORDS.read_text(encoding="utf-8").splitlines()
    legacy = [bytes.fromhex(json.loads(line)["wire"]) for line in lines]
    re_encoded = [encode_envelope(decode_envelope(wire)) for wire in legacy]
    results = read_with_java(java_reader, legacy + re_encoded)
    errors = [r.get("error") for r in results]
    assert errors[:len(legacy)] == ["MissingSchemaException"] * len(legacy)
    assert errors[len(legacy):] == ["UnknownPayloadSchema"] * len(re_encoded)
