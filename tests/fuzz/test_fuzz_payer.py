"""X12 835 remittances: whatever a file holds, the payer connector applies each claim
payment or refuses it with its reason, or refuses the whole file, and never fails on it.

The refusals of this edge are, for a whole file, the failed ``Outcome`` of
``RemittanceDrop.handle`` (not ASCII, pyx12 finds it invalid, or ``UnreadableRemittance``
from the reader), and, per claim payment (CLP loop), a refused entry with its reason code
and a reason naming the claim payment and its CLP01; the other claims of the file go on.
``read_remittance`` on its own raises ``UnreadableRemittance`` only.

pyx12 takes about 0.3 s per interchange here, so these tests run few examples in CI; the
long profile runs thousands. Seeds are the unit tests' 835 (payments in full and in part,
a denial, adjustments and remarks) and the demo payer's, for claims the connector knows.
"""

from __future__ import annotations

import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pcvhub.connectors.outcome import Status
from pcvhub.connectors.payer import RemittanceDrop, UnreadableRemittance, read_remittance
from pcvhub.demo import messages as demo
from pcvhub.demo.therapy import decode_inbound
from pcvhub.ids import new_coi
from pcvhub.log.verify import LogPosition, VerifiedRecord
from pcvhub.trust.issuer import EventIssuer

from ..unit.test_payer import remittance_835
from .mutate import mutated_bytes, mutated_units
from .offline import SITE, OfflineConnector
from .profiles import bounded, fuzz_settings, label

pytestmark = pytest.mark.fuzz

COI = new_coi(SITE, 2026)
PAYER = "AETNA01"
CHARGE = Decimal("12500.00")
CLAIMS = ("CLM-1", "CLM-2", "CLM-3")
#: The reason codes of a refused claim payment (payer._problem).
REASON_CODES = {"UNKNOWN_CLAIM", "REVERSAL_NOT_SUPPORTED", "UNSUPPORTED_CLAIM_STATUS",
                "WRONG_PAYER", "WRONG_CURRENCY", "CHARGE_MISMATCH"}

SEEDS = [
    remittance_835([("CLM-1", "1", "12500", "12500", ""),
                    ("CLM-2", "1", "12500", "9000", "CAS*CO*45*3000|CAS*PR*2*500"),
                    ("CLM-3", "4", "12500", "0", "CAS*CO*50*12500")],
                   payer_ref=PAYER, extra_segments=("MOA***M15*N115",)),
    remittance_835([("CLM-1", "1", "12500", "12500", ""), ("CLM-7", "22", "12500", "-12500", "")],
                   currency="JPY", payer_ref=PAYER),  # both refused: JPY, and an unknown claim
    demo.remittance_835(
        demo.Payer(PAYER, "AETNA", ("1 PAYER WAY", "HARTFORD", "CT", "061560001")),
        "PACIFIC CANCER CENTER", "1234567893", "PCVHUB",
        [demo.ClaimPaid("CLM-2", CHARGE, CHARGE, "W123456789", "PSN-a1b2c3d4")],
        trace="EFT0002", paid_on=demo.dt.date(2026, 3, 2), control_number=102),
]
INBOX = Path(tempfile.mkdtemp(prefix="pcvhub-fuzz-835-"))


@pytest.fixture(scope="module", autouse=True)
def _remove_the_folder():
    """A scratch folder: handle() writes nothing in it, DropFolder only makes done/, failed/."""
    yield
    shutil.rmtree(INBOX, ignore_errors=True)


def _drop() -> tuple[RemittanceDrop, OfflineConnector]:
    """A payer connector that knows CLAIMS (billed to PAYER for CHARGE in USD)."""
    connector = OfflineConnector("payer")
    # verdict_timeout_s=0: no gatekeeper answers, so what is written stays "pending"
    drop = RemittanceDrop(connector, INBOX, verdict_timeout_s=0, settle_s=0)
    issuer = EventIssuer(connector.signer)
    for n, claim_id in enumerate(CLAIMS, start=1):
        submitted = issuer.issue("ClaimSubmitted", COI, {
            "claim_id": claim_id, "administration_event_id": f"0190a3c4-0000-7000-8000-{n:012d}",
            "payer_id": PAYER, "amount": CHARGE, "currency": "USD", "procedure_code": "J3590",
            "diagnosis_codes": ["C43.5"], "procedure_modifiers": None})
        # as the connector's canonical follower hands it over once the log reader admitted it
        drop.claims.observe(VerifiedRecord(LogPosition("events", 0, n), submitted.key,
                                           decode_inbound(submitted.wire), submitted.digest))
    return drop, connector


