"""Archive signatures: a stateless hash-based scheme (SPHINCS+) through liboqs.

Archives outlive keys and algorithms, so their seals use a scheme whose security rests only
on the hash function. liboqs provides it; we reach it through liboqs-python (``import oqs``).

liboqs-python has a dangerous default: when ``import oqs`` cannot find the liboqs shared
library it ``git clone``s liboqs from GitHub and builds it, at import time. That must never
happen here (no network on our machines, and silently building crypto code is not a thing an
import should do). So ``load_oqs()`` only imports ``oqs`` once it has checked, and loaded,
the library that ``infra/liboqs/build.sh`` builds; otherwise it raises
``ArchiveBackendMissing`` saying where it looked and how to fix it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import warnings
from pathlib import Path
from types import ModuleType

# liboqs 0.13 (what the build script builds) predates the FIPS 205 "SLH-DSA" names; this is
# the SPHINCS+ round-3.1 parameter set that SLH-DSA-SHA2-128s was standardised from. Its
# signatures are NOT interchangeable with FIPS 205 SLH-DSA ones: switching to SLH-DSA later
# means a new domain tag (v2) and keeping this verifier for v1 seals.
ARCHIVE_ALGORITHM = "SPHINCS+-SHA2-128s-simple"

# Prefixed to every signed message so an archive signature can never be replayed as (or
# mistaken for) a signature by the same key over some other kind of pcvhub data.
DOMAIN_TAG = b"pcvhub/archive/v1\x00"

BUILD_HINT = "run `bash infra/liboqs/build.sh` (make setup does it)"

# <repo>/pcvhub/trust/archive.py -> <repo>
_REPO_ROOT = Path(__file__).resolve().parents[2]


class ArchiveBackendMissing(RuntimeError):
    """liboqs is not built (or not usable) where pcvhub looks for it."""


def liboqs_install_dir() -> Path:
    """Where liboqs is installed: $OQS_INSTALL_PATH, else the build script's output."""
    explicit = os.environ.get("OQS_INSTALL_PATH")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("PCVHUB_CACHE_DIR") or str(_REPO_ROOT / ".cache")
    return Path(cache) / "liboqs" / "install"


@functools.cache
def load_oqs() -> ModuleType:
    """Import liboqs-python against our liboqs, never letting it download anything.

    Cached: the checks run until one call succeeds (failures are not cached).
    """
    install = liboqs_install_dir()
    # liboqs-python opens exactly <prefix>/lib/liboqs.so (then lib64/), not the versioned
    # names, and falls back to downloading if that fails, so that is the file we require.
    library = install / "lib" / "liboqs.so"
    if not library.is_file():
        raise ArchiveBackendMissing(
            f"liboqs shared library not found: looked for {library} "
            f"(OQS_INSTALL_PATH or $PCVHUB_CACHE_DIR/liboqs/install); to fix, {BUILD_HINT}"
        )
    # Load it ourselves first: a present but unloadable file (wrong architecture, truncated
    # build) would otherwise also send liboqs-python down its download path.
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        raise ArchiveBackendMissing(
            f"{library} exists but cannot be loaded ({exc}); to rebuild, {BUILD_HINT}"
        ) from exc

    # liboqs-python reads this at import to find the library.
    os.environ["OQS_INSTALL_PATH"] = str(install)
    # At import it logs an INFO line straight to stdout (through its own handler), which
    # would corrupt machine-readable CLI output; keep its warnings and errors.
    logging.getLogger("oqs.oqs").addFilter(lambda record: record.levelno >= logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Known and accepted: the build script pins liboqs 0.13 (the newest on a registry
            # we reach) under liboqs-python 0.16, and adds the one symbol 0.16 needs.
            warnings.filterwarnings(
                "ignore", message=r"liboqs version \(major, minor\)", category=UserWarning
            )
            import oqs
    except SystemExit as exc:  # its give-up path; unreachable once the library loaded above
        raise ArchiveBackendMissing(f"liboqs-python could not use {library}: {exc}") from exc
    except AttributeError as exc:  # a liboqs lacking a function liboqs-python needs
        raise ArchiveBackendMissing(
            f"{library} is incompatible with liboqs-python ({exc}); to rebuild, {BUILD_HINT}"
        ) from exc

    # liboqs-python prefers a system-wide liboqs (ctypes.util.find_library) over ours; make
    # sure ours is the one in use, since only it is the version and build we test.
    loaded = Path(oqs.native()._name).resolve()
    if loaded != library.resolve():
        raise ArchiveBackendMissing(
            f"liboqs-python loaded {loaded} instead of {library}; "
            "uninstall the system liboqs or point OQS_INSTALL_PATH at it deliberately"
        )
    if ARCHIVE_ALGORITHM not in oqs.get_enabled_sig_mechanisms():
        raise ArchiveBackendMissing(
            f"{library} was built without {ARCHIVE_ALGORITHM}; to rebuild, {BUILD_HINT}"
        )
    return oqs


class ArchiveSigner:
    """One archive key pair: signs with the secret key, verifies with only the public one."""

    __slots__ = ("_secret_key", "_public_key")

    def __init__(self, secret_key: bytes, public_key: bytes) -> None:
        details = _details()
        if len(secret_key) != details["length_secret_key"]:
            raise ValueError(f"{ARCHIVE_ALGORITHM} secret key must be "
                             f"{details['length_secret_key']} bytes, got {len(secret_key)}")
        if len(public_key) != details["length_public_key"]:
            raise ValueError(f"{ARCHIVE_ALGORITHM} public key must be "
                             f"{details['length_public_key']} bytes, got {len(public_key)}")
        self._secret_key = bytes(secret_key)
        self._public_key = bytes(public_key)

    @classmethod
    def generate(cls) -> ArchiveSigner:
        """A fresh key pair from liboqs' system randomness."""
        with load_oqs().Signature(ARCHIVE_ALGORITHM) as sig:
            public_key = sig.generate_keypair()
            return cls(sig.export_secret_key(), public_key)

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def secret_key_to_seal(self) -> bytes:
        """The secret key, for its owner to seal at rest (``ledger.log.save_keys``)."""
        return self._secret_key

    def sign(self, message: bytes) -> bytes:
        """Sign DOMAIN_TAG + message. Slow by design (~0.15 s): hash-based signing."""
        # A fresh liboqs object per call; leaving the `with` wipes its copy of the secret key.
        with load_oqs().Signature(ARCHIVE_ALGORITHM, self._secret_key) as sig:
            return bytes(sig.sign(DOMAIN_TAG + message))

    @staticmethod
    def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
        """True only for a signature by public_key's owner over DOMAIN_TAG + message."""
        details = _details()
        # liboqs-python raises (rather than answering False) on an over-long public key;
        # malformed input is simply not a valid signature.
        if (len(public_key) != details["length_public_key"]
                or len(signature) != details["length_signature"]):
            return False
        with load_oqs().Signature(ARCHIVE_ALGORITHM) as sig:
            return bool(sig.verify(DOMAIN_TAG + message, signature, public_key))

    def __repr__(self) -> str:  # never show the secret key
        return f"ArchiveSigner({ARCHIVE_ALGORITHM}, public_key={self._public_key.hex()[:16]}…)"


@functools.cache
def _details() -> dict[str, object]:
    """Key and signature sizes of ARCHIVE_ALGORITHM, as this liboqs reports them."""
    with load_oqs().Signature(ARCHIVE_ALGORITHM) as sig:
        return dict(sig.details)
