"""A real Apache Kafka (KRaft) on loopback: jars from Maven Central, run with the machine's Java.

``LocalKafka(settings, brokers=1)`` is the single node used by ``demo`` and the tests;
``brokers=3`` is a cluster of three combined broker+controller nodes with replication
factor 3 and ``min.insync.replicas=2`` for failover tests. Jars live in the cache folder
(one copy per Kafka version), broker data and logs in the data folder, so a second
``up`` reuses both. Every failure raises :class:`InfraError` with a sentence naming the fix.

Every node is secured (``pcvhub.infra.security``): clients authenticate with SCRAM over
TLS on the client port, nodes with certificates on the internal and controller ports,
and the KRaft ``StandardAuthorizer`` grants only what the topic table's ACLs say.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from pcvhub.config import ConfigError, Settings
from pcvhub.infra.security import (
    BROKER_PRINCIPAL,
    SCRAM_MECHANISM,
    BrokerSecurity,
    SecuritySetupError,
)
from pcvhub.topics import Principal

_MARKER = ".complete"
_MIN_JAVA = 17


class InfraError(RuntimeError):
    """Local infrastructure could not be installed or started; the message says what to do."""


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    broker_port: int
    controller_port: int
    internal_port: int
    pid: int | None
    alive: bool
    answering: bool
    log_file: Path


def _tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_is_kafka(pid: int) -> bool:
    """True if pid runs our broker; guards against a recycled pid after a reboot."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline


def java_executable() -> str:
    """Path of a Java >= 17, preferring $JAVA_HOME; raises InfraError naming the fix."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise InfraError(
            "Java is not installed (no `java` on PATH and no $JAVA_HOME): Kafka needs "
            f"Java {_MIN_JAVA} or newer; install it with `apt-get install openjdk-17-jre-headless`"
        )
    out = subprocess.run([candidate, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    if not match or int(match.group(1)) < _MIN_JAVA:
        raise InfraError(
            f"{candidate} is not Java {_MIN_JAVA}+ ({out.splitlines()[0] if out else 'silent'}); "
            "set JAVA_HOME to a Java 17 or newer"
        )
    return candidate


def install_kafka(settings: Settings) -> Path:
    """Resolve the broker jars with Maven into the cache; return the folder of jars."""
    libs = settings.cache_dir.resolve() / "kafka" / settings.kafka_version / "libs"
    if (libs / _MARKER).exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError(
            "Maven (`mvn`) is not installed: pcvhub fetches the Kafka broker jars from "
            "Maven Central with it; install it with `apt-get install maven`"
        )
    pom = resources.files("pcvhub.infra").joinpath("kafka-pom.xml")
    libs.mkdir(parents=True, exist_ok=True)
    with resources.as_file(pom) as pom_path:
        cmd = [
            mvn, "-B", "-q", "-f", str(pom_path),
            "dependency:copy-dependencies",
            f"-Dkafka.version={settings.kafka_version}",
            f"-DoutputDirectory={libs}",
            f"-Dmaven.repo.local={settings.cache_dir.resolve() / 'm2'}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise InfraError(
            f"Maven could not fetch org.apache.kafka:kafka_2.13:{settings.kafka_version}: is "
            "Maven Central reachable (proxy settings in ~/.m2/settings.xml) and does that "
            f"version exist?\n{tail}"
        )
    (libs / _MARKER).write_text(settings.kafka_version)
    return libs


_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.clients.name = org.apache.kafka
logger.clients.level = WARN
"""


