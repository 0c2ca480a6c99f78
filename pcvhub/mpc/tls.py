"""TLS certificates of one study run's parties, in the files MPyC's ``--ssl`` reads.

Each run gets a throwaway certificate authority: it signs one certificate per party and
its private key is then dropped, never written, so nobody can add a party to that run
later. MPyC reads ``.config/party_<i>.crt``, ``.config/party_<i>.key`` and
``.config/mpyc_ca.crt`` from the party's working directory and checks a peer's server name
against ``MPyC party <i>``; every connection is mutually authenticated TLS 1.3.

The connector CA (:class:`pcvhub.connectors.tls.LocalCA`) is a different thing: a
long-lived deployment CA issuing endpoint certificates over registered actor keys, with
its key kept encrypted. A party's key must be readable by MPyC without a passphrase and
must be worth nothing after the run, hence a CA of its own here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONFIG_DIR = ".config"  # fixed by MPyC, relative to the party's working directory


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pcvhub study run"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def issue_party_certificates(root: Path, parties: int, days: int = 2) -> list[Path]:
    """Write a directory per party under ``root``; return them (party i's is ``[i]``).

    ECDSA P-256 keys: every TLS 1.3 stack MPyC may meet accepts them.
    """
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("pcvhub study-run CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    directories = []
    for index in range(parties):
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"MPyC party {index}"  # the server name MPyC checks
        cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        config = Path(root) / f"party-{index}" / CONFIG_DIR
        config.mkdir(parents=True, exist_ok=True)
        key_path = config / f"party_{index}.key"
        key_path.touch(mode=0o600)
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        (config / f"party_{index}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (config / "mpyc_ca.crt").write_bytes(ca_pem)
        directories.append(config.parent)
    return directories


def check_party_directory(directory: Path, index: int) -> None:
    """Fail with the missing file's name before MPyC would fail with a bare OSError."""
    for name in (f"party_{index}.crt", f"party_{index}.key", "mpyc_ca.crt"):
        path = Path(directory) / CONFIG_DIR / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: party {index} needs its certificate, "
                                    "key and the run's CA in <tls-dir>/.config "
                                    "(`pcvhub mpc certs` makes them)")

