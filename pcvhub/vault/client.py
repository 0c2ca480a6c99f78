"""Talking to one storage site over post-quantum TLS (see :mod:`~pcvhub.vault.site`).

One keep-alive HTTPS connection per site; a request that fails on a stale connection is
tried once more on a fresh one. Every failure is a :class:`SiteUnavailable` naming the site
and what it answered, so a put can abort cleanly and a restore can go on with other sites.
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any

from OpenSSL import SSL

from pcvhub.vault.pqtls import TlsSocket, connect
from pcvhub.vault.site import SiteRegistration
from pcvhub.vault.stream import ShareTampered


class SiteUnavailable(ConnectionError):
    """A site did not answer, or refused a request (its reason is in the message)."""


class _PinnedConnection(http.client.HTTPConnection):
    def __init__(self, registration: SiteRegistration, timeout: float) -> None:
        super().__init__(registration.host, registration.port, timeout=timeout)
        self.registration = registration

    def connect(self) -> None:
        self.sock = connect(self.registration.host, self.registration.port,
                            self.registration.tls_pin, self.timeout or 30.0)


class SiteClient:
    """Requests to one site, one at a time (each thread that needs a site makes its own)."""

    def __init__(self, registration: SiteRegistration, timeout: float = 30.0) -> None:
        self.registration = registration
        self.site_id = registration.site_id
        self._connection = _PinnedConnection(registration, timeout)
        self._lock = threading.Lock()

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None,
                 expect: tuple[int, ...] = (200, 201)) -> tuple[int, bytes]:
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._connection.request(method, path, body=body, headers=headers or {})
                    response = self._connection.getresponse()
                    data = response.read()
                    break
                except (OSError, SSL.Error, http.client.HTTPException) as exc:
                    self._connection.close()
                    if attempt == 2:
                        raise SiteUnavailable(f"site {self.site_id} "
                                              f"({self.registration.url}): {method} {path}: "
                                              f"{type(exc).__name__}: {exc}") from exc
        if response.status not in expect:
            reason = data.decode(errors="replace")[:300]
            raise SiteUnavailable(f"site {self.site_id}: {method} {path} answered "
                                  f"{response.status}: {reason}")
        return response.status, data

    def health(self) -> dict[str, Any]:
        return dict(json.loads(self._request("GET", "/health")[1]))

    @property
    def negotiated_group(self) -> str | None:
        sock = self._connection.sock
        return sock.group if isinstance(sock, TlsSocket) else None

    def stage(self, obj: str, share: int, chunk: int, sealed: bytes) -> None:
        self._request("PUT", f"/staging/{obj}/{share}/{chunk}", sealed)

    def commit(self, obj: str, manifest: bytes) -> None:
        self._request("POST", f"/commit/{obj}", manifest)

    def abort(self, obj: str) -> None:
        self._request("DELETE", f"/staging/{obj}")

    def delete(self, obj: str) -> None:
        self._request("DELETE", f"/objects/{obj}")

    def manifest(self, obj: str) -> bytes | None:
        status, data = self._request("GET", f"/manifest/{obj}", expect=(200, 404))
        return data if status == 200 else None

    def share(self, obj: str, share: int, chunk: int, coi: str, restore_key: bytes,
              token_nonce: str) -> bytes | None:
        """The share resealed to ``restore_key``; None if the site does not have it;
        :class:`~pcvhub.vault.stream.ShareTampered` if the site found it altered."""
        status, data = self._request(
            "GET", f"/objects/{obj}/{share}/{chunk}",
            headers={"X-Restore-Key": restore_key.hex(), "X-CoI": coi,
                     "X-Consent-Token": token_nonce}, expect=(200, 404, 422))
        if status == 422:
            raise ShareTampered(json.loads(data).get("error", "share fails its seal"))
        return data if status == 200 else None

    def close(self) -> None:
        self._connection.close()
