"""Who may talk to the local broker: its CA and certificate, SCRAM principals and ACLs.

The local broker (single node or cluster, :class:`pcvhub.infra.kafka.LocalKafka`) has
three listeners per node:

* ``CLIENT`` (SASL_SSL, SCRAM-SHA-512): every pcvhub process, as its own principal;
* ``INTERNAL`` (SSL, client certificate required): replication between nodes, and the
  operator's path to a running broker that needs no SCRAM credential, which is how
  credentials reach an already-formatted data folder;
* ``CONTROLLER`` (SSL, client certificate required): the KRaft quorum. SCRAM cannot
  authenticate controllers (the credentials live in the metadata they serve).

The KRaft ``StandardAuthorizer`` refuses everything not granted. The grants are
``pcvhub.topics.acl_table``, derived from the topic table; ``admin`` and the nodes'
certificate identity ``broker`` are super users.

Everything lives in the credentials folder (``Settings.kafka_credentials``): ``ca.pem``
(and its key), the nodes' key store ``broker.pem``, and ``principals/<name>.json`` with
each principal's password (mode 0600). :meth:`BrokerSecurity.ensure` creates what is
missing and never replaces what exists, so a second ``up`` changes nothing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pcvhub.config import Settings
from pcvhub.topics import Grant, Principal, acl_table, principals
from pcvhub.trust.keys import write_secret

SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
#: the identity of the nodes' certificate (CN), a super user like the admin
BROKER_PRINCIPAL = "broker"
HOSTS = ("127.0.0.1", "localhost")


class SecuritySetupError(RuntimeError):
    """Credentials or ACLs could not be applied; the message names what and why."""


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class PrincipalSecret:
    name: str
    password: str


class BrokerSecurity:
    """The credentials folder of the local broker (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.kafka_credentials.resolve()
        self.ca_path = self.root / "ca.pem"
        self._ca_key_path = self.root / "ca-key.pem"
        #: key store of the nodes (Kafka's PEM key store: key, then certificate)
        self.keystore_path = self.root / "broker.pem"
        self.broker_cert_path = self.root / "broker-cert.pem"
        self.broker_key_path = self.root / "broker-key.pem"
        self.principals_dir = self.root / "principals"

    # -- files ------------------------------------------------------------------------

    def ensure(self) -> list[str]:
        """Create the CA, the nodes' certificate and every principal's password if
        missing; return what was created (empty on a second run)."""
        created = []
        if not self.ca_path.exists():
            self._create_ca()
            created.append(str(self.ca_path))
        if not self.keystore_path.exists():
            self._issue_broker_certificate()
            created.append(str(self.keystore_path))
        for name in principals():
            path = self.principals_dir / f"{name}.json"
            if not path.exists():
                # 32 random bytes as URL-safe text: SCRAM passwords travel in JAAS strings
                write_secret(path, json.dumps({
                    "username": name, "password": secrets.token_urlsafe(32)}).encode())
                created.append(str(path))
        return created

    def secrets(self) -> list[PrincipalSecret]:
        out = []
        for name in principals():
            data = json.loads((self.principals_dir / f"{name}.json").read_text())
            out.append(PrincipalSecret(name, data["password"]))
        return out

    def _create_ca(self) -> None:
        # ECDSA P-256: Kafka's PEM key store reads RSA, DSA and EC keys (not Ed25519).
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pcvhub"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "pcvhub broker CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                             False, False), critical=True)
                .sign(key, hashes.SHA256()))
        write_secret(self._ca_key_path, _pkcs8(key))
        self.ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _issue_broker_certificate(self) -> None:
        ca_key = serialization.load_pem_private_key(self._ca_key_path.read_bytes(), None)
        ca = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = []
        for host in HOSTS:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                            BROKER_PRINCIPAL)]))
                .issuer_name(ca.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=825))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                # the nodes are servers to clients and clients of each other
                .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                      x509.ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        write_secret(self.broker_key_path, _pkcs8(key))
        self.broker_cert_path.write_bytes(pem)
        write_secret(self.keystore_path, _pkcs8(key) + pem)

    # -- broker side ------------------------------------------------------------------

    def scram_format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that put every principal's SCRAM credential
        into a fresh data folder's first metadata."""
        args = []
        for secret in self.secrets():
            args += ["--add-scram",
                     f"{SCRAM_MECHANISM}=[name={secret.name},password={secret.password},"
                     f"iterations={SCRAM_ITERATIONS}]"]
        return args

    def internal_client(self, bootstrap_servers: str) -> dict[str, Any]:
        """librdkafka settings for the nodes' own identity on the INTERNAL listener."""
        return {
            "bootstrap.servers": bootstrap_servers,
            "security.protocol": "SSL",
            "ssl.ca.location": str(self.ca_path),
            "ssl.certificate.location": str(self.broker_cert_path),
            "ssl.key.location": str(self.broker_key_path),
            "log_level": 0,
        }

    def ensure_credentials(self, internal_bootstrap: str) -> None:
        """Upsert every principal's SCRAM credential through the INTERNAL listener.

        Idempotent (same password, new salt), and it is what makes an already-formatted
        data folder, or a principal added to the topic table later, usable."""
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        admin = AdminClient(self.internal_client(internal_bootstrap))
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        upserts = [UserScramCredentialUpsertion(s.name, info, s.password.encode())
                   for s in self.secrets()]
        for user, future in admin.alter_user_scram_credentials(upserts).items():
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - re-raised as a sentence
                raise SecuritySetupError(
                    f"could not set the SCRAM credential of principal {user!r} through "
                    f"{internal_bootstrap}: {exc}") from exc


