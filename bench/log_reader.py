"""What verifying everything read back costs: the one log reader's admit rate.

Baselines in the same run: decoding the same records only (envelope + payload, what
readers did before they verified), and the hybrid signature check alone. A therapy's
records are admitted in chain order by a fresh verifier that starts from the trust
anchor and reads the registry chain first, as every follower does.
"""

from __future__ import annotations

from bench.report import Figure, median_rate
from pcvhub.demo.therapy import Hub, TherapyScenario
from pcvhub.log.verify import LogVerifier, RawRecord, VerifiedRecord
from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.topics import partition_for
from pcvhub.trust import signing
from pcvhub.trust.registry import REGISTRY_COI
from pcvhub.trust.signing import verify_envelope
from tests.unit.sealing import SEAL_BOOK, gatekeeper_signer, sealed

PARTITIONS = 6


def run(quick: bool = False) -> list[Figure]:
    hub = Hub()
    gatekeeper = gatekeeper_signer()
    hub.register_gatekeeper(gatekeeper)
    cast = hub.register_cast("bench")
    therapies = 2 if quick else 10
    events = [e for i in range(therapies)
              for e in TherapyScenario(hub, cast=cast, patient_hash=f"{i:064x}").full_therapy()]
    log = [*hub.registry_log, *events]
    offsets: dict[int, int] = {}
    records = []
    for event in log:
        partition = partition_for(event.coi.encode(), PARTITIONS)
        offsets[partition] = offsets.get(partition, -1) + 1
        records.append(RawRecord.at("events", partition, offsets[partition],
                                    event.coi.encode(), event.raw))
    # sealed as a busy gatekeeper seals: one batch per 64 records
    records = [r for start in range(0, len(records), 64)
               for r in sealed(gatekeeper, records[start:start + 64])]
    keys = {(e.producer, e.envelope.key_id): hub.registry.keys[(e.producer, e.envelope.key_id)]
            for e in log}
    registry_partition = partition_for(REGISTRY_COI.encode(), PARTITIONS)

    def decode_only() -> int:
        for record in records:
            env = decode_envelope(record.value or b"")
            decode_payload(env.schema_fingerprint, env.payload, env.event_type)
        return len(records)

    def signatures_only() -> int:
        signing.forget_checks()
        for event in log:
            key = keys[(event.producer, event.envelope.key_id)]
            assert verify_envelope(event.envelope, key.public).ok
        return len(log)

    def admit_all() -> int:
        signing.forget_checks()
        verifier = LogVerifier(Hub(registrar=hub.registrar).registry, registry_partition,
                               seals=SEAL_BOOK, reader="bench")
        for record in records:
            assert isinstance(verifier.admit(record), VerifiedRecord)
        return len(records)

    decoded = median_rate(decode_only)
    verified = median_rate(signatures_only)
    admitted = median_rate(admit_all)
    return [
        Figure("log reader", "decode only (envelope + payload)", decoded, "records/s"),
        Figure("log reader", "hybrid signature check only", verified, "records/s",
               "decode only", decoded),
        Figure("log reader", "LogVerifier.admit (decode, key, signatures, seal, chain, fold)",
               admitted, "records/s", "hybrid signature check only", verified),
    ]
