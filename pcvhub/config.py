"""Configuration: where Kafka is, how to reach it securely, where data and caches live.

Ground floor: imports nothing of ours. Every process (CLI, workers, tests) builds one
``Settings`` with :func:`load_settings`, which reads, lowest priority first:

1. built-in defaults (a local single-node broker on 127.0.0.1:19092, reached on its
   SASL_SSL listener with the credentials ``pcvhub infra up`` wrote);
2. a TOML file: ``$PCVHUB_CONFIG`` if set, else ``./pcvhub.toml`` if present;
3. environment variables ``PCVHUB_*`` (see :data:`ENVIRONMENT`).

The same code then runs against any Kafka cluster: security settings are passed through
to librdkafka (confluent-kafka) and to aiokafka (Faust) in their own vocabularies.

**Principals.** Every process talks to Kafka as one principal, the one for its kind
(``Settings.as_principal``; the names are in ``pcvhub.topics.Principal``). With no
``PCVHUB_KAFKA_SECURITY_PROTOCOL`` set, the client settings are those of the local broker:
SASL_SSL, SCRAM-SHA-512, that principal's password and the broker's CA, read from the
credentials folder (``<data_dir>/kafka/security``, ``PCVHUB_KAFKA_CREDENTIALS_DIR``).
Set the ``PCVHUB_KAFKA_*`` security variables instead to use any other secured cluster;
each process is then given its own credentials by its environment.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the setting."""


@dataclass(frozen=True)
class KafkaSecurity:
    """TLS/SASL settings of a client, in the operator's words (PCVHUB_KAFKA_*)."""

    protocol: str = "SASL_SSL"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything a pcvhub process needs to know about its surroundings."""

    bootstrap_servers: str = "127.0.0.1:19092"
    #: the operator's security settings; None: the local broker's (``credentials_dir``)
    security: KafkaSecurity | None = None
    #: the Kafka principal this process acts as (``as_principal``)
    principal: str | None = None
    #: where ``pcvhub infra up`` keeps the local broker's CA and each principal's password;
    #: None: ``<data_dir>/kafka/security``
    credentials_dir: Path | None = None
    data_dir: Path = Path(".pcvhub")
    cache_dir: Path = Path(".cache")
    kafka_version: str = "4.3.1"
    kafka_heap: str = "512m"
    kafka_base_port: int = 19092
    kafka_cluster_base_port: int = 29092
    topic_prefix: str = "pcvhub"
    #: what the gatekeeper's timer sweep reads as "now": ``wall`` (production) or
    #: ``simulation`` (``<data_dir>/simulation-clock``, moved by the demo and tests)
    timer_clock: str = "wall"
    #: seconds between two sweeps of every open therapy for due deadlines
    timer_sweep_seconds: float = 10.0
    #: what R1 holds signed times against (``pcvhub.streams.timebounds``): ``production``
    #: or ``simulation`` (the demo and tests, which back-date on a simulated clock)
    time_bounds: str = "production"
    #: processes the gatekeeper and the projection runner check a batch's signatures in,
    #: ahead of judging it in order (``pcvhub.trust.checks``); 0: every check inline (the
    #: default: on two cores, shared with the broker, the pool cost more than it moved)
    verify_workers: int = 0
    #: how soon after a JUST_IN_TIME placement the administration it is delivered for
    #: must be scheduled at the site (R6), in hours
    just_in_time_window_hours: float = 72.0

    # -- who this process is to Kafka ---------------------------------------------------

    def as_principal(self, principal: str) -> Settings:
        """These settings for a process of one kind (``pcvhub.topics.Principal``)."""
        return replace(self, principal=str(principal))

    @property
    def kafka_credentials(self) -> Path:
        return (self.credentials_dir if self.credentials_dir is not None
                else self.data_dir / "kafka" / "security")

    def client_security(self) -> KafkaSecurity:
        """The operator's settings if given, else the local broker's for ``principal``."""
        if self.security is not None:
            return self.security
        if self.principal is None:
            raise ConfigError(
                "no Kafka principal chosen: a pcvhub process names the kind it is with "
                "Settings.as_principal(...) before it talks to the local broker"
            )
        folder = self.kafka_credentials.resolve()
        secret = folder / "principals" / f"{self.principal}.json"
        try:
            password = json.loads(secret.read_text())["password"]
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"no credentials for Kafka principal {self.principal!r} in {secret} ({exc}): "
                "run `pcvhub infra up`, which creates them, or set "
                "PCVHUB_KAFKA_CREDENTIALS_DIR to the folder it wrote"
            ) from exc
        return KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                             sasl_username=self.principal, sasl_password=password,
                             ssl_cafile=str(folder / "ca.pem"))

    def librdkafka(self, **extra: Any) -> dict[str, Any]:
        """Client settings for confluent-kafka (librdkafka property names)."""
        sec = self.client_security()
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": sec.protocol,
        }
        optional = {
            "sasl.mechanism": sec.sasl_mechanism,
            "sasl.username": sec.sasl_username,
            "sasl.password": sec.sasl_password,
            "ssl.ca.location": sec.ssl_cafile,
            "ssl.certificate.location": sec.ssl_certfile,
            "ssl.key.location": sec.ssl_keyfile,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update(extra)
        return conf

    def producer(self, **extra: Any) -> dict[str, Any]:
        """Producer settings: Java's murmur2 partitioner so that confluent-kafka, aiokafka
        and Java clients put a CoI key in the same partition; acks from all in-sync replicas."""
        return self.librdkafka(**{
            "partitioner": "murmur2_random",
            "acks": "all",
            "enable.idempotence": True,
            **extra,
        })

    def faust_broker(self) -> str:
        """Faust broker URL list (``kafka://host:port;host:port``)."""
        return ";".join(f"kafka://{hp.strip()}" for hp in self.bootstrap_servers.split(","))

    def faust_security(self) -> Any:
        """Faust credentials object, or None for PLAINTEXT."""
        sec = self.client_security()
        if sec.protocol == "PLAINTEXT":
            return None
        import ssl

        import faust

        context = None
        if sec.protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=sec.ssl_cafile)
            if sec.ssl_certfile:
                context.load_cert_chain(sec.ssl_certfile, sec.ssl_keyfile)
        if sec.protocol == "SSL":
            return faust.SSLCredentials(context)
        # SASL_SSL or SASL_PLAINTEXT: Faust picks the protocol from the context's presence
        return faust.SASLCredentials(
            username=sec.sasl_username, password=sec.sasl_password, ssl_context=context,
            mechanism=sec.sasl_mechanism or "PLAIN",
        )


