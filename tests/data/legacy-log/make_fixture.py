"""Write the legacy-log fixture: records as pcvhub wrote them before the fingerprint fix.

Until the fix, pcvhub wrote every CRC-64-AVRO fingerprint byte-reversed: the 8 bytes after
``C3 01`` in the single-object header, and the envelope's ``schema_fingerprint``. Records
in that form are on logs that are kept forever, and their signatures (and the chain
digests derived from them) cover ``schema_fingerprint`` exactly as written. This fixture
holds such records so a test can prove they stay readable and verifiable.

The files were made once, by running this script at commit affbb26 (the last commit with
the old codec), from the repository root::

    PYTHONPATH=. python tests/data/legacy-log/make_fixture.py

It refuses to run against a codec that writes the spec's byte order, because it would then
write records that are not legacy at all. Output:

``signer.json``
    the throwaway signer: producer, key id and both public keys (hex). Its private keys
    were never stored.
``records.jsonl``
    one JSON object per line: ``event_type``, ``signed`` (``individually`` or ``batch``),
    ``wire`` (the record's bytes, hex) and ``payload`` (the datum that was encoded, in the
    form of ``tests.unit.avro_samples.plain``). One record of every event type, signed
    individually, all in one chain of identity, then two more signed as one batch, so
    both verification paths are covered. Each record names the previous one's chain
    digest as ``prev_hash``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from pcvhub.schemas.catalog import load_catalog
from pcvhub.schemas.codec import SINGLE_OBJECT_MAGIC, encode_envelope
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.signing import EventSigner, HybridKeyPair
from tests.unit.avro_samples import plain, sample

HERE = Path(__file__).parent
COI = "PCV-LEGACY-2025-0123456789AB4"  # fixed and well formed (its check character is 4)
FIRST_OCCURRED_US = 1_764_000_000_000_000  # 2025-11-24T16:00:00Z
BATCHED_TYPES = ("pcvhub.events.CustodyTransferred", "pcvhub.events.DoseAdministered")


def _check_codec_writes_the_legacy_form() -> None:
    """fastavro's hex string is the spec's little-endian byte sequence; the old codec wrote
    it reversed."""
    catalog = load_catalog()
    spec = bytes.fromhex(fastavro_fingerprint(
        to_parsing_canonical_form(catalog.envelope.raw), "CRC-64-AVRO"))
    if catalog.envelope.fingerprint != spec[::-1]:
        raise SystemExit("this codec does not write byte-reversed fingerprints: run this "
                         "script at commit affbb26, before the fix")


def main() -> None:
    _check_codec_writes_the_legacy_form()
    catalog = load_catalog()
    keys = HybridKeyPair.generate()
    issuer = EventIssuer(EventSigner("legacy-fixture-signer", "legacy-k1", keys))
    lines = []
    occurred = FIRST_OCCURRED_US
    for event_type in catalog.event_types():
        datum = sample(catalog.schema(event_type).raw, random.Random(f"legacy-{event_type}"))
        issued = issuer.issue(event_type, COI, datum, occurred_at_us=occurred)
        assert issued.wire[:10] == SINGLE_OBJECT_MAGIC + catalog.envelope.fingerprint
        lines.append({"event_type": event_type, "signed": "individually",
                      "wire": issued.wire.hex(), "payload": plain(datum)})
        occurred += 1_000_000
    drafts, data = [], []
    for event_type in BATCHED_TYPES:
        datum = sample(catalog.schema(event_type).raw, random.Random(f"legacy-batch-{event_type}"))
        drafts.append(issuer.chain(issuer.draft(event_type, COI, datum, occurred_at_us=occurred)))
        data.append(datum)
        occurred += 1_000_000
    for issued, datum in zip(issuer.issue_batch(drafts), data, strict=True):
        assert encode_envelope(issued.envelope) == issued.wire
        lines.append({"event_type": issued.envelope.event_type, "signed": "batch",
                      "wire": issued.wire.hex(), "payload": plain(datum)})
    public = keys.public
    (HERE / "signer.json").write_text(json.dumps({
        "producer": issuer.signer.producer, "key_id": issuer.signer.key_id,
        "ed25519": public.ed25519.hex(), "ml_dsa_65": public.ml_dsa_65.hex(),
        "written_at_commit": "affbb26"}, indent=1) + "\n")
    with (HERE / "records.jsonl").open("w") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"wrote {len(lines)} legacy records to {HERE / 'records.jsonl'}")


if __name__ == "__main__":
    main()
