"""One storage site of the vault: a folder of sealed shares behind its own HTTPS port.

A site is created once (:func:`create_site`): its folder gets a sealing key pair (HPKE X-Wing,
:class:`~pcvhub.vault.sealing.SiteKeyPair`) and a TLS certificate, both private parts in
``key/`` (mode 0600), and a public registration ``site.json`` (site id, operator, capacity,
sealing key, certificate pin), which the vault's share control reads to place shares.
``pcvhub vault site FOLDER`` then serves it (:func:`serve_site`) on loopback, TLS 1.3 with
X25519MLKEM768 only (:mod:`~pcvhub.vault.pqtls`).

What a site keeps and what it never sees:

- shares only, each sealed to its own key (one share index of each chunk: k - 1 reveal
  nothing, and it never receives a whole file); ``shares/`` without ``key/`` opens nothing;
- a put arrives in ``staging/<object>`` and only a commit (the last step of a put, after
  every site acknowledged every share) moves it to ``objects/<object>``; an object that was
  never committed is not served, so a put that fails leaves nothing a restore could find;
- on a restore the site opens its share with its key and seals it again to the one-time key
  the restorer sent (the share is never on the wire in the clear, TLS aside), and logs which
  consent token the restorer named.

HTTP interface (all bodies binary or JSON): ``GET /health``; ``PUT /staging/O/S/C`` (the sealed
share S of chunk C of object O); ``POST /commit/O`` (body: the manifest); ``DELETE /staging/O``;
``GET /objects/O/S/C`` with headers ``X-Restore-Key`` (hex X-Wing public key) and
``X-Consent-Token`` (the token's nonce, hex); ``DELETE /objects/O`` (after re-placement).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from OpenSSL import SSL

from pcvhub.trust.keys import write_secret
from pcvhub.vault.pqtls import (
    NotPostQuantum,
    TlsSocket,
    fingerprint,
    make_certificate,
    require_post_quantum,
    server_context,
)
from pcvhub.vault.sealing import SiteKeyPair, SitePublicKey, open_sealed, seal, share_context

REGISTRATION = "site.json"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class SiteFolderError(RuntimeError):
    """A site folder is missing, incomplete or not a site's."""


@dataclass(frozen=True)
class SiteRegistration:
    """A site's public facts: what share control and clients need, nothing secret."""

    site_id: str
    operator: str  # who runs the servers: no operator may hold k shares of a chunk
    capacity_bytes: int
    sealing_key: str  # hex ML-KEM-768 key || X25519 key
    tls_pin: str  # SHA-256 of the site's TLS certificate (DER), hex
    host: str = "127.0.0.1"
    port: int = 0  # 0 until the site serves; the serving process writes the bound port

    @property
    def public_key(self) -> SitePublicKey:
        raw = bytes.fromhex(self.sealing_key)
        return SitePublicKey(raw[:-32], raw[-32:])

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @classmethod
    def load(cls, folder: Path) -> SiteRegistration:
        path = folder / REGISTRATION
        if not path.exists():
            raise SiteFolderError(f"{folder} is not a vault site: no {REGISTRATION} (create one "
                                  f"with `pcvhub vault site {folder} --create --site-id ID`)")
        return cls.load_file(path)

    @classmethod
    def load_file(cls, path: Path) -> SiteRegistration:
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise SiteFolderError(f"{path}: not a site registration ({exc})") from exc

    def save(self, folder: Path) -> None:
        self.save_as(folder / REGISTRATION)

    def save_as(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)


def create_site(folder: Path, site_id: str, operator: str,
                capacity_bytes: int = 1 << 40) -> SiteRegistration:
    """Make ``folder`` a site: key pair and certificate in ``key/``, registration beside."""
    if not _NAME.match(site_id):
        raise SiteFolderError(f"site id {site_id!r}: use letters, digits, '.', '_', '-'")
    if (folder / REGISTRATION).exists():
        raise SiteFolderError(f"{folder} is already site "
                              f"{SiteRegistration.load(folder).site_id}")
    keys = SiteKeyPair.generate()
    cert_pem, key_pem = make_certificate(site_id)
    write_secret(folder / "key" / "sealing.key", keys.mlkem_seed + keys.x25519_private)
    write_secret(folder / "key" / "tls.key", key_pem)
    (folder / "key" / "tls.crt").write_bytes(cert_pem)
    public = keys.public
    registration = SiteRegistration(site_id, operator, capacity_bytes,
                                    (public.mlkem + public.x25519).hex(), fingerprint(cert_pem))
    registration.save(folder)
    return registration