class LocalKafka:
    """A single node or a cluster of combined broker+controller nodes on 127.0.0.1."""

    def __init__(self, settings: Settings, brokers: int = 1) -> None:
        if brokers not in (1, 3):
            raise InfraError(f"--brokers {brokers}: pcvhub runs 1 node or a 3-node cluster")
        self.settings = settings
        self.brokers = brokers
        self.name = "single" if brokers == 1 else f"cluster{brokers}"
        self.root = settings.data_dir.resolve() / "kafka" / self.name
        base = settings.kafka_base_port if brokers == 1 else settings.kafka_cluster_base_port
        # Each node takes three ports: client (SASL_SSL), controller (SSL), internal (SSL).
        self.ports = {i: (base + 3 * (i - 1), base + 3 * (i - 1) + 1, base + 3 * (i - 1) + 2)
                      for i in self.node_ids}
        self.security = BrokerSecurity(settings)

    # -- layout ---------------------------------------------------------------

    @property
    def node_ids(self) -> range:
        return range(1, self.brokers + 1)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[i][0]}" for i in self.node_ids)

    @property
    def internal_bootstrap(self) -> str:
        """The nodes' certificate-authenticated listener (replication, credentials)."""
        return ",".join(f"127.0.0.1:{self.ports[i][2]}" for i in self.node_ids)

    def client_settings(self, principal: str) -> Settings:
        """Settings of a client of this cluster acting as ``principal``."""
        return replace(self.settings, bootstrap_servers=self.bootstrap_servers,
                       principal=str(principal))

    def node_dir(self, node_id: int) -> Path:
        return self.root / f"node-{node_id}"

    def log_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "broker.log"

    def _pid_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "broker.pid"

    def pid(self, node_id: int) -> int | None:
        try:
            pid = int(self._pid_file(node_id).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_is_kafka(pid) else None

    def _properties(self, node_id: int) -> str:
        client_port, controller_port, internal_port = self.ports[node_id]
        voters = ",".join(f"{i}@127.0.0.1:{self.ports[i][1]}" for i in self.node_ids)
        replicas = min(3, self.brokers)
        min_isr = 2 if self.brokers >= 3 else 1
        sec = self.security
        # Listener-prefixed TLS settings: a node uses the same ones as a client of the
        # internal and controller listeners of the other nodes.
        tls = []
        for listener, client_auth in (("client", "none"), ("internal", "required"),
                                      ("controller", "required")):
            tls += [
                f"listener.name.{listener}.ssl.keystore.type=PEM",
                f"listener.name.{listener}.ssl.keystore.location={sec.keystore_path}",
                f"listener.name.{listener}.ssl.truststore.type=PEM",
                f"listener.name.{listener}.ssl.truststore.location={sec.ca_path}",
                f"listener.name.{listener}.ssl.client.auth={client_auth}",
            ]
        return "\n".join([
            "process.roles=broker,controller",
            f"node.id={node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=CLIENT://127.0.0.1:{client_port},"
            f"CONTROLLER://127.0.0.1:{controller_port},INTERNAL://127.0.0.1:{internal_port}",
            f"advertised.listeners=CLIENT://127.0.0.1:{client_port},"
            f"INTERNAL://127.0.0.1:{internal_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=INTERNAL",
            "listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SSL,INTERNAL:SSL",
            *tls,
            f"listener.name.client.sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"listener.name.client.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{Principal.ADMIN};User:{BROKER_PRINCIPAL}",
            # a certificate's principal is its CN (User:broker), not the whole DN
            "ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT",
            f"log.dirs={self.node_dir(node_id) / 'data'}",
            "num.partitions=3",
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={replicas}",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            "group.initial.rebalance.delay.ms=0",
            # Topics are declared from the topic table, never created by a typo.
            "auto.create.topics.enable=false",
            "log.retention.check.interval.ms=300000",
            "",
        ])

    # -- lifecycle ------------------------------------------------------------

    def _java_command(self, java: str, libs: Path, heap: str, main: str, *args: str) -> list[str]:
        log4j = self.root / "log4j2.properties"
        return [
            java,
            f"-Xms{heap}", f"-Xmx{heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.root}",
            "-cp", f"{libs}/*",
            main, *args,
        ]

    def _prepare(self, java: str, libs: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "log4j2.properties").write_text(_LOG4J2)
        id_file = self.root / "cluster.id"
        if not id_file.exists():
            # Kafka's Uuid text form: URL-safe base64 of 16 random bytes, no padding.
            id_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        cluster_id = id_file.read_text().strip()
        for node_id in self.node_ids:
            node = self.node_dir(node_id)
            node.mkdir(parents=True, exist_ok=True)
            props = node / "server.properties"
            props.write_text(self._properties(node_id))
            if (node / "data" / "meta.properties").exists():
                continue
            # A fresh folder gets every principal's SCRAM credential in its first metadata;
            # an existing one gets them through the internal listener once it runs (up).
            cmd = self._java_command(
                java, libs, "256m", "kafka.tools.StorageTool",
                # "=": a cluster id may begin with "-", which argparse would take for an option
                "format", f"--cluster-id={cluster_id}", "-c", str(props), "--ignore-formatted",
                *self.security.scram_format_arguments(),
            )
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise InfraError(
                    f"formatting storage of node {node_id} failed:\n{proc.stdout}{proc.stderr}"
                )

    def start_node(self, node_id: int, java: str | None = None, libs: Path | None = None) -> int:
        """Start one node in its own session so it outlives the CLI; return its pid."""
        existing = self.pid(node_id)
        if existing:
            return existing
        for port in self.ports[node_id]:
            if _port_in_use(port):
                raise InfraError(
                    f"port 127.0.0.1:{port} is taken by another process, so node {node_id} "
                    "cannot listen there; stop that process or choose other ports with "
                    "PCVHUB_KAFKA_BASE_PORT / PCVHUB_KAFKA_CLUSTER_BASE_PORT"
                )
        java = java or java_executable()
        libs = libs or install_kafka(self.settings)
        props = self.node_dir(node_id) / "server.properties"
        log = self.log_file(node_id).open("ab")
        proc = subprocess.Popen(
            self._java_command(java, libs, self.settings.kafka_heap, "kafka.Kafka", str(props)),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.node_dir(node_id), start_new_session=True,
        )
        log.close()
        # Until the child has exec'd Java its /proc cmdline is still ours, and pid() (which
        # checks for kafka.Kafka to ignore recycled pids) would call it dead: wait for exec.
        deadline = time.monotonic() + 10
        while not _pid_is_kafka(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self._pid_file(node_id).write_text(str(proc.pid))
        return proc.pid

    def up(self, timeout: float = 120.0) -> str:
        """Install if needed, format on first start, start every node, wait, declare topics."""
        java = java_executable()
        libs = install_kafka(self.settings)
        self.security.ensure()
        self._prepare(java, libs)
        for node_id in self.node_ids:
            self.start_node(node_id, java, libs)
        try:
            self.wait_ready(timeout)
        except InfraError:
            self.down()  # leave nothing half-started behind
            raise
        self.secure()
        return self.bootstrap_servers

    def secure(self) -> None:
        """Credentials, the topic table and its ACLs on a running cluster (idempotent)."""
        from pcvhub.infra.topics_admin import TopicSetupError, deploy

        try:
            self.security.ensure_credentials(self.internal_bootstrap)
            deploy(self.client_settings(Principal.ADMIN), self.brokers)
        except (SecuritySetupError, ConfigError, TopicSetupError) as exc:
            raise InfraError(f"the broker runs but could not be secured: {exc}") from exc

    def wait_ready(self, timeout: float = 120.0, brokers: int | None = None) -> None:
        """Block until `brokers` nodes answer metadata; raise with their log tails if not."""
        from confluent_kafka.admin import AdminClient

        want = self.brokers if brokers is None else brokers
        # the internal listener: it answers before any SCRAM credential exists
        admin = AdminClient(self.security.internal_client(self.internal_bootstrap))
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for node_id in self.node_ids:
                pid_file = self._pid_file(node_id)
                if pid_file.exists() and self.pid(node_id) is None and want == self.brokers:
                    raise InfraError(
                        f"Kafka node {node_id} exited during start-up; last lines of "
                        f"{self.log_file(node_id)}:\n{_tail(self.log_file(node_id))}"
                    )
            try:
                seen = len(admin.list_topics(timeout=2).brokers)
            except Exception:  # noqa: BLE001 - not answering yet is the normal case here
                seen = 0
            if seen >= want:
                return
            time.sleep(0.5)
        tails = "\n".join(
            f"--- {self.log_file(i)}\n{_tail(self.log_file(i))}" for i in self.node_ids
        )
        raise InfraError(
            f"Kafka did not come up within {timeout:.0f}s ({seen} of {want} brokers answer "
            f"metadata on {self.internal_bootstrap}); last lines of the broker logs:\n{tails}"
        )

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Send a signal to one node (tests use SIGKILL to simulate a crash)."""
        pid = self.pid(node_id)
        if pid:
            os.kill(pid, sig)

    def down(self, timeout: float = 30.0) -> list[int]:
        """Stop every node: SIGTERM all at once (controlled shutdown), SIGKILL stragglers."""
        pids = [p for p in (self.pid(i) for i in self.node_ids) if p]
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_pid_is_kafka(p) for p in pids):
            time.sleep(0.2)
        for pid in pids:
            if _pid_is_kafka(pid):
                os.kill(pid, signal.SIGKILL)
        for node_id in self.node_ids:
            self._pid_file(node_id).unlink(missing_ok=True)
        return pids

    def status(self) -> list[NodeStatus]:
        result = []
        for node_id in self.node_ids:
            pid = self.pid(node_id)
            broker_port, controller_port, internal_port = self.ports[node_id]
            result.append(NodeStatus(
                node_id=node_id, broker_port=broker_port, controller_port=controller_port,
                internal_port=internal_port,
                pid=pid, alive=pid is not None,
                answering=pid is not None and _port_in_use(broker_port),
                log_file=self.log_file(node_id),
            ))
        return result

    def is_up(self) -> bool:
        return all(s.answering for s in self.status())
