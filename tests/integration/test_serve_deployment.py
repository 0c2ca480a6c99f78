"""A whole connector deployment on the real broker, and `pcvhub serve` as a process.

``Deployment`` (shared with the MLLP and FHIR tests) is a Sandbox (own topic prefix,
data dir, a real gatekeeper worker) whose registrar is the trust anchor and registers
the hospital's connector actor and the callers on the log, exactly as production does;
the connector CA lives in the sandbox's data dir.

The serve test: given a registered connector and EMR caller, when `serve` runs as a
process with port 0, then it prints one line per listener, and a message sent to each
printed address is acknowledged and its event read back from the ingress topics.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from pcvhub.connectors.callers import issue_token
from pcvhub.connectors.core import Connector
from pcvhub.connectors.hl7.listener import frame
from pcvhub.connectors.tls import LocalCA, private_key_pem
from pcvhub.log.reader import LogFollower, deployment_verifier
from pcvhub.log.verify import CANONICAL
from pcvhub.schemas.codec import decode_envelope, decode_payload
from pcvhub.streams.sandbox import PASSPHRASE, Sandbox
from pcvhub.topics import Principal
from pcvhub.trust.issuer import EventIssuer, now_us
from pcvhub.trust.keys import KeyStore
from pcvhub.trust.registry import REGISTRY_COI, Actor, registration_payload
from pcvhub.trust.signing import EventSigner

from ..unit.test_hl7_messages import SITE, adt_a01

pytestmark = pytest.mark.kafka
T = TypeVar("T")
CONNECTOR_ACTOR = "site-kyoto01-emr"
HOUR_US = 3_600_000_000


class BackgroundLoop:
    """An asyncio loop in a thread, so a test can drive servers with blocking clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class Deployment:
    hub: Sandbox
    store: KeyStore
    registrar: EventIssuer
    ca: LocalCA
    site: str = SITE
    registered: list[str] = field(default_factory=list)
    opened: list[Connector] = field(default_factory=list)

    @classmethod
    def create(cls, settings: Any, bootstrap: str, root: Path) -> Deployment:
        hub = Sandbox.create(settings, bootstrap, root)
        store = KeyStore(hub.settings.data_dir / "keys", PASSPHRASE.encode())
        registrar = store.create("hub-registrar", str(now_us()))
        gatekeeper = hub.install_identities(registrar, valid_from_us=now_us() - HOUR_US)
        ca = LocalCA(hub.settings.data_dir / "tls", PASSPHRASE.encode())
        deployment = cls(hub, store, EventIssuer(registrar), ca)
        # first: the gatekeeper's seal is on everything it writes, its own registration too
        deployment.register(gatekeeper.producer, ["GATEKEEPER"], "HUB", signer=gatekeeper)
        return deployment

    def register(self, actor_id: str, roles: Iterable[str], site: str, *,
                 signer: EventSigner | None = None) -> EventSigner:
        """Its ActorRegistered (of a new key in the store, unless ``signer`` is given),
        sent to the gatekeeper."""
        signer = signer or self.store.create(actor_id, str(now_us()))
        issued = self.registrar.issue("ActorRegistered", REGISTRY_COI, registration_payload(
            Actor(actor_id, actor_id, frozenset(roles), site), signer.key_id,
            signer.keys.public, now_us() - 60_000_000))
        self.hub.send([(issued.key, issued.wire)])
        self.registered.append(issued.envelope.event_id)
        return signer

    def wait_registered(self, timeout: float = 180) -> None:
        settings = self.hub.settings.as_principal(Principal.READER)
        verifier = deployment_verifier(settings, "test deployment")
        with LogFollower(settings, [CANONICAL], verifier) as canonical:
            missing = canonical.wait_read(self.registered, timeout)
        verifier.close()
        assert not missing, f"registrations not accepted: {missing}\n{self.hub.worker_log()}"

    def connector(self, source: str, settle_s: float = 5.0) -> Connector:
        connector = Connector.open(self.hub.settings, CONNECTOR_ACTOR, source, site_id=self.site,
                                   passphrase=PASSPHRASE.encode(), settle_s=settle_s)
        self.opened.append(connector)
        return connector.start()

    def client_files(self, caller: EventSigner) -> tuple[Path, Path]:
        """A client certificate over the caller's registered key, and the caller's key."""
        folder = self.hub.root / "clients"
        folder.mkdir(exist_ok=True)
        cert, key = folder / f"{caller.producer}.pem", folder / f"{caller.producer}.key"
        cert.write_bytes(self.ca.issue_client_certificate(caller.producer,
                                                          caller.keys.public.ed25519))
        key.write_bytes(private_key_pem(caller))
        return cert, key

    def tls_client(self, caller: EventSigner | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca.cert_path)
        if caller is not None:
            context.load_cert_chain(*self.client_files(caller))
        return context

    def records(self, suffix: str) -> list[tuple[Any, str, dict[str, Any]]]:
        """(envelope, short type, payload) of every record on one of the hub's topics."""
        found = []
        for msg in self.hub.read_all(suffix):
            env = decode_envelope(msg.value)
            full, payload = decode_payload(env.schema_fingerprint, env.payload, env.event_type)
            found.append((env, full.rsplit(".", 1)[-1], payload))
        return found

    def close(self) -> None:
        for connector in self.opened:
            connector.close()
        self.hub.stop_all()


