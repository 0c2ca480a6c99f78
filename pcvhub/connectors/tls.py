"""TLS and certificates of the connector endpoints: the deployment's own CA (:class:`LocalCA`)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from pcvhub.config import Settings
from pcvhub.trust.keys import passphrase_from_env, write_secret
from pcvhub.trust.signing import EventSigner

__all__ = ["TLS_DIR", "LocalCA", "private_key_pem"]

log = logging.getLogger(__name__)

TLS_DIR = "tls"


class LocalCA:
    """The deployment's certificate authority for connector endpoints (``<data_dir>/tls``).

    It signs the listeners' server certificates and the callers' client certificates.
    A client certificate is issued over the caller's *registered* Ed25519 public key with
    the actor id as common name, so the TLS handshake proves possession of the very key
    the log registered; :class:`~pcvhub.connectors.callers.CallerCheck` then checks that
    key against the registry. The CA's private key is encrypted (PKCS#8) with the
    key-store passphrase.
    """

    def __init__(self, root: Path, passphrase: bytes) -> None:
        self.root = Path(root)
        self._passphrase = passphrase
        self.cert_path = self.root / "ca.pem"
        self._key_path = self.root / "ca-key.pem"
        if not self.cert_path.exists():
            self._create()
        self._key = serialization.load_pem_private_key(self._key_path.read_bytes(),
                                                       self._passphrase)
        self.certificate = x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    @classmethod
    def open(cls, settings: Settings, passphrase: bytes | None = None) -> LocalCA:
        return cls(settings.data_dir / TLS_DIR, passphrase or passphrase_from_env())

    def _create(self) -> None:
        key = ed25519.Ed25519PrivateKey.generate()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pcvhub"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "pcvhub connector CA")])
        cert = (_builder(name, name, key.public_key(), days=3650)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                             False, False), critical=True)
                .sign(key, None))
        self.root.mkdir(parents=True, exist_ok=True)
        write_secret(self._key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase)))
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        log.warning("created the connector CA %s", self.cert_path)

    def server_files(self, hosts: Sequence[str] = ("127.0.0.1", "localhost")
                     ) -> tuple[Path, Path]:
        """(certificate, encrypted key) of the listeners; issued once, valid one year."""
        cert_path, key_path = self.root / "server.pem", self.root / "server-key.pem"
        if not cert_path.exists():
            key = ed25519.Ed25519PrivateKey.generate()
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
            cert = (_builder(subject, self.certificate.subject, key.public_key(), days=365)
                    .add_extension(x509.SubjectAlternativeName(names), critical=False)
                    .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]),
                                   critical=False)
                    .sign(self._key, None))
            write_secret(key_path, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(self._passphrase)))
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    def issue_client_certificate(self, actor_id: str, ed25519_public: bytes,
                                 days: int = 365) -> bytes:
        """PEM client certificate for a caller's registered Ed25519 public key."""
        public = ed25519.Ed25519PublicKey.from_public_bytes(ed25519_public)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, actor_id)])
        cert = (_builder(subject, self.certificate.subject, public, days=days)
                .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(self._key, None))
        return cert.public_bytes(serialization.Encoding.PEM)

    def server_context(self, require_client_certificate: bool) -> Any:
        """A TLS 1.2+ server context; with client certificates required for MLLP."""
        import ssl

        cert, key = self.server_files()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key, password=self._passphrase)
        if require_client_certificate:
            context.load_verify_locations(self.cert_path)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    @property
    def passphrase(self) -> bytes:
        return self._passphrase


def _builder(subject: x509.Name, issuer: x509.Name, public: Any, days: int
             ) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


def private_key_pem(signer: EventSigner) -> bytes:
    """The caller's Ed25519 key as unencrypted PKCS#8 PEM, for a TLS client's key file."""
    return signer.keys.ed25519.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