def _sealing_key(folder: Path) -> SiteKeyPair:
    path = folder / "key" / "sealing.key"
    if not path.exists():
        raise SiteFolderError(f"site {folder}: its sealing key {path} is missing")
    raw = path.read_bytes()
    return SiteKeyPair(raw[:64], raw[64:96])


def used_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for part in ("objects", "staging")
               for f in (folder / part).rglob("*") if f.is_file())


class SiteStore:
    """The site's folder: staging, committed objects, the restore log."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.registration = SiteRegistration.load(folder)
        self.keys = _sealing_key(folder)
        self.private = self.keys.hpke_key()
        self.lock = threading.Lock()
        self.used = used_bytes(folder)  # kept up to date by stage; counted again on health

    def refresh_used(self) -> int:
        with self.lock:
            self.used = used_bytes(self.folder)
            return self.used

    def _share_path(self, area: str, obj: str, share: int, chunk: int) -> Path:
        return self.folder / area / obj / str(share) / f"{chunk}.sealed"

    def stage(self, obj: str, share: int, chunk: int, sealed: bytes) -> None:
        with self.lock:
            free = self.registration.capacity_bytes - self.used
            if len(sealed) > free:
                raise SiteFull(f"site {self.registration.site_id} has {free:,} bytes free, "
                               f"the share needs {len(sealed):,}")
            self.used += len(sealed)
        path = self._share_path("staging", obj, share, chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(sealed)
        tmp.replace(path)

    def commit(self, obj: str, manifest: bytes) -> None:
        staged = self.folder / "staging" / obj
        if not staged.is_dir():
            raise KeyError(f"nothing staged for object {obj}")
        (staged / "manifest.json").write_bytes(manifest)
        target = self.folder / "objects" / obj
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        staged.replace(target)

    def abort(self, obj: str) -> None:
        shutil.rmtree(self.folder / "staging" / obj, ignore_errors=True)
        self.refresh_used()

    def delete(self, obj: str) -> None:
        shutil.rmtree(self.folder / "objects" / obj, ignore_errors=True)
        self.refresh_used()

    def manifest(self, obj: str) -> bytes | None:
        path = self.folder / "objects" / obj / "manifest.json"
        return path.read_bytes() if path.exists() else None

    def reseal(self, obj: str, share: int, chunk: int, coi: str, restore_key: bytes,
               token_nonce: str) -> bytes | None:
        """The share opened with this site's key and sealed to ``restore_key``; None if the
        site has no such committed share; :class:`SealBroken` if it fails its own seal
        (altered at rest: the restorer names it and uses other shares)."""
        path = self._share_path("objects", obj, share, chunk)
        if not path.exists():
            return None
        context = share_context(coi, chunk, share)
        try:
            plain = open_sealed(path.read_bytes(), self.private, context)
        except InvalidTag as exc:
            raise SealBroken(f"site {self.registration.site_id}: share {share} of chunk "
                             f"{chunk} of object {obj} fails its seal (altered at rest)") from exc
        with self.lock, (self.folder / "restores.log").open("a") as log:
            log.write(json.dumps({"at": time.time(), "object": obj, "share": share,
                                  "chunk": chunk, "token_nonce": token_nonce}) + "\n")
        public = SitePublicKey(restore_key[:-32], restore_key[-32:])
        return seal(plain, public, context)


class SealBroken(RuntimeError):
    """A stored share no longer opens with the site's key: it was altered at rest."""


class SiteFull(RuntimeError):
    """The site's capacity would be exceeded by a share."""