class MllpClient:
    """A blocking MLLP client over TLS: one frame out, one ACK back."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        self._buffer = b""

    def send(self, message: str) -> str:
        return self.send_raw(frame(message))

    def send_raw(self, data: bytes) -> str:
        self.sock.sendall(data)
        return self.read_ack()

    def read_ack(self) -> str:
        while b"\x1c\x0d" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the listener closed the connection")
            self._buffer += chunk
        end = self._buffer.index(b"\x1c\x0d")
        ack, self._buffer = self._buffer[:end], self._buffer[end + 2:]
        assert ack[:1] == b"\x0b", f"an ACK frame starts with 0x0B: {ack[:20]!r}"
        return ack[1:].decode()

    def close(self) -> None:
        self.sock.close()


def msa(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("MSA|")).split("|")


def err(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("ERR|")).split("|")


@pytest.fixture(scope="module")
def deployment(kafka, settings, tmp_path_factory):
    """One deployment per test module: a worker, the connector actor and two EMR callers."""
    built = Deployment.create(settings, kafka.bootstrap_servers,
                              tmp_path_factory.mktemp("deployment"))
    built.hub.start_worker()
    built.register(CONNECTOR_ACTOR, {"CONNECTOR", "HOSPITAL_IT"}, SITE)
    built.emr = built.register("emr-kyoto01", {"HOSPITAL_IT"}, SITE)  # type: ignore[attr-defined]
    built.stranger = built.register("emr-osaka02", {"HOSPITAL_IT"}, "OSAKA02")  # type: ignore
    built.register("mes-kobe", {"CONNECTOR", "MANUFACTURER"}, "MFG-KOBE")  # the file drop
    built.register("coldchain-loggers", {"CONNECTOR"}, "COLDCHAIN")  # the logger drop
    built.wait_registered()
    yield built
    built.close()


def test_serve_prints_each_listener_and_each_takes_a_message(deployment, tmp_path):
    script = ("import typer\nfrom pcvhub.cli_serve import register\napp = typer.Typer()\n"
              "register(app)\n@app.command()\ndef version() -> None:\n    print('test')\n"
              "app()\n")
    drop, loggers = tmp_path / "drop", tmp_path / "loggers"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "serve", "--site", SITE, "--actor", CONNECTOR_ACTOR,
         "--mllp-port", "0", "--http-port", "0", "--drop", str(drop),
         "--drop-actor", "mes-kobe", "--drop-site", "MFG-KOBE", "--settle", "0",
         "--logger-drop", str(loggers)],
        env=deployment.hub.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=deployment.hub.root)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while len(lines) < 4 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        assert len(lines) == 4, f"serve printed {lines}; stderr:\n{proc.stderr.read()}"
        kinds = [line.split(" ", 1)[0] for line in lines]
        assert kinds == ["mllp", "http", "drop", "logger-drop"]
        host, port = lines[0].split(" ")[1].split(":")
        assert host == "127.0.0.1"
        base_url = lines[1].split(" ")[1]
        assert base_url.startswith("https://127.0.0.1:")
        assert Path(lines[2].split(" ", 1)[1]) == drop.resolve()
        assert Path(lines[3].split(" ", 1)[1]) == loggers.resolve()
        # the logger drop serves as coldchain-loggers: an empty export is refused whole
        (loggers / "LOG-1.csv").write_bytes(b"")
        result = loggers / "failed" / "LOG-1.csv.result.json"
        while not result.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        refused = json.loads(result.read_text())
        assert refused["connector"] == "coldchain-loggers", refused
        assert "the CSV file is empty" in refused["error"]

        assert proc.poll() is None, f"serve exited:\n{proc.stderr.read()}"
        client = MllpClient(int(port), deployment.tls_client(deployment.emr))
        ack = client.send(adt_a01("SERVE-1", "MRN-SERVE"))
        client.close()
        assert msa(ack)[1:3] == ["AA", "SERVE-1"], ack
        token = issue_token(deployment.emr, base_url)
        answer = httpx.get(f"{base_url}/metadata", verify=deployment.tls_client(None),
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["fhirVersion"] == "4.0.1"
        openapi = httpx.get(f"{base_url}/openapi.json", verify=deployment.tls_client(None),
                            timeout=30).json()
        assert {"/ServiceRequest", "/Condition", "/Observation", "/MedicationAdministration",
                "/Consent", "/therapy/{coi}/history"} <= set(openapi["paths"])
        enrolled = [p for _, kind, p in deployment.records("ingress.hl7")
                    if kind == "PatientEnrolled"]
        assert any(p["mrn_assigning_authority"] == "KUH" for p in enrolled), \
            json.dumps([str(p) for p in enrolled])
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read()