#: Environment variable -> (section, key) in the TOML file.
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "PCVHUB_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "PCVHUB_KAFKA_SECURITY_PROTOCOL": ("kafka", "security_protocol"),
    "PCVHUB_KAFKA_SASL_MECHANISM": ("kafka", "sasl_mechanism"),
    "PCVHUB_KAFKA_SASL_USERNAME": ("kafka", "sasl_username"),
    "PCVHUB_KAFKA_SASL_PASSWORD": ("kafka", "sasl_password"),
    "PCVHUB_KAFKA_SSL_CAFILE": ("kafka", "ssl_cafile"),
    "PCVHUB_KAFKA_SSL_CERTFILE": ("kafka", "ssl_certfile"),
    "PCVHUB_KAFKA_SSL_KEYFILE": ("kafka", "ssl_keyfile"),
    "PCVHUB_KAFKA_CREDENTIALS_DIR": ("local_kafka", "credentials_dir"),
    "PCVHUB_DATA_DIR": ("paths", "data_dir"),
    "PCVHUB_CACHE_DIR": ("paths", "cache_dir"),
    "PCVHUB_KAFKA_VERSION": ("local_kafka", "version"),
    "PCVHUB_KAFKA_HEAP": ("local_kafka", "heap"),
    "PCVHUB_KAFKA_BASE_PORT": ("local_kafka", "base_port"),
    "PCVHUB_KAFKA_CLUSTER_BASE_PORT": ("local_kafka", "cluster_base_port"),
    "PCVHUB_TOPIC_PREFIX": ("topics", "prefix"),
    "PCVHUB_TIMER_CLOCK": ("timers", "clock"),
    "PCVHUB_TIMER_SWEEP_SECONDS": ("timers", "sweep_seconds"),
    "PCVHUB_TIME_BOUNDS": ("gatekeeper", "time_bounds"),
    "PCVHUB_VERIFY_WORKERS": ("gatekeeper", "verify_workers"),
    "PCVHUB_JUST_IN_TIME_WINDOW_HOURS": ("gatekeeper", "just_in_time_window_hours"),
}

