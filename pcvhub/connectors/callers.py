"""Caller authentication: who may call a connector, always an actor registered on the log.

Two ways in, both bound to the caller's registered Ed25519 key: a TLS client certificate
issued by :class:`pcvhub.connectors.tls.LocalCA` (MLLP), or a short-lived bearer token
signed by the caller (:func:`issue_token`, HTTP). :class:`CallerCheck` checks either
against the key registry the connector folds from the log, so a revocation takes effect
on the next connection or request.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from pcvhub.trust.issuer import now_us
from pcvhub.trust.registry import KeyRegistry
from pcvhub.trust.signing import EventSigner

__all__ = ["TOKEN_MAX_LIFETIME_S", "Caller", "CallerCheck", "CallerRefused", "issue_token"]

TOKEN_MAX_LIFETIME_S = 300


def issue_token(signer: EventSigner, audience: str, lifetime_s: int = 120) -> str:
    """A bearer token for a connector's HTTP endpoint, signed with the caller's Ed25519 key.

    A JWT (RFC 7519, alg EdDSA) in the manner of SMART Backend Services: ``iss``/``sub``
    the actor id, ``kid`` the registered key id, ``aud`` the endpoint's base URL, a short
    life and a unique ``jti``. No shared secret exists: the hub checks the signature with
    the public key the log registered.
    """
    now = int(time.time())
    claims = {"iss": signer.producer, "sub": signer.producer, "aud": audience, "iat": now,
              "exp": now + lifetime_s, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, signer.keys.ed25519, algorithm="EdDSA",
                      headers={"kid": signer.key_id})


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a registered actor of the connector's site."""

    actor_id: str
    key_id: str
    site_id: str
    roles: frozenset[str]


class CallerRefused(Exception):
    """Authentication failed; ``code`` is machine-readable, the message is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class CallerCheck:
    """Who may call a connector: an actor registered on the log, with a key valid now,
    registered at the connector's site. The registry is the live one the connector folds
    from the canonical log, so a revocation takes effect on the next connection/request.
    """

    def __init__(self, registry: KeyRegistry, site_id: str) -> None:
        self.registry = registry
        self.site_id = site_id

    def _caller(self, actor_id: str, key_id: str) -> Caller:
        actor = self.registry.actors.get(actor_id)
        if actor is None:
            raise CallerRefused("UNREGISTERED_CALLER",
                                f"caller {actor_id} is not a registered actor of this hub; "
                                "have the registrar register it (ActorRegistered) first")
        problem = self.registry.key_problem(actor_id, key_id, now_us())
        if problem is not None:
            raise CallerRefused(problem[0], f"caller {actor_id}: {problem[1]}")
        if actor.site_id != self.site_id:
            raise CallerRefused("WRONG_SITE",
                                f"caller {actor_id} is registered at site {actor.site_id}, but "
                                f"this connector serves site {self.site_id}; send to your own "
                                "site's connector")
        return Caller(actor_id, key_id, actor.site_id, actor.roles)

    def check_certificate(self, der: bytes | None) -> Caller:
        """A TLS client certificate (already verified against the CA by the handshake)."""
        if not der:
            raise CallerRefused("UNAUTHENTICATED", "no TLS client certificate was presented")
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            raise CallerRefused("UNAUTHENTICATED", "the client certificate names no actor (CN)")
        actor_id = str(names[0].value)
        public = cert.public_key()
        if not isinstance(public, ed25519.Ed25519PublicKey):
            raise CallerRefused("UNAUTHENTICATED", f"the certificate of {actor_id} does not "
                                "carry an Ed25519 key registered on the log")
        raw = public.public_bytes_raw()
        for (owner, key_id), record in list(self.registry.keys.items()):
            if owner == actor_id and record.public.ed25519 == raw:
                return self._caller(actor_id, key_id)
        raise CallerRefused("UNREGISTERED_KEY",
                            f"the client certificate of {actor_id} carries a key that is not "
                            f"registered for {actor_id} on the log")

    def check_token(self, authorization: str | None, audience: str) -> Caller:
        """An ``Authorization: Bearer <JWT>`` header made by :func:`issue_token`."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise CallerRefused("UNAUTHENTICATED", "the request carries no "
                                "'Authorization: Bearer <token>' header")
        token = authorization[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise CallerRefused("UNAUTHENTICATED", f"the bearer token is malformed: {exc}"
                                ) from None
        actor_id, key_id = str(unverified.get("iss", "")), str(header.get("kid", ""))
        record = self.registry.keys.get((actor_id, key_id))
        if record is None:
            raise CallerRefused("UNREGISTERED_KEY", f"the bearer token names actor "
                                f"{actor_id or '(none)'} key {key_id or '(none)'}, which the "
                                "log has not registered")
        try:
            claims = jwt.decode(
                token, ed25519.Ed25519PublicKey.from_public_bytes(record.public.ed25519),
                algorithms=["EdDSA"], audience=audience,
                options={"require": ["exp", "iat", "iss", "aud", "jti"]})
        except jwt.PyJWTError as exc:
            raise CallerRefused("UNAUTHENTICATED", f"the bearer token of {actor_id} is not "
                                f"valid for {audience}: {exc}") from None
        if claims["exp"] - claims["iat"] > TOKEN_MAX_LIFETIME_S:
            raise CallerRefused("UNAUTHENTICATED", f"the bearer token of {actor_id} lives "
                                f"longer than {TOKEN_MAX_LIFETIME_S} s; issue short-lived tokens")
        return self._caller(actor_id, key_id)