def acl_bindings(grants: Iterable[Grant]) -> list[Any]:
    """The confluent-kafka ``AclBinding`` of each grant (ALLOW, from any host)."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return [AclBinding(ResourceType[g.resource.upper()], g.name,
                       ResourcePatternType[g.pattern.upper()], f"User:{g.principal}", "*",
                       AclOperation[g.operation], AclPermissionType.ALLOW)
            for g in grants]


def ensure_acls(settings: Settings, prefix: str | None = None) -> int:
    """Create the ACL table of one deployment (its topic prefix) as the admin; creating
    a binding that exists is a no-op on the broker. Returns the number of bindings."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    admin = AdminClient(settings.as_principal(Principal.ADMIN).librdkafka(log_level=0))
    bindings = acl_bindings(acl_table(prefix or settings.topic_prefix))
    for binding, future in admin.create_acls(bindings, request_timeout=30).items():
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - re-raised as a sentence
            raise SecuritySetupError(f"could not create ACL {binding}: {exc}") from exc
    # The controller has committed them; the brokers' authorizers apply them from the
    # metadata log a moment later. Return only once a broker describes every one, so a
    # client started next is not refused what was just granted.
    wanted = {str(b) for b in bindings}
    deadline = time.monotonic() + 30
    while True:
        everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None,
                                      None, AclOperation.ANY, AclPermissionType.ANY)
        present = {str(b) for b in admin.describe_acls(everything, request_timeout=30).result()}
        if wanted <= present:
            return len(bindings)
        if time.monotonic() > deadline:
            raise SecuritySetupError(f"{len(wanted - present)} ACL(s) created but not in force "
                                     f"after 30 s, e.g. {sorted(wanted - present)[0]}")
        time.sleep(0.1)


def delete_acls(settings: Settings, prefix: str) -> None:
    """Remove the ACLs of a deployment whose topics are gone (the demo's previous run)."""
    from confluent_kafka.admin import AclBindingFilter, AdminClient

    admin = AdminClient(settings.as_principal(Principal.ADMIN).librdkafka(log_level=0))
    filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal,
                                b.host, b.operation, b.permission_type)
               for b in acl_bindings(acl_table(prefix))]
    for future in admin.delete_acls(filters, request_timeout=30).values():
        future.result()
