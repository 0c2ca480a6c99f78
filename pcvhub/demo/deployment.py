"""The demo's deployment: its folder, key store, trust anchor, connector CA and actors.

Everything lives in one data folder (``.pcvhub/demo`` by default) and is created on the
first run, then reused: the key store (encrypted under a passphrase generated for the
demo and kept beside it, which only a demo may do), the trust anchor (the registrar's
public keys), the connector CA and the client certificate of the hospital's EMR.

Each run is a fresh world on the same broker: its own topic prefix (the previous run's
topics are deleted), its own projection file and run folder. The actors are registered
again on the new registry chain by the registrar, with keys valid from before the
cohort's first event (the events happen over simulated weeks in the past).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from pcvhub.config import Settings
from pcvhub.connectors.identity import Pseudonymiser
from pcvhub.connectors.payer import Provider
from pcvhub.connectors.tls import LocalCA, private_key_pem
from pcvhub.demo.clients import DemoError
from pcvhub.demo.messages import Payer
from pcvhub.demo.therapy import Hub, Party
from pcvhub.infra.security import delete_acls
from pcvhub.projections.runner import DEFAULT_FILE
from pcvhub.streams.worker import GATEKEEPER_ACTOR
from pcvhub.topics import TOPICS, Principal
from pcvhub.trust.issuer import EventIssuer, now_us
from pcvhub.trust.keys import KeyStore, KeyStoreError
from pcvhub.trust.registry import ANCHOR_FILE, KeyRecord, write_anchor

PASSPHRASE_FILE = "demo-passphrase.txt"
LAST_RUN_FILE = "last-run.json"

# The hospital, its EMR and the partners of the demo.
SITE = "SEATTLE01"
SITE_NAME = "Pacific Cancer Center, Seattle"
PLANT = "MFG-KOBE"
PAYER = Payer("AETNA01", "AETNA", ("1 PAYER WAY", "HARTFORD", "CT", "061560001"))
PROVIDER = Provider("1234567893", "PACIFIC CANCER CENTER", "123456789", "100 MAIN ST",
                    "SEATTLE", "WA", "981011234")
CONNECTOR = "seattle01-emr-connector"  # signs what the HL7 and FHIR listeners translate
EMR = "seattle01-epic"  # the EMR's interface engine: calls the listeners
MES = "mes-kobe"  # the plant's MES / LIMS file drop
GATEWAY = "payer-gateway"  # the payer's EDI gateway (835 in)
REGISTRAR = "hub-registrar"


@dataclass(frozen=True)
class DemoActor:
    actor_id: str
    display_name: str
    roles: frozenset[str]
    site: str


def _actor(actor_id: str, name: str, site: str, *roles: str) -> DemoActor:
    return DemoActor(actor_id, name, frozenset(roles), site)


#: every actor registered on the log (the registrar is the trust anchor, not registered)
ACTORS = (
    _actor(GATEKEEPER_ACTOR, "pcvhub gatekeeper", "HUB", "GATEKEEPER"),
    _actor(CONNECTOR, f"{SITE_NAME}: HL7 / FHIR connector", SITE, "CONNECTOR", "HOSPITAL_IT"),
    _actor(EMR, f"{SITE_NAME}: EMR interface engine", SITE, "HOSPITAL_IT"),
    _actor(MES, "Kobe plant MES / LIMS", PLANT, "MANUFACTURER", "QC_ANALYST", "CONNECTOR"),
    _actor(GATEWAY, "Aetna EDI gateway", PAYER.payer_id, "PAYER", "CONNECTOR"),
    _actor("seattle01-dr-okafor", "Dr Ada Okafor, oncologist", SITE, "PHYSICIAN"),
    _actor("seattle01-rn-lindqvist", "Rut Lindqvist RN", SITE, "NURSE"),
    _actor("seattle01-pharmacy", f"{SITE_NAME}: pharmacy", SITE, "HOSPITAL_PHARMACIST"),
    _actor("seattle01-billing", f"{SITE_NAME}: billing office", SITE, "BILLING"),
    _actor("genolab-sequencing", "GenoLab sequencing", "GENOLAB", "SEQUENCING_LAB"),
    _actor("neoai-design", "NeoAI neoantigen design service", "NEOAI", "DESIGN_SERVICE"),
    _actor("tumour-board-dr-mehta", "Dr Ravi Mehta, tumour board", "TUMOUR-BOARD",
           "DESIGN_APPROVER"),
    _actor("tumour-board-dr-sato", "Dr Yui Sato, tumour board", "TUMOUR-BOARD",
           "DESIGN_APPROVER"),
    _actor("kobe-qp-dr-weber", "Dr Lena Weber, qualified person", PLANT, "QUALIFIED_PERSON"),
    _actor("coldchain-courier", "ColdChain Express", "COLDCHAIN", "COURIER"),
)
#: who plays each part of a therapy (``pcvhub.demo.therapy.CAST`` names)
CAST = {
    "physician": "seattle01-dr-okafor", "nurse": "seattle01-rn-lindqvist",
    "pharmacist": "seattle01-pharmacy", "billing": "seattle01-billing",
    "lab": "genolab-sequencing", "designer": "neoai-design",
    "approver1": "tumour-board-dr-mehta", "approver2": "tumour-board-dr-sato",
    "manufacturer": MES, "qc": MES, "qp": "kobe-qp-dr-weber", "courier": "coldchain-courier",
    "payer": GATEWAY,
}
#: signs a sequencing result although no registrar ever registered it
UNREGISTERED = DemoActor("genolab-night-shift", "GenoLab night shift workstation",
                         frozenset({"SEQUENCING_LAB"}), "GENOLAB")


def demo_passphrase(data_dir: Path) -> str:
    """The demo key store's passphrase: generated once, kept in the data folder."""
    path = data_dir / PASSPHRASE_FILE
    if path.exists():
        lines = [line for line in path.read_text().splitlines()
                 if line and not line.startswith("#")]
        if lines:
            return lines[0].strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    passphrase = secrets.token_urlsafe(24)
    path.write_text(
        "# DEMO ONLY. This passphrase unlocks the demo's throw-away key store in this folder.\n"
        "# A real deployment never keeps its passphrase beside its keys: it is injected as\n"
        "# PCVHUB_KEY_PASSPHRASE from a secret manager (see the README).\n"
        f"{passphrase}\n")
    path.chmod(0o600)
    return passphrase


