"""TLS 1.3 with the hybrid post-quantum key exchange X25519MLKEM768, for the vault's sites.

Python's ``ssl`` module is bound to the system OpenSSL (3.0 here), which has no ML-KEM; the
OpenSSL that ``cryptography`` bundles (4.x) offers X25519MLKEM768 first by default. pyOpenSSL
drives that bundled library, so a site and its clients speak TLS through pyOpenSSL. Its
binding exposes no ``SSL_CTX_set1_groups_list``: both ends therefore check the group that
was negotiated (``SSL_get0_group_name``) right after the handshake and close the connection
unless it is X25519MLKEM768 (fail closed: a downgrade to classical X25519 is refused).

A site's TLS certificate is self-signed (ECDSA P-256) and pinned: clients compare the SHA-256
of the certificate the site presents with the fingerprint in the site's registration, so no
certificate authority is involved.

Two adapters let the standard library's HTTP server and client run over a pyOpenSSL
connection: :class:`TlsSocket` gives the socket methods ``http.server`` and ``http.client``
call (``makefile``, ``sendall``, ``shutdown``, ``close``).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import ipaddress
import socket
import struct
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

#: the only key-exchange group a vault connection accepts
PQ_GROUP = "X25519MLKEM768"


class NotPostQuantum(ConnectionError):
    """The TLS handshake settled on a group other than X25519MLKEM768: connection closed."""


class CertificateNotPinned(ConnectionError):
    """The peer's certificate is not the one registered for it: connection closed."""


def make_certificate(common_name: str) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex (what a pin names)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _context() -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)  # hybrid groups are TLS 1.3 only
    return context


def server_context(cert_file: Path, key_file: Path) -> SSL.Context:
    context = _context()
    context.use_certificate_file(str(cert_file))
    context.use_privatekey_file(str(key_file))
    context.check_privatekey()
    return context


def client_context() -> SSL.Context:
    # the peer is authenticated by its pinned fingerprint (checked after the handshake)
    return _context()


def negotiated_group(connection: SSL.Connection) -> str | None:
    return connection.get_group_name()


def require_post_quantum(connection: SSL.Connection, peer: str) -> str:
    """The negotiated group, or :class:`NotPostQuantum` naming the peer and the group."""
    group = negotiated_group(connection)
    if group != PQ_GROUP:
        raise NotPostQuantum(f"TLS with {peer} negotiated {group or 'no group'}, not "
                             f"{PQ_GROUP}: refused (a classical key exchange can be recorded "
                             f"now and broken later)")
    return group


def connect(host: str, port: int, pin: str, timeout: float = 30.0) -> TlsSocket:
    """A TLS connection to ``host:port`` whose certificate has SHA-256 fingerprint ``pin``
    and whose key exchange is X25519MLKEM768; otherwise the named error, nothing sent."""
    raw = socket.create_connection((host, port), timeout=timeout)
    set_timeout(raw, timeout)
    connection = SSL.Connection(client_context(), raw)
    connection.set_connect_state()
    connection.set_tlsext_host_name(host.encode())
    try:
        connection.do_handshake()
        peer = f"{host}:{port}"
        require_post_quantum(connection, peer)
        cert = connection.get_peer_certificate()
        if cert is None:
            raise CertificateNotPinned(f"{peer} presented no certificate")
        got = hashlib.sha256(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)).hexdigest()
        if got != pin:
            raise CertificateNotPinned(f"{peer} presented certificate {got[:16]}…, registered "
                                       f"is {pin[:16]}…: not the registered site")
    except BaseException:
        raw.close()
        raise
    return TlsSocket(connection)


def set_timeout(sock: socket.socket, timeout: float | None) -> None:
    """A blocking socket whose reads and writes give up after ``timeout`` seconds.

    pyOpenSSL cannot drive a socket in Python's timeout mode (it is non-blocking inside and
    every read would raise ``WantReadError``), so the timeout is the kernel's instead."""
    sock.settimeout(None)
    seconds = 0.0 if timeout is None else timeout
    value = struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


class _TlsStream(io.RawIOBase):
    """A pyOpenSSL connection as a raw stream (what ``socket.makefile`` would return)."""

    def __init__(self, connection: SSL.Connection) -> None:
        self._connection = connection

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            return int(self._connection.recv_into(buffer))
        except SSL.ZeroReturnError:  # the peer closed TLS cleanly
            return 0
        except SSL.WantReadError as exc:  # SO_RCVTIMEO ran out
            raise TimeoutError("TLS read timed out") from exc
        except SSL.SysCallError as exc:  # the peer closed TCP without close_notify
            if exc.args and exc.args[0] in (-1, 0):
                return 0
            raise

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        _send_all(self._connection, data)
        return len(data)


def _send_all(connection: SSL.Connection, data: bytes | bytearray | memoryview) -> None:
    try:
        connection.sendall(bytes(data))
    except SSL.WantWriteError as exc:  # SO_SNDTIMEO ran out
        raise TimeoutError("TLS write timed out") from exc


class TlsSocket:
    """The socket methods ``http.server``'s handlers and ``http.client`` use, over TLS."""

    def __init__(self, connection: SSL.Connection) -> None:
        self.connection = connection

    @property
    def group(self) -> str | None:
        return negotiated_group(self.connection)

    def makefile(self, mode: str = "rb", buffering: int = -1) -> io.BufferedIOBase:
        stream = _TlsStream(self.connection)
        size = buffering if buffering > 0 else io.DEFAULT_BUFFER_SIZE
        if "w" in mode:
            return io.BufferedWriter(stream, size)  # type: ignore[type-var]
        return io.BufferedReader(stream, size)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        _send_all(self.connection, data)

    def settimeout(self, timeout: float | None) -> None:
        # Connection passes socket methods through to its socket
        set_timeout(self.connection, timeout)  # type: ignore[arg-type]

    def setsockopt(self, *args: object) -> None:
        self.connection.setsockopt(*args)

    def getpeername(self) -> object:
        return self.connection.getpeername()

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        try:
            self.connection.shutdown()
        except SSL.Error:
            pass

    def close(self) -> None:
        try:
            self.connection.sock_shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()
