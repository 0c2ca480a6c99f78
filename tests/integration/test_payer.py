"""The payer connector on the real broker: 835 files dropped into its watched inbox, judged
by a real `pcvhub worker`, read back from Kafka; claims read from the log go out as 837P.

Given a therapy whose two administrations were billed in US dollars (ClaimSubmitted on the
canonical log) and the ``payer-gateway`` actor registered with roles PAYER and CONNECTOR,
when the payer's 835 arrives, then each known claim is adjudicated (and paid, if money
was paid) on the claim's own chain, a claim the hub never billed is refused with its
reason in the result file and on the rejected topic, a repeated remittance posts nothing
twice, and after each bad file a valid one is still applied.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from pcvhub.connectors.payer import ClaimOutbox, ClaimRecord, RemittanceDrop
from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.streams.sandbox import PASSPHRASE, Sandbox
from pcvhub.trust.issuer import now_us
from pcvhub.trust.keys import KeyStore
from pcvhub.trust.registry import Actor, registration_payload

from ..unit.test_payer import CANCER_CENTER, pyx12_accepts, remittance_835
from ..unit.therapy_builder import Hub, TherapyScenario

pytestmark = pytest.mark.kafka

GATEWAY = "payer-gateway"
PAYER = "AETNA01"


class RunningGateway:
    """``RemittanceDrop.serve`` (what `pcvhub serve` runs) on its own event loop in a thread."""

    def __init__(self, hub: Sandbox, inbox: Path) -> None:
        self.hub, self.inbox = hub, inbox
        inbox.mkdir(parents=True)
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(RemittanceDrop.serve(
                self.hub.settings, self.inbox, self.stop, actor_id=GATEWAY, site_id=PAYER))
        except BaseException as exc:  # surfaced by result()
            self.error = exc

    def start(self) -> RunningGateway:
        self.thread.start()
        return self

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)

    def drop(self, name: str, text: str | bytes) -> None:
        hidden = self.inbox / f".{name}"
        hidden.write_bytes(text.encode() if isinstance(text, str) else text)
        hidden.rename(self.inbox / name)

    def result(self, name: str, where: str = "done", timeout: float = 90.0) -> dict:
        path = self.inbox / where / f"{name}.result.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.error is not None or not self.thread.is_alive():
                raise AssertionError(f"the payer gateway stopped: {self.error!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no result for {name}:\n{self.hub.worker_log()}")
            time.sleep(0.1)
        return json.loads(path.read_text())


@pytest.fixture(scope="module")
def payer(kafka, settings, tmp_path_factory):
    """A hub where two administrations were billed to AETNA01 in USD; worker and gateway up."""
    root = tmp_path_factory.mktemp("payer")
    hub = Sandbox.create(settings, kafka.bootstrap_servers, root)
    builder = Hub()
    builder.deploy_gatekeeper(hub)
    key = KeyStore(hub.settings.data_dir / "keys", PASSPHRASE.encode()).create(GATEWAY,
                                                                                str(now_us()))
    builder.admit(builder.registry_event("ActorRegistered", registration_payload(
        Actor(GATEWAY, "payer EDI gateway", frozenset({"PAYER", "CONNECTOR"}), PAYER),
        key.key_id, key.keys.public, builder.clock_us)))
    scenario = TherapyScenario(builder)
    receivables = tuple(f"{s}#{n}" for n in (1, 2) for s in ("claim", "adjudicate", "pay"))
    scenario.run_until("outcome#2", skipping=receivables)
    for n in (1, 2):
        scenario.accept(scenario.issue("billing", "ClaimSubmitted", {
            "claim_id": f"CLM-{n}", "administration_event_id": scenario.administration_event_of(n),
            "payer_id": PAYER, "amount": Decimal("12500.00"), "currency": "USD",
            "procedure_code": "J3590", "diagnosis_codes": ["C43.5"],
            "procedure_modifiers": ["JW"]}))
    worker = hub.start_worker()
    hub.send([(e.coi.encode(), e.raw) for e in builder.registry_log])
    assert hub.wait_answered(len(builder.registry_log), 180, worker) == \
        len(builder.registry_log), hub.worker_log()
    hub.send([(e.coi.encode(), e.raw) for e in scenario.log])
    expected = len(builder.registry_log) + len(scenario.log)
    assert hub.wait_answered(expected, 180, worker) == expected, hub.worker_log()
    assert hub.count("rejected") == 0, hub.worker_log()

    pytest.MonkeyPatch().setenv("PCVHUB_KEY_PASSPHRASE", PASSPHRASE)
    gateway = RunningGateway(hub, root / "inbox").start()
    yield hub, scenario, gateway
    gateway.close()
    hub.stop_all()


def _by_id(hub: Sandbox, suffix: str) -> dict[str, tuple]:
    found = {}
    for msg in hub.read_all(suffix):
        env = decode_envelope(msg.value)
        _, payload = decode_payload(env.schema_fingerprint, env.payload, env.event_type)
        found[env.event_id] = (env, payload)
    return found


def _events_of(entry: dict) -> dict[str, str]:
    return {e["event_type"]: e["event_id"] for e in entry["events"]}


def _still_serving(payer, trace: str) -> None:
    hub, scenario, gateway = payer
    gateway.drop(f"{trace}.835", remittance_835([("CLM-1", "1", "12500", "100", "")],
                                                trace=trace))
    result = gateway.result(f"{trace}.835")
    assert [e["status"] for e in result["results"]] == ["accepted"], result


def test_a_remittance_adjudicates_pays_and_refuses_the_unknown_claim(payer):
    hub, scenario, gateway = payer
    text = remittance_835([
        ("CLM-1", "1", "12500", "9000", "CAS*CO*45*3000|CAS*PR*2*500"),
        ("CLM-2", "4", "12500", "0", "CAS*CO*50*12500"),
        ("CLM-999", "1", "12500", "12500", ""),
    ], trace="EFT-1001", payer_ref=PAYER)
    gateway.drop("remit-1.835", text)
    result = gateway.result("remit-1.835")
    partial, denied, unknown = result["results"]
    assert (partial["status"], denied["status"], unknown["status"]) == \
        ("accepted", "accepted", "refused"), result
    assert unknown["reason_code"] == "UNKNOWN_CLAIM" and "CLM-999" in unknown["reason"]
    assert set(_events_of(partial)) == {"ClaimAdjudicated", "PaymentPosted"}
    assert set(_events_of(denied)) == {"ClaimAdjudicated"}

    canonical = _by_id(hub, "events")
    env, adjudicated = canonical[_events_of(partial)["ClaimAdjudicated"]]
    assert env.producer == GATEWAY and env.coi == scenario.coi
    assert adjudicated["status"] == "PARTIALLY_APPROVED"
    assert adjudicated["allowed_amount"] == Decimal("9500.00")
    assert adjudicated["denial_reason_code"] == "45"
    _, paid = canonical[_events_of(partial)["PaymentPosted"]]
    assert (paid["amount"], paid["currency"], paid["remittance_ref"]) == \
        (Decimal("9000.00"), "USD", "EFT-1001")
    assert paid["paid_on"] == datetime(2026, 3, 1, tzinfo=UTC)
    _, refusal = canonical[_events_of(denied)["ClaimAdjudicated"]]
    assert (refusal["status"], refusal["denial_reason_code"]) == ("DENIED", "50")

    rejected = _by_id(hub, "rejected")
    env, refused = rejected[unknown["refusal_event_id"]]
    assert env.producer == GATEWAY and refused["reason_code"] == "UNKNOWN_CLAIM"
    assert refused["original"].startswith(b"CLP*CLM-999*1*12500*12500")

    # The same remittance in a new interchange (new ISA13) posts nothing twice.
    before = hub.count("ingress.payer")
    gateway.drop("remit-1-resent.835", text.replace("000000101", "000000102"))
    again = gateway.result("remit-1-resent.835")
    assert [e["status"] for e in again["results"]] == \
        ["already-accepted", "already-accepted", "refused"]
    assert [_events_of(e) for e in again["results"][:2]] == [_events_of(partial),
                                                              _events_of(denied)]
    # nothing applied twice: the only new records are the connector's refusals, which
    # reach the rejected topic through its ingress topic (the gatekeeper relays them)
    refusals = sum(r["status"] == "refused" for r in again["results"])
    assert hub.count("ingress.payer") == before + refusals


@pytest.mark.parametrize(("name", "content", "expect"), [
    ("garbage.835", b"this is not X12 at all", "not"),
    ("st03.835", remittance_835([("CLM-1", "1", "12500", "1", "")], trace="EFT-X").replace(
        "ST*835*0001", "ST*835*0001*005010X221A1"), "ST03"),
    ("binary.835", b"ISA*\xff\xfe", "not ASCII"),
])
def test_an_unreadable_remittance_is_refused_whole(payer, name, content, expect):
    hub, scenario, gateway = payer
    gateway.drop(name, content)
    result = gateway.result(name, where="failed")
    assert expect in result["error"] and result["results"] == []
    _, refusal = _by_id(hub, "rejected")[result["refusal_event_id"]]
    assert refusal["reason_code"] == "INVALID_835" and expect in refusal["reason"]
    assert refusal["original"] == (content if isinstance(content, bytes) else content.encode())
    _still_serving(payer, f"EFT-after-{name.split('.')[0]}")


def test_a_payment_for_another_charge_is_refused_and_the_rest_applied(payer):
    hub, scenario, gateway = payer
    gateway.drop("mismatch.835", remittance_835([
        ("CLM-1", "1", "99999", "10", ""), ("CLM-2", "1", "12500", "12500", "")],
        trace="EFT-2002"))
    result = gateway.result("mismatch.835")
    mismatch, paid = result["results"]
    assert mismatch["status"] == "refused" and mismatch["reason_code"] == "CHARGE_MISMATCH"
    assert paid["status"] == "accepted", result


def test_claims_read_from_the_log_go_out_as_a_valid_837p(payer, tmp_path):
    """The billing projection's job done by hand: ClaimSubmitted + DoseAdministered from the
    canonical log become ClaimRecords; the outbox writes an 837P pyx12 accepts."""
    hub, scenario, gateway = payer
    canonical = [(env, p) for env, p in _by_id(hub, "events").values()
                 if env.coi == scenario.coi]
    administered = {env.event_id: env for env, _ in canonical
                    if env.event_type.endswith("DoseAdministered")}
    records = [ClaimRecord.from_row({
        **p, "coi": env.coi, "patient_pseudonym": f"PSN-{scenario.patient_hash[:12]}",
        "member_id": "W123456789",
        "service_date": datetime.fromtimestamp(
            administered[p["administration_event_id"]].occurred_at_us / 1e6, UTC),
        **{f"billing_provider_{k}": v for k, v in vars(CANCER_CENTER).items()}})
        for env, p in canonical if env.event_type.endswith("ClaimSubmitted")]
    assert sorted(r.claim_id for r in records) == ["CLM-1", "CLM-2"]
    written = ClaimOutbox(tmp_path, "PCVHUB", "PCVHUB BILLING", "BILLING DESK",
                          "2065550100").write(records)
    (interchange,) = written.x12_files
    text = interchange.read_text()
    assert pyx12_accepts(text)
    assert "CLM*CLM-1*12500***22:B:1*Y*A*Y*Y" in text and "SV1*HC:J3590:JW*12500" in text
    assert len(written.fhir_files) == 2