@dataclass
class Deployment:
    """The demo's identities, folders and settings for one run."""

    settings: Settings  # the run's topic prefix and the demo data folder
    passphrase: str
    store: KeyStore
    hub: Hub  # registrar, live registry, registry chain (judged locally, then sent)
    parties: dict[str, Party]  # actor id -> keys, for every registered actor
    ca: LocalCA
    pseudonymiser: Pseudonymiser
    run_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def projection_file(self) -> Path:
        return self.data_dir / DEFAULT_FILE

    @property
    def env(self) -> dict[str, str]:
        """What a hub process of this run needs in its environment."""
        return {"PCVHUB_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
                "PCVHUB_TOPIC_PREFIX": self.settings.topic_prefix,
                "PCVHUB_DATA_DIR": str(self.data_dir),
                "PCVHUB_KAFKA_CREDENTIALS_DIR": str(self.settings.kafka_credentials),
                "PCVHUB_KEY_PASSPHRASE": self.passphrase,
                # the cohort lives in simulated time: timers never read the wall clock
                "PCVHUB_TIMER_CLOCK": "simulation",
                # the demo back-dates on its simulated clock (pcvhub.streams.timebounds)
                "PCVHUB_TIME_BOUNDS": "simulation"}

    def cast(self) -> dict[str, Party]:
        return {part: self.parties[actor_id] for part, actor_id in CAST.items()}

    def client_files(self, actor_id: str) -> tuple[Path, Path]:
        """The TLS client certificate and key of a caller (issued over its registered key)."""
        folder = self.data_dir / "clients"
        folder.mkdir(exist_ok=True)
        signer = self.parties[actor_id].issuer.signer
        cert, key = folder / f"{actor_id}.pem", folder / f"{actor_id}.key"
        cert.write_bytes(self.ca.issue_client_certificate(actor_id, signer.keys.public.ed25519))
        key.write_bytes(private_key_pem(signer))
        key.chmod(0o600)
        return cert, key


