"""Private keys at rest: encrypted files, one per actor key.

Each key pair is stored as its two 32-byte seeds, encrypted with AES-256-GCM under a key
derived from a passphrase with scrypt (RFC 7914; n=2**15, r=8, p=1: about 32 MiB and
~0.1 s per unlock, a cost paid once per process, not per event). The actor id and key
id are the GCM associated data, so a file copied under another actor's name does not
decrypt. The public keys are stored in clear beside it, for listing and registration.

The passphrase comes from ``PCVHUB_KEY_PASSPHRASE``; there is deliberately no default.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from pcvhub.trust.signing import EventSigner, HybridKeyPair, PublicKeys

PASSPHRASE_ENV = "PCVHUB_KEY_PASSPHRASE"
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}



def write_secret(path: Path, data: bytes) -> None:
    """Write a file only its owner may read (keys, passwords), atomically: the bytes go to
    a temporary file created with mode 0600 (never readable by others, not even for a
    moment), which then replaces ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)

class KeyStoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class StoredKey:
    actor_id: str
    key_id: str
    created_at: str
    public: PublicKeys
    path: Path


def passphrase_from_env() -> bytes:
    value = os.environ.get(PASSPHRASE_ENV)
    if not value:
        raise KeyStoreError(f"{PASSPHRASE_ENV} is not set: private keys are encrypted at rest "
                            "and need a passphrase to unlock (export it, or use your secret "
                            "manager to inject it)")
    return value.encode()


def _kek(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, **_SCRYPT).derive(passphrase)


def new_key_id(actor_id: str) -> str:
    return f"{actor_id}-k{secrets.token_hex(4)}"


class KeyStore:
    """A folder of encrypted key files: ``<root>/<actor_id>/<key_id>.json``."""

    def __init__(self, root: Path, passphrase: bytes) -> None:
        self.root = Path(root)
        self._passphrase = passphrase

    def _path(self, actor_id: str, key_id: str) -> Path:
        for part in (actor_id, key_id):
            if not part or "/" in part or part.startswith("."):
                raise KeyStoreError(f"{part!r} cannot name a key file")
        return self.root / actor_id / f"{key_id}.json"

    def create(self, actor_id: str, created_at: str, key_id: str | None = None) -> EventSigner:
        signer = EventSigner(actor_id, key_id or new_key_id(actor_id), HybridKeyPair.generate())
        self.store(signer, created_at)
        return signer

    def store(self, signer: EventSigner, created_at: str) -> Path:
        """Seal an existing key pair into its file (a patient's card written to the wallet)."""
        actor_id, key_id, keys = signer.producer, signer.key_id, signer.keys
        salt, nonce = os.urandom(16), os.urandom(12)
        ed_seed, pq_seed = keys.seeds()
        sealed = AESGCM(_kek(self._passphrase, salt)).encrypt(
            nonce, ed_seed + pq_seed, f"{actor_id}/{key_id}".encode())
        path = self._path(actor_id, key_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "actor_id": actor_id, "key_id": key_id, "created_at": created_at,
            "kdf": {"name": "scrypt", **_SCRYPT, "salt": salt.hex()},
            "cipher": {"name": "AES-256-GCM", "nonce": nonce.hex(), "ciphertext": sealed.hex()},
            "public": {"ed25519": keys.public.ed25519.hex(),
                       "ml_dsa_65": keys.public.ml_dsa_65.hex()},
        }
        write_secret(path, json.dumps(record, indent=1).encode())
        return path

    def _record(self, actor_id: str, key_id: str) -> dict:
        path = self._path(actor_id, key_id)
        if not path.exists():
            raise KeyStoreError(f"no stored key {key_id} for actor {actor_id} (looked at {path})")
        return json.loads(path.read_text())

    def load(self, actor_id: str, key_id: str) -> EventSigner:
        record = self._record(actor_id, key_id)
        kdf, cipher = record["kdf"], record["cipher"]
        try:
            seeds = AESGCM(_kek(self._passphrase, bytes.fromhex(kdf["salt"]))).decrypt(
                bytes.fromhex(cipher["nonce"]), bytes.fromhex(cipher["ciphertext"]),
                f"{actor_id}/{key_id}".encode())
        except InvalidTag:
            raise KeyStoreError(f"cannot unlock key {key_id} of {actor_id}: wrong passphrase, "
                                "or the file was altered or moved from another actor") from None
        return EventSigner(actor_id, key_id, HybridKeyPair.from_seeds(seeds[:32], seeds[32:]))

    def latest(self, actor_id: str) -> EventSigner:
        """The actor's newest key (the one it signs with after a rotation)."""
        mine = [k for k in self.list() if k.actor_id == actor_id]
        if not mine:
            raise KeyStoreError(f"no key for actor {actor_id} in {self.root}; create one with "
                                f"`pcvhub keys new {actor_id}`")
        return self.load(actor_id, max(mine, key=lambda k: k.created_at).key_id)

    def list(self) -> list[StoredKey]:
        found = []
        for path in sorted(self.root.glob("*/*.json")):
            r = json.loads(path.read_text())
            found.append(StoredKey(r["actor_id"], r["key_id"], r["created_at"],
                                   PublicKeys(bytes.fromhex(r["public"]["ed25519"]),
                                              bytes.fromhex(r["public"]["ml_dsa_65"])), path))
        return found
