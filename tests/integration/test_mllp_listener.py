"""The MLLP listener on loopback, driven by a real MLLP client over mutual TLS.

Given a deployment whose gatekeeper worker registered the site's connector and its EMR,
when the EMR sends HL7 v2 messages, then each is acknowledged (AA only once Kafka holds
the event), the events are on the HL7 ingress topic and accepted onto the canonical log,
a repeated MSH-10 is acknowledged but not applied twice (also across a restart), and
every bad frame or message gets its negative ACK naming segment and field, lands on the
rejected topic with its exact bytes, and the listener keeps serving.
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid

import pytest

from pcvhub.connectors.hl7 import MessageMapper, MllpListener, frame
from pcvhub.connectors.tls import LocalCA
from pcvhub.streams.sandbox import PASSPHRASE

from ..unit.test_hl7_messages import adt_a01, oru_diagnosis
from .test_serve_deployment import (  # noqa: F401  (deployment is a fixture)
    CONNECTOR_ACTOR,
    BackgroundLoop,
    MllpClient,
    deployment,
    err,
    msa,
)

pytestmark = pytest.mark.kafka


class Listening:
    """A connector and its MLLP listener served from a background loop."""

    def __init__(self, deployment, frame_timeout_s: float = 2.0) -> None:  # noqa: F811
        self.deployment = deployment
        self.loop = BackgroundLoop()
        self.connector = deployment.connector("hl7")
        ca = LocalCA(deployment.hub.settings.data_dir / "tls", PASSPHRASE.encode())
        self.listener = self.loop.run(MllpListener(
            self.connector, MessageMapper(self.connector), ca.server_context(True),
            frame_timeout_s=frame_timeout_s).start())

    def client(self, caller=None) -> MllpClient:
        caller = self.deployment.emr if caller is None else caller
        return MllpClient(self.listener.port, self.deployment.tls_client(caller))

    def close(self) -> None:
        self.loop.run(self.listener.close())
        self.loop.close()
        self.connector.close()
        self.deployment.opened.remove(self.connector)


@pytest.fixture(scope="module")
def mllp(deployment):  # noqa: F811
    serving = Listening(deployment)
    yield serving
    serving.close()


def mrn() -> str:
    return f"MRN-{uuid.uuid4().hex[:8]}"


def refusals(deployment, endpoint: str) -> list[dict]:  # noqa: F811
    return [p for env, kind, p in deployment.records("rejected")
            if kind == "EventRejected" and p["source_topic"] == endpoint
            and env.producer == CONNECTOR_ACTOR]


def test_admit_and_diagnosis_are_acked_written_and_accepted(mllp, deployment):  # noqa: F811
    patient = mrn()
    client = mllp.client()
    first = client.send(adt_a01("ADM-1", patient))
    second = client.send(oru_diagnosis("DX-1", patient))
    client.close()
    assert msa(first)[1:3] == ["AA", "ADM-1"], first
    assert msa(second)[1:3] == ["AA", "DX-1"], second
    coi = msa(first)[3].rsplit(" ", 1)[-1]
    ingress = [(env, kind) for env, kind, _ in deployment.records("ingress.hl7")
               if env.coi == coi]
    assert [kind for _, kind in ingress] == ["PatientEnrolled", "DiagnosisRecorded"]
    assert all(env.producer == CONNECTOR_ACTOR for env, _ in ingress)
    missing = mllp.connector.wait_accepted([env.event_id for env, _ in ingress], 120)
    assert not missing, deployment.hub.worker_log()
    accepted = [kind for env, kind, _ in deployment.records("events") if env.coi == coi]
    assert accepted == ["PatientEnrolled", "DiagnosisRecorded"]


def test_a_repeated_control_id_is_acked_once_applied_even_after_a_restart(deployment):  # noqa
    patient = mrn()
    serving = Listening(deployment)
    client = serving.client()
    acks = [client.send(adt_a01("REPEAT-1", patient)) for _ in range(2)]
    client.close()
    serving.close()
    restarted = Listening(deployment)
    client = restarted.client()
    acks.append(client.send(adt_a01("REPEAT-1", patient)))
    client.close()
    restarted.close()
    assert [msa(a)[1:3] for a in acks] == [["AA", "REPEAT-1"]] * 3
    assert "already applied" in msa(acks[1])[3] and "already applied" in msa(acks[2])[3]
    written = [env for env, kind, p in deployment.records("ingress.hl7")
               if kind == "PatientEnrolled" and env.coi == msa(acks[0])[3].rsplit(" ", 1)[-1]]
    assert len(written) == 1


def _valid_right_after(client: MllpClient) -> None:
    control = f"OK-{uuid.uuid4().hex[:6]}"
    ack = client.send(adt_a01(control, mrn()))
    assert msa(ack)[1:3] == ["AA", control], ack


@pytest.mark.parametrize("name, data, ack_code, erl", [
    ("new start block before the end",
     b"\x0b" + adt_a01("TR-1", "M1").encode()[:40], "AR", ""),
    ("wrong field separators",
     frame(adt_a01("SEP-1", "M2").replace("PID|1||", "PID#1##")), "AR", "PID^3"),
    ("missing MSH-10", frame(adt_a01("X", "M3").replace("|X|P|", "||P|")), "AR", "MSH^1^10"),
    ("unknown message type",
     frame(adt_a01("UNK-1", "M4").replace("ADT^A01", "QBP^Q22")), "AR", "MSH^1^9"),
    ("unknown patient", frame(oru_diagnosis("UNK-P", "NOBODY")), "AE", "PID^1^3"),
])
def test_bad_input_is_nacked_recorded_and_the_listener_keeps_serving(
        mllp, deployment, name, data, ack_code, erl):  # noqa: F811
    client = mllp.client()
    if name.startswith("new start block"):
        ack = client.send_raw(data + frame(adt_a01("AFTER-TR", mrn())))
        follow = client.read_ack()
        assert msa(follow)[1:3] == ["AA", "AFTER-TR"], follow
    else:
        ack = client.send_raw(data)
    assert msa(ack)[1] == ack_code, ack
    error = err(ack)
    assert error[2] == erl and error[4] == "E", ack
    _valid_right_after(client)
    client.close()
    recorded = [p for p in refusals(deployment, mllp.listener.endpoint)
                if p["original"] == data]
    assert len(recorded) == 1, name
    assert recorded[0]["source_partition"] == -1 and recorded[0]["reason"]


def test_a_frame_cut_by_silence_or_by_the_peer_closing_is_recorded(mllp, deployment):  # noqa
    client = mllp.client()
    partial = b"\x0b" + adt_a01("SILENT-1", "M5").encode()[:50]
    ack = client.send_raw(partial)  # then nothing: the listener's frame timeout is 2 s
    assert msa(ack)[1] == "AR" and "no end block" in err(ack)[8]
    _valid_right_after(client)
    cut = b"\x0b" + adt_a01("CUT-1", "M6").encode()[:30]
    client.sock.sendall(cut)
    client.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        originals = [p["original"] for p in refusals(deployment, mllp.listener.endpoint)]
        if cut in originals:
            break
        time.sleep(0.5)
    assert partial in originals and cut in originals
    fresh = mllp.client()
    _valid_right_after(fresh)
    fresh.close()


def test_unauthenticated_and_wrong_site_callers_are_refused_and_recorded(mllp, deployment):  # noqa
    anonymous = deployment.tls_client(None)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        raw = socket.create_connection(("127.0.0.1", mllp.listener.port), timeout=10)
        sock = anonymous.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(frame(adt_a01("ANON-1", mrn())))
        if not sock.recv(1024):
            raise ConnectionError("closed without an answer")
    stranger = mllp.client(deployment.stranger)
    message = adt_a01("OSAKA-1", mrn())
    ack = stranger.send(message)
    stranger.close()
    assert msa(ack)[1] == "AR" and "OSAKA02" in err(ack)[8], ack
    recorded = refusals(deployment, mllp.listener.endpoint)
    assert any(p["reason_code"] == "WRONG_SITE" and p["original"] == frame(message)
               for p in recorded)
    deadline = time.monotonic() + 20
    while not any(p["reason_code"] == "UNAUTHENTICATED" for p in recorded) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
        recorded = refusals(deployment, mllp.listener.endpoint)
    assert any(p["reason_code"] == "UNAUTHENTICATED" for p in recorded)
    client = mllp.client()
    _valid_right_after(client)
    client.close()