@st.composite
def damaged_835s(draw: st.DrawFn) -> bytes:
    """A seed with segments and elements damaged (components of ``:``), one per line."""
    seed = draw(st.sampled_from(SEEDS))
    segments = [s.split("*") for s in seed.replace("\n", "").split("~") if s]
    damaged = draw(mutated_units(segments, max_ops=3, components=":"))
    return ("~\n".join("*".join(elements) for elements in damaged) + "~\n").encode()


REMITTANCES = damaged_835s() | mutated_bytes([s.encode() for s in SEEDS], max_ops=2)

# Inputs that broke these properties before their fix (found by the fuzzing): each made
# pyx12 raise something other than X12Error, which escaped validate_x12 / read_remittance.
FOUND = [
    # a GS segment without its id: IndexError from pyx12 at the GE that closes no GS
    SEEDS[0].replace("GS*HP*", "HP*").encode(),
    # a GS whose GS08 is not where pyx12 looks: EngineError "Map not found"
    SEEDS[0].replace("GS*HP*", "GS*GS*HP*").encode(),
    # a TRN segment without its id, read without validation: EngineError on BPR16
    SEEDS[0].replace("TRN*1*", "1*").encode(),
]


def applied_or_refused(data: bytes) -> None:
    drop, connector = _drop()
    try:
        with bounded(60, "RemittanceDrop.handle"):
            outcome = drop.handle(INBOX / "remittance.835", data)
    finally:
        connector.close()
    result = outcome.result
    if outcome.failed:
        label("file refused")
        assert result["error"].strip()
        (refusal,) = connector.refusals
        assert refusal.envelope.event_id == result["refusal_event_id"]
        assert not connector.written
        return
    entries = result["results"]
    assert result["claim_payments"] == len(entries) > 0
    for entry in entries:
        label(f"claim payment {entry['status']}")
        if entry["status"] == Status.REFUSED.value and entry["refused_by"] == "connector":
            assert entry["reason_code"] in REASON_CODES, entry
            assert entry["reason"].startswith(f"claim payment {entry['claim_payment']} "
                                              f"(CLP*{entry['claim_id']}"), entry["reason"]
        else:
            assert entry["status"] == Status.PENDING.value, entry
            assert {e["status"] for e in entry["events"]} == {Status.PENDING.value}
    written = {w.envelope.event_id for w in connector.written}
    assert written == {e["event_id"] for entry in entries for e in entry.get("events", ())}
    assert len(connector.refusals) == sum(1 for e in entries if e["status"] == Status.REFUSED.value)


@fuzz_settings(0.1)
@given(REMITTANCES)
@example(FOUND[0])
@example(FOUND[1])
def test_damaged_remittances_are_applied_per_claim_or_refused(data):
    applied_or_refused(data)


@fuzz_settings(0.1)
@given(REMITTANCES)
@example(FOUND[0])
@example(FOUND[1])
@example(FOUND[2])
def test_the_reader_returns_claim_payments_or_says_why_it_cannot(data):
    """Without the validation in front of it: the reader's own refusal is the only one."""
    try:
        with bounded(60, "read_remittance"):
            payments = read_remittance(data.decode("ascii", "replace"))
    except UnreadableRemittance as refusal:
        label("unreadable")
        assert str(refusal).strip()
        return
    label("read")
    assert payments and [p.position for p in payments] == list(range(1, len(payments) + 1))


def test_the_seeds_are_read_and_judged_per_claim():
    """Every seed gets past the file checks to the claims (else the fuzzing above would
    test the first checks only)."""
    found = []
    for seed in SEEDS:
        drop, connector = _drop()
        result = drop.handle(INBOX / "remittance.835", seed.encode()).result
        connector.close()
        assert result.get("error") is None, result["error"]
        found.append([e.get("reason_code", e["status"]) for e in result["results"]])
    pending = Status.PENDING.value
    assert found == [[pending] * 3, ["WRONG_CURRENCY", "UNKNOWN_CLAIM"], [pending]]