def _handler(store: SiteStore) -> type[BaseHTTPRequestHandler]:
    class SiteHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"pcvhub-vault-site/{store.registration.site_id}"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass  # a site logs restores (restores.log), not every request

        def _parts(self) -> list[str]:
            parts = [p for p in self.path.split("/") if p]
            if not all(_NAME.match(p) for p in parts):
                raise ValueError(f"path {self.path!r} has a part that is not a plain name")
            return parts

        def _send(self, status: HTTPStatus, body: bytes = b"",
                  kind: str = "application/octet-stream") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._send(status, json.dumps({"error": message}).encode(), "application/json")

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            try:
                parts = self._parts()
                if parts == ["health"]:
                    used = store.refresh_used()
                    self._send(HTTPStatus.OK, json.dumps({
                        "site_id": store.registration.site_id,
                        "operator": store.registration.operator,
                        "used_bytes": used,
                        "free_bytes": store.registration.capacity_bytes - used,
                        "tls_group": getattr(self.connection, "group", None),
                    }).encode(), "application/json")
                elif len(parts) == 2 and parts[0] == "manifest":
                    manifest = store.manifest(parts[1])
                    if manifest is None:
                        self._error(HTTPStatus.NOT_FOUND, f"no committed object {parts[1]}")
                    else:
                        self._send(HTTPStatus.OK, manifest, "application/json")
                elif len(parts) == 4 and parts[0] == "objects":
                    key = bytes.fromhex(self.headers.get("X-Restore-Key", ""))
                    coi = self.headers.get("X-CoI", "")
                    nonce = self.headers.get("X-Consent-Token", "")
                    if len(key) != 1216 or not coi or not nonce:
                        self._error(HTTPStatus.BAD_REQUEST, "a restore names the CoI "
                                    "(X-CoI), the consent token's nonce (X-Consent-Token) and "
                                    "a 1216-byte X-Wing public key (X-Restore-Key, hex)")
                        return
                    sealed = store.reseal(parts[1], int(parts[2]), int(parts[3]), coi, key,
                                          nonce)
                    if sealed is None:
                        self._error(HTTPStatus.NOT_FOUND, f"no share {parts[2]} of chunk "
                                    f"{parts[3]} of object {parts[1]} here")
                    else:
                        self._send(HTTPStatus.OK, sealed)
                else:
                    self._error(HTTPStatus.NOT_FOUND, f"no such resource {self.path}")
            except SealBroken as exc:
                self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc))
            except ValueError as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc))

        def do_PUT(self) -> None:  # noqa: N802
            try:
                parts = self._parts()
                body = self._body()
                if len(parts) != 4 or parts[0] != "staging":
                    self._error(HTTPStatus.NOT_FOUND, f"no such resource {self.path}")
                    return
                store.stage(parts[1], int(parts[2]), int(parts[3]), body)
                self._send(HTTPStatus.CREATED)
            except SiteFull as exc:
                self._error(HTTPStatus.INSUFFICIENT_STORAGE, str(exc))
            except ValueError as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc))

        def do_POST(self) -> None:  # noqa: N802
            try:
                parts = self._parts()
                body = self._body()
                if len(parts) != 2 or parts[0] != "commit":
                    self._error(HTTPStatus.NOT_FOUND, f"no such resource {self.path}")
                    return
                store.commit(parts[1], body)
                self._send(HTTPStatus.OK)
            except KeyError as exc:
                self._error(HTTPStatus.CONFLICT, str(exc.args[0]))
            except ValueError as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc))

        def do_DELETE(self) -> None:  # noqa: N802
            try:
                parts = self._parts()
                if len(parts) == 2 and parts[0] == "staging":
                    store.abort(parts[1])
                elif len(parts) == 2 and parts[0] == "objects":
                    store.delete(parts[1])
                else:
                    self._error(HTTPStatus.NOT_FOUND, f"no such resource {self.path}")
                    return
                self._send(HTTPStatus.OK)
            except ValueError as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc))

    return SiteHandler


class SiteServer(ThreadingHTTPServer):
    """``http.server`` over pyOpenSSL: each accepted socket is wrapped in TLS; the handshake
    and the post-quantum check run in the request's own thread."""

    daemon_threads = True

    def __init__(self, store: SiteStore, host: str = "127.0.0.1", port: int = 0) -> None:
        self.tls = server_context(store.folder / "key" / "tls.crt",
                                  store.folder / "key" / "tls.key")
        super().__init__((host, port), _handler(store))

    def finish_request(self, request: Any, client_address: Any) -> None:
        connection = SSL.Connection(self.tls, request)
        connection.set_accept_state()
        try:
            connection.do_handshake()
            require_post_quantum(connection, f"client {client_address[0]}:{client_address[1]}")
        except (SSL.Error, NotPostQuantum):
            connection.close()
            return
        tls = TlsSocket(connection)
        try:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]
        finally:
            tls.shutdown()

    def shutdown_request(self, request: Any) -> None:
        self.close_request(request)


def serve_site(folder: Path, host: str = "127.0.0.1", port: int = 0,
               on_ready: Callable[[], None] | None = None) -> None:
    """Serve site ``folder`` until interrupted; its registration gets the bound port."""
    store = SiteStore(folder)
    server = SiteServer(store, host, port)
    bound = server.server_address[1]
    registration = SiteRegistration(**{**asdict(store.registration), "host": host,
                                       "port": int(bound)})
    registration.save(folder)
    store.registration = registration
    (folder / "site.pid").write_text(str(os.getpid()))
    if on_ready is not None:
        on_ready()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