def _party(store: KeyStore, actor: DemoActor) -> Party:
    try:
        signer = store.latest(actor.actor_id)
    except KeyStoreError:
        signer = store.create(actor.actor_id, str(now_us()))
    return Party(actor.actor_id, actor.roles, actor.site, EventIssuer(signer))


def prepare(base: Settings, data_dir: Path, prefix: str, start_us: int) -> Deployment:
    """Create (first run) or load the identities; register every actor on this run's
    registry chain (locally judged; ``Deployment.hub.registry_log`` is what to send).

    :param start_us: the cohort's first event time; keys are valid from the day before.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = replace(base, data_dir=data_dir, topic_prefix=prefix)
    passphrase = demo_passphrase(data_dir)
    store = KeyStore(data_dir / "keys", passphrase.encode())
    registrar = _party(store, DemoActor(REGISTRAR, "pcvhub registrar", frozenset({"REGISTRAR"}),
                                        "HUB"))
    hub = Hub(start_us, registrar=registrar)
    write_anchor(data_dir / ANCHOR_FILE, hub.anchor_actor, KeyRecord(
        registrar.actor_id, registrar.key_id, registrar.issuer.signer.keys.public,
        hub.anchor_valid_from_us))
    parties = {}
    for actor in ACTORS:
        parties[actor.actor_id] = hub.register_party(_party(store, actor), actor.display_name)
    # the design service's validated model, registered with the actors (designs name it)
    hub.register_model(parties[CAST["designer"]], parties[CAST["approver1"]])
    ca = LocalCA(data_dir / "tls", passphrase.encode())
    pseudonymiser = Pseudonymiser.load(store, create=True)  # before any connector races for it
    run_dir = data_dir / "runs" / prefix
    run_dir.mkdir(parents=True, exist_ok=True)
    return Deployment(settings, passphrase, store, hub, parties, ca, pseudonymiser, run_dir)


def forget_previous_run(settings: Settings, data_dir: Path, prefix: str) -> str | None:
    """Delete the topics, projection file and run folder of the demo run before this one
    (recorded in ``last-run.json``); record this run. Returns the prefix deleted."""
    data_dir = data_dir.resolve()
    record = data_dir / LAST_RUN_FILE
    previous = None
    if record.exists():
        previous = json.loads(record.read_text()).get("topic_prefix")
    if previous and previous != prefix:
        admin = AdminClient(settings.as_principal(Principal.ADMIN).librdkafka(log_level=0))
        doomed = [t for t in admin.list_topics(timeout=10).topics
                  if t.startswith(f"{previous}.")]
        if doomed:
            for future in admin.delete_topics(doomed, operation_timeout=30).values():
                try:
                    future.result()
                except Exception:  # noqa: BLE001 - already gone is fine: nothing to keep
                    pass
        delete_acls(settings, previous)
        shutil.rmtree(data_dir / "runs" / previous, ignore_errors=True)
    (data_dir / DEFAULT_FILE).unlink(missing_ok=True)
    (data_dir / DEFAULT_FILE).with_suffix(".duckdb.wal").unlink(missing_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"topic_prefix": prefix, "started": time.time()}))
    return previous


def wait_for_topics(settings: Settings, timeout: float = 60.0) -> None:
    """Block until every partition of the run's new topics has a leader that answers
    (a topic is usable a moment after its creation returns)."""
    consumer = Consumer(settings.as_principal(Principal.ADMIN).librdkafka(**{
        "group.id": "pcvhub-demo-setup",
                                               "enable.auto.commit": False}))
    deadline = time.monotonic() + timeout
    try:
        for spec in TOPICS:
            name = spec.name(settings.topic_prefix)
            for partition in range(spec.partitions):
                while True:
                    try:
                        consumer.get_watermark_offsets(TopicPartition(name, partition),
                                                       timeout=5)
                        break
                    except KafkaException as exc:
                        if time.monotonic() > deadline:
                            raise DemoError(f"topic {name}[{partition}] has no leader "
                                               f"after {timeout:.0f} s: {exc}") from exc
                        time.sleep(0.2)
    finally:
        consumer.close()
