"""Hybrid signatures: Ed25519 (RFC 8032) and ML-DSA-65 (FIPS 204), both required.

Either half alone would do today; both together stay sound if one is broken later
(a quantum computer for Ed25519, a cryptanalytic surprise for the young lattice scheme).
An event is signed on its own (``EventSigner.seal``) or as part of a batch
(``EventSigner.seal_batch``): one hybrid signature over the RFC 9162 Merkle root and an
inclusion path per event, so the post-quantum cost is paid once per batch while every
event stays provable on its own. ``verify_envelope`` accepts either form.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from pcvhub.schemas.envelope import Envelope, HybridSignature, MerkleProof
from pcvhub.trust import merkle
from pcvhub.trust.canonical import (
    ML_DSA_CONTEXT,
    SIGNED_FIELDS,
    batch_signing_bytes,
    signing_bytes,
)

ED25519_SIGNATURE_SIZE = 64
ML_DSA_65_SIGNATURE_SIZE = 3309


@dataclass(frozen=True)
class PublicKeys:
    """The public half of a hybrid key pair, as registered in an ActorRegistered event."""

    ed25519: bytes
    ml_dsa_65: bytes


@dataclass(frozen=True)
class HybridKeyPair:
    """A private Ed25519 key and a private ML-DSA-65 key that always sign together."""

    ed25519: ed25519.Ed25519PrivateKey
    ml_dsa_65: mldsa.MLDSA65PrivateKey

    @classmethod
    def generate(cls) -> HybridKeyPair:
        return cls(ed25519.Ed25519PrivateKey.generate(), mldsa.MLDSA65PrivateKey.generate())

    @classmethod
    def from_seeds(cls, ed25519_seed: bytes, ml_dsa_seed: bytes) -> HybridKeyPair:
        """Both keys from their 32-byte seeds (the form stored, encrypted, at rest)."""
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(ed25519_seed),
                   mldsa.MLDSA65PrivateKey.from_seed_bytes(ml_dsa_seed))

    def seeds(self) -> tuple[bytes, bytes]:
        return self.ed25519.private_bytes_raw(), self.ml_dsa_65.private_bytes_raw()

    @property
    def public(self) -> PublicKeys:
        return PublicKeys(self.ed25519.public_key().public_bytes_raw(),
                          self.ml_dsa_65.public_key().public_bytes_raw())

    def sign(self, message: bytes) -> HybridSignature:
        return HybridSignature(self.ed25519.sign(message),
                               self.ml_dsa_65.sign(message, ML_DSA_CONTEXT))


@dataclass(frozen=True)
class EventSigner:
    """One actor's key in use: fills ``producer``/``key_id`` checks and seals envelopes."""

    producer: str
    key_id: str
    keys: HybridKeyPair

    def _check_owner(self, env: Envelope) -> None:
        if (env.producer, env.key_id) != (self.producer, self.key_id):
            raise ValueError(f"event {env.event_id} names producer {env.producer} key "
                             f"{env.key_id}, but this signer is {self.producer} key {self.key_id}")

    def seal(self, env: Envelope) -> Envelope:
        self._check_owner(env)
        return replace(env, signature=self.keys.sign(signing_bytes(env)), batch_proof=None)

    def seal_batch(self, drafts: Sequence[Envelope]) -> list[Envelope]:
        """One hybrid signature over the Merkle root; each event gets its inclusion path."""
        if not drafts:
            return []
        for env in drafts:
            self._check_owner(env)
        root, paths = merkle.tree([signing_bytes(env) for env in drafts])
        signature = self.keys.sign(batch_signing_bytes(root, len(drafts)))
        return [replace(env, signature=signature,
                        batch_proof=MerkleProof(i, len(drafts), tuple(paths[i]), root))
                for i, env in enumerate(drafts)]


@dataclass(frozen=True)
class Verification:
    """Outcome of checking one envelope's signatures.

    ``failures`` are sentences naming the event, the signer, the key and what failed;
    ``code`` is the machine-readable reason of the first failure (``OK`` when verified).
    """

    failures: tuple[str, ...] = ()
    code: str = "OK"

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        return "verified" if self.ok else "; ".join(self.failures)


#: one check: (message, Ed25519 signature, ML-DSA-65 signature, Ed25519 key, ML-DSA-65 key)
Check = tuple[bytes, bytes, bytes, bytes, bytes]
#: how many check results are remembered: every event of a batch repeats its batch's check,
#: and a batch checked ahead across cores (``pcvhub.trust.checks``) is asked for again soon
CHECKS_REMEMBERED = 4096
_remembered: OrderedDict[Check, tuple[str, ...]] = OrderedDict()
_remembered_lock = threading.Lock()