TIMER_CLOCKS = ("wall", "simulation")
#: the profiles of ``pcvhub.streams.timebounds.TIME_BOUNDS`` (named here: config imports
#: nothing of the gatekeeper)
TIME_BOUND_PROFILES = ("production", "simulation")

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build the settings from defaults, the TOML file and ``PCVHUB_*`` variables."""
    env = dict(os.environ if environ is None else environ)
    config_path = env.get("PCVHUB_CONFIG")
    table: dict[str, dict[str, Any]] = {}
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigError(f"PCVHUB_CONFIG names {path}, which is not a file")
        table = _read_toml(path)
    elif Path("pcvhub.toml").is_file():
        table = _read_toml(Path("pcvhub.toml"))
    for var, (section, key) in ENVIRONMENT.items():
        if var in env and env[var] != "":
            table.setdefault(section, {})[key] = env[var]

    kafka = table.get("kafka", {})
    paths = table.get("paths", {})
    local = table.get("local_kafka", {})
    topics = table.get("topics", {})
    timers = table.get("timers", {})
    clock = str(timers.get("clock", "wall")).lower()
    if clock not in TIMER_CLOCKS:
        raise ConfigError(f"timers.clock (PCVHUB_TIMER_CLOCK) is {clock!r}; use one of "
                          f"{', '.join(TIMER_CLOCKS)}")
    bounds = str(table.get("gatekeeper", {}).get("time_bounds", "production")).lower()
    if bounds not in TIME_BOUND_PROFILES:
        raise ConfigError(f"gatekeeper.time_bounds (PCVHUB_TIME_BOUNDS) is {bounds!r}; use "
                          f"one of {', '.join(TIME_BOUND_PROFILES)}")
    workers = table.get("gatekeeper", {}).get("verify_workers")
    try:
        verify_workers = Settings.verify_workers if workers is None else int(workers)
    except ValueError:
        raise ConfigError(f"gatekeeper.verify_workers (PCVHUB_VERIFY_WORKERS) is {workers!r}; "
                          "give a number of processes (0: check signatures inline)") from None
    if verify_workers < 0:
        raise ConfigError(f"gatekeeper.verify_workers (PCVHUB_VERIFY_WORKERS) is "
                          f"{verify_workers}; give 0 or more processes")
    window = table.get("gatekeeper", {}).get("just_in_time_window_hours")
    try:
        jit_hours = Settings.just_in_time_window_hours if window is None else float(window)
    except ValueError:
        jit_hours = float("nan")
    if not jit_hours > 0 or jit_hours == float("inf"):
        raise ConfigError(f"gatekeeper.just_in_time_window_hours "
                          f"(PCVHUB_JUST_IN_TIME_WINDOW_HOURS) is {window!r}; give the hours "
                          "within which a just-in-time placement's administration must be "
                          "scheduled, a number above 0 (default 72)")
    security = None  # the local broker's, unless the operator gives security settings
    named = {f.name for f in fields(KafkaSecurity)} - {"protocol"}
    if "security_protocol" in kafka or named & set(kafka):
        protocol = str(kafka.get("security_protocol", "SASL_SSL")).upper()
        if protocol not in _SECURITY_PROTOCOLS:
            raise ConfigError(
                f"kafka.security_protocol (PCVHUB_KAFKA_SECURITY_PROTOCOL) is {protocol!r}; "
                f"use one of {', '.join(_SECURITY_PROTOCOLS)}"
            )
        security = KafkaSecurity(
            protocol=protocol,
            **{
                f.name: kafka.get(f.name)
                for f in fields(KafkaSecurity)
                if f.name != "protocol" and kafka.get(f.name) is not None
            },
        )
    base = Settings()
    data_dir = Path(paths.get("data_dir", base.data_dir)).expanduser()
    # Absolute, so that a process or sandbox with a data folder of its own still finds
    # the broker's credentials.
    credentials = Path(local.get("credentials_dir", data_dir / "kafka" / "security")
                       ).expanduser().resolve()
    try:
        return replace(
            base,
            bootstrap_servers=str(kafka.get("bootstrap_servers", base.bootstrap_servers)),
            security=security,
            credentials_dir=credentials,
            data_dir=data_dir,
            cache_dir=Path(paths.get("cache_dir", base.cache_dir)).expanduser(),
            kafka_version=str(local.get("version", base.kafka_version)),
            kafka_heap=str(local.get("heap", base.kafka_heap)),
            kafka_base_port=int(local.get("base_port", base.kafka_base_port)),
            kafka_cluster_base_port=int(
                local.get("cluster_base_port", base.kafka_cluster_base_port)
            ),
            topic_prefix=str(topics.get("prefix", base.topic_prefix)),
            timer_clock=clock,
            time_bounds=bounds,
            verify_workers=verify_workers,
            just_in_time_window_hours=jit_hours,
            timer_sweep_seconds=float(timers.get("sweep_seconds", base.timer_sweep_seconds)),
        )
    except ValueError as exc:
        raise ConfigError(f"a port setting is not an integer, or the timer sweep interval "
                          f"not a number: {exc}") from exc
