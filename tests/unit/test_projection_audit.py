"""The audit re-verifies what it shows, independently of the gatekeeper.

Given records written straight to the canonical topic (as a bug or someone with broker
access could), or a key revoked after it signed, when the log is projected, then the
audit trail says what is wrong with each record, and nothing is dropped.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pcvhub.log.verify import RawRecord
from pcvhub.projections.store import connect
from pcvhub.schemas.codec import decode_envelope, encode_envelope, encode_payload
from pcvhub.topics import partition_for
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.registry import REGISTRY_COI
from pcvhub.trust.signing import EventSigner, HybridKeyPair

from .sealing import gatekeeper_signer
from .test_projection_scenario import PARTITIONS, anchor_of, project
from .test_projection_scenario import canonical_records as sealed_canonical
from .therapy_builder import Hub, TherapyScenario

GATEKEEPER = gatekeeper_signer()


def canonical_records(log: list[tuple[bytes, bytes]]) -> list[RawRecord]:
    return sealed_canonical(log, GATEKEEPER)


def one_therapy() -> tuple[Hub, TherapyScenario, list[tuple[bytes, bytes]]]:
    """A registry (the gatekeeper's own registration first) and one whole therapy, as
    (key, wire) in log order."""
    hub = Hub()
    hub.register_gatekeeper(GATEKEEPER)
    cast = hub.register_cast("x")
    scenario = TherapyScenario(hub, cast=cast)
    events = scenario.full_therapy()
    return hub, scenario, [(e.coi.encode(), e.raw) for e in [*hub.registry_log, *events]]


def audit(path: Path, coi: str) -> list[dict]:
    con = connect(path, read_only=True)
    try:
        cursor = con.execute("SELECT * FROM audit(?)", [coi])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def test_a_payload_altered_on_the_log_is_quarantined_and_so_is_the_chain_after_it(
        tmp_path: Path) -> None:
    hub, scenario, log = one_therapy()
    position = next(i for i, (_, wire) in enumerate(log)
                    if decode_envelope(wire).event_type.endswith("DiagnosisRecorded"))
    original = decode_envelope(log[position][1])
    _, altered_body = encode_payload("DiagnosisRecorded", {
        "icd10_code": "C50.9", "icdo3_morphology": "8500/3", "icdo3_topography": "C50.9",
        "stage": "I", "hla_type": ["HLA-A*01:01"], "diagnosed_on": None, "staging_system": None})
    log[position] = (log[position][0], encode_envelope(replace(original, payload=altered_body)))
    project(tmp_path / "p.duckdb", list(canonical_records(log)), anchor_of(hub))
    trail = sorted(audit(tmp_path / "p.duckdb", scenario.coi), key=lambda r: r["log_offset"])
    at = next(i for i, r in enumerate(trail) if r["event_id"] == original.event_id)
    altered, following, *rest = trail[at:]
    assert (altered["signature_check"], altered["outcome"]) == (
        "SIGNATURE_INVALID", "QUARANTINED SIGNATURE_INVALID")
    assert altered["chain_link"] == "LINKED" and altered["chain_seq"] is None
    # The next event names the digest of the original, which is not on the log: its own
    # signature holds, but nothing after the alteration can be proven to follow from it.
    assert (following["chain_link"], following["signature_check"]) == (
        "BROKEN", "HASH_CHAIN_BROKEN")
    assert {r["signature_check"] for r in rest} == {"HASH_CHAIN_BROKEN"}
    assert {r["verification"] for r in trail[:at]} == {"VERIFIED"}
    assert len(trail) == len(scenario.log)  # nothing dropped
    stages = connect(tmp_path / "p.duckdb", read_only=True)
    try:
        entered = stages.execute("SELECT count(*) FROM log.stage_entries WHERE coi = ? AND "
                                 "log_offset >= ?", [scenario.coi, altered["log_offset"]])
        assert entered.fetchone() == (0,)  # quarantined records move no lifecycle
    finally:
        stages.close()


def test_an_event_from_an_unregistered_key_written_to_the_log_is_not_verified(
        tmp_path: Path) -> None:
    hub, scenario, log = one_therapy()
    stranger = EventIssuer(EventSigner("stranger", "stranger-k1", HybridKeyPair.generate()))
    forged = stranger.issue("OutcomeRecorded", scenario.coi, {
        "time_point": "week-99", "recist_response": "CR", "ctdna_status": "NOT_DETECTED",
        "survival_status": "ALIVE"}, occurred_at_us=scenario.now_us + 1,
        prev_hash=scenario.case.head)
    log.append((forged.key, forged.wire))
    project(tmp_path / "p.duckdb", list(canonical_records(log)), anchor_of(hub))
    row = next(r for r in audit(tmp_path / "p.duckdb", scenario.coi)
               if r["event_id"] == forged.envelope.event_id)
    assert (row["signature_check"], row["key_standing"], row["chain_link"]) == (
        "UNREGISTERED_KEY", "UNKNOWN_KEY", "LINKED")
    assert row["actor_roles"] is None


def test_a_record_claiming_an_unknown_event_type_is_shown_and_the_projection_goes_on(
        tmp_path: Path) -> None:
    """The claimed type is attacker-chosen text: shown as claimed, never looked up (the
    projector once stopped on it), and the records after it are still projected."""
    hub, scenario, log = one_therapy()
    nurse = scenario.actors["nurse"].issuer
    draft = nurse.draft("OutcomeRecorded", scenario.coi, {
        "time_point": "week-99", "recist_response": "CR", "ctdna_status": "NOT_DETECTED",
        "survival_status": "ALIVE"}, occurred_at_us=scenario.now_us + 1,
        prev_hash=scenario.case.head)
    claimed = nurse.signer.seal(replace(draft, event_type="pcvhub.events.NoSuchEvent"))
    stranger = EventIssuer(EventSigner("stranger", "stranger-k1", HybridKeyPair.generate()))
    after = stranger.issue("OutcomeRecorded", scenario.coi, {
        "time_point": "week-100", "recist_response": "CR", "ctdna_status": "NOT_DETECTED",
        "survival_status": "ALIVE"}, occurred_at_us=scenario.now_us + 2,
        prev_hash=scenario.case.head)
    log += [(claimed.coi.encode(), encode_envelope(claimed)), (after.key, after.wire)]
    project(tmp_path / "p.duckdb", list(canonical_records(log)), anchor_of(hub))
    rows = {r["event_id"]: r for r in audit(tmp_path / "p.duckdb", scenario.coi)}
    odd = rows[claimed.event_id]
    assert (odd["event_type"], odd["signature_check"]) == ("NoSuchEvent", "MALFORMED")
    assert "pcvhub.events.NoSuchEvent" in odd["detail"]
    assert rows[after.envelope.event_id]["signature_check"] == "UNREGISTERED_KEY"


def test_events_signed_after_a_later_reported_compromise_are_flagged(tmp_path: Path) -> None:
    hub, scenario, log = one_therapy()
    nurse = scenario.actors["nurse"]
    nurse_events = [e for e in scenario.log if e.producer == nurse.actor_id]
    since = nurse_events[len(nurse_events) // 2].occurred_at_us
    revocation = hub.registry_event("KeyRevoked", {
        "actor_id": nurse.actor_id, "key_id": nurse.key_id, "revoked_at": scenario.now_us + 10,
        "reason": "COMPROMISED", "compromised_since": since}, at_us=scenario.now_us + 10)
    log.append((REGISTRY_COI.encode(), revocation.raw))
    project(tmp_path / "p.duckdb", list(canonical_records(log)), anchor_of(hub))
    trail = {r["event_id"]: r for r in audit(tmp_path / "p.duckdb", scenario.coi)}
    for event in nurse_events:
        row = trail[event.event_id]
        expected = "SIGNED_WHILE_COMPROMISED" if event.occurred_at_us >= since else "VALID"
        assert (row["signature_check"], row["key_standing"]) == ("VERIFIED", expected)
        assert row["verification"] == ("VERIFIED" if expected == "VALID" else expected)
    others = [r for r in trail.values() if r["actor"] != nurse.actor_id]
    assert {r["verification"] for r in others} == {"VERIFIED"}


def test_without_a_trust_anchor_nothing_is_verified_and_no_actor_is_registered(
        tmp_path: Path) -> None:
    """The registry chain is verified from the trust anchor's registrar: without the
    anchor there is no one to start from, so no registration and no event counts."""
    hub, scenario, log = one_therapy()
    project(tmp_path / "p.duckdb", list(canonical_records(log)), anchor=None)
    con = connect(tmp_path / "p.duckdb", read_only=True)
    try:
        outcomes = dict(con.execute(
            "SELECT coi = ?, list(DISTINCT signature_check) FROM log.envelopes GROUP BY ALL",
            [REGISTRY_COI]).fetchall())
        actors = con.execute("SELECT count(*) FROM actors").fetchone()
    finally:
        con.close()
    assert outcomes == {True: ["UNREGISTERED_KEY"], False: ["UNREGISTERED_KEY"]}
    assert actors == (0,)


def test_keys_registered_in_a_partition_read_later_are_found_by_reading_ahead(
        tmp_path: Path) -> None:
    """The therapy's partition first, the registry's partition last: the projection reads
    the registry partition ahead to find the signers' keys."""
    registry_partition = partition_for(REGISTRY_COI.encode(), PARTITIONS)
    hub, scenario, log = one_therapy()
    while partition_for(scenario.coi.encode(), PARTITIONS) == registry_partition:  # 1 in 6
        hub, scenario, log = one_therapy()
    records = list(canonical_records(log))
    registry_last = ([r for r in records if r.partition != registry_partition]
                     + [r for r in records if r.partition == registry_partition])
    project(tmp_path / "late.duckdb", registry_last, anchor_of(hub), batch=5)
    assert {r["verification"] for r in audit(tmp_path / "late.duckdb", scenario.coi)} == {
        "VERIFIED"}


def test_an_unreadable_record_on_the_log_is_kept_and_the_next_one_projected(
        tmp_path: Path) -> None:
    hub, scenario, log = one_therapy()
    records = list(canonical_records(log))
    therapy_partition = next(r.partition for r in records if r.key == scenario.coi.encode())
    garbage = RawRecord.at("events", therapy_partition, 10_000, scenario.coi.encode(),
                        b"\xc3\x01garbage", None)
    after = replace(records[-1], position=replace(records[-1].position, offset=10_001))
    project(tmp_path / "p.duckdb", [*records[:-1], garbage, after], anchor_of(hub))
    con = connect(tmp_path / "p.duckdb", read_only=True)
    try:
        kept = con.execute("SELECT log_offset, record, error FROM log.unreadable").fetchall()
        last = con.execute("SELECT event_id FROM log.envelopes WHERE log_offset = 10001 "
                           "AND log_partition = ?", [therapy_partition]).fetchone()
    finally:
        con.close()
    assert len(kept) == 1 and kept[0][:2] == (10_000, b"\xc3\x01garbage")
    assert "envelope header" in kept[0][2]
    assert last == (decode_envelope(records[-1].value).event_id,)