@lru_cache(maxsize=256)
def _ed25519_key(public: bytes) -> ed25519.Ed25519PublicKey:
    return ed25519.Ed25519PublicKey.from_public_bytes(public)


@lru_cache(maxsize=256)
def _ml_dsa_key(public: bytes) -> mldsa.MLDSA65PublicKey:
    return mldsa.MLDSA65PublicKey.from_public_bytes(public)


def halves_failing(check: Check) -> tuple[str, ...]:
    """Which halves of one check fail, computed here (no memo): what a pool worker runs."""
    message, ed_sig, pq_sig, ed_pub, pq_pub = check
    failed = []
    try:
        _ed25519_key(ed_pub).verify(ed_sig, message)
    except (InvalidSignature, ValueError):
        failed.append("Ed25519")
    try:
        _ml_dsa_key(pq_pub).verify(pq_sig, message, ML_DSA_CONTEXT)
    except (InvalidSignature, ValueError):
        failed.append("ML-DSA-65")
    return tuple(failed)


def remember_checks(results: Iterable[tuple[Check, tuple[str, ...]]]) -> None:
    """Keep results of ``halves_failing`` computed elsewhere (another core) for
    ``hybrid_failures`` to answer from: the same pure function of the same bytes."""
    with _remembered_lock:
        for check, failed in results:
            _remembered[check] = failed
            _remembered.move_to_end(check)
        while len(_remembered) > CHECKS_REMEMBERED:
            _remembered.popitem(last=False)


def is_remembered(check: Check) -> bool:
    with _remembered_lock:
        return check in _remembered


def forget_checks() -> None:
    """Drop every remembered result (benchmarks, so each round pays for every check)."""
    with _remembered_lock:
        _remembered.clear()


def check_of(message: bytes, signature: HybridSignature, keys: PublicKeys) -> Check:
    return (message, signature.ed25519, signature.ml_dsa_65, keys.ed25519, keys.ml_dsa_65)


def hybrid_failures(message: bytes, signature: HybridSignature, keys: PublicKeys
                    ) -> tuple[str, ...]:
    """The halves ("Ed25519", "ML-DSA-65") of ``signature`` that fail over ``message``."""
    check = check_of(message, signature, keys)
    with _remembered_lock:
        known = _remembered.get(check)
        if known is not None:
            _remembered.move_to_end(check)
            return known
    failed = halves_failing(check)
    remember_checks([(check, failed)])
    return failed


def signed_message(env: Envelope) -> bytes | None:
    """The bytes ``env``'s signature covers: its signed fields, or, for a batched event,
    its batch's root once the inclusion path leads there (None when it does not)."""
    if env.batch_proof is None:
        return signing_bytes(env)
    proof = env.batch_proof
    root = merkle.root_from_path(signing_bytes(env), proof.leaf_index, proof.tree_size,
                                 proof.path)
    if root is None or root != proof.root:
        return None
    return batch_signing_bytes(proof.root, proof.tree_size)


def verify_envelope(env: Envelope, keys: PublicKeys) -> Verification:
    """Check both signatures (and, for a batched event, its inclusion path) with ``keys``.

    Key lookup, validity windows and revocation are the key registry's business; this
    function answers only "do these bytes carry valid signatures by this key pair".
    """
    short_type = env.event_type.rsplit(".", 1)[-1]
    who = f"event {env.event_id} ({short_type}) by {env.producer} key {env.key_id}"
    if env.signature is None:
        return Verification((f"{who} carries no signature",), "UNSIGNED")
    sig = env.signature
    message, proof = signed_message(env), env.batch_proof
    if message is None:
        proof = cast(MerkleProof, proof)  # only a batch's path can miss its root
        return Verification((
            f"{who}: batch inclusion path (leaf {proof.leaf_index} of {proof.tree_size}) "
            "does not lead to the batch root the signature covers: the event or its "
            "proof was altered",), "BATCH_PATH_INVALID")
    covered = (f"the signed fields ({', '.join(SIGNED_FIELDS)})" if proof is None else
               f"the batch root {proof.root.hex()[:16]}...")
    failed = hybrid_failures(message, sig, keys)
    return Verification(tuple(f"{who}: {half} signature does not verify over {covered}"
                              for half in failed), "SIGNATURE_INVALID" if failed else "OK")


def verify_detached(message: bytes, signature: HybridSignature, keys: PublicKeys,
                    what: str) -> Verification:
    """Check both halves of a hybrid signature over ``message`` that is not an envelope (a
    patient card's answer to a bedside challenge, a consent token); ``what`` names it in
    the failures. The bytes must carry their own domain context (``canonical``)."""
    failed = hybrid_failures(message, signature, keys)
    return Verification(tuple(f"{what}: {half} signature does not verify" for half in failed),
                        "SIGNATURE_INVALID" if failed else "OK")
