"""Archive signatures over liboqs (SPHINCS+-SHA2-128s-simple).

These tests need the library built by infra/liboqs/build.sh and deliberately do not skip
without it: a missing backend fails them with ArchiveBackendMissing and its fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcvhub.trust import archive
from pcvhub.trust.archive import (
    ARCHIVE_ALGORITHM,
    DOMAIN_TAG,
    ArchiveBackendMissing,
    ArchiveSigner,
    liboqs_install_dir,
    load_oqs,
)

pytestmark = pytest.mark.liboqs

REPO_ROOT = Path(archive.__file__).resolve().parents[2]
MESSAGE = b"manifest digest \x00\x01\x02 of archive 2025-01"


@pytest.fixture(scope="module")
def signer() -> ArchiveSigner:
    return ArchiveSigner.generate()


@pytest.fixture(scope="module")
def signature(signer: ArchiveSigner) -> bytes:
    return signer.sign(MESSAGE)


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def test_backend_is_our_build_with_the_archive_algorithm() -> None:
    oqs = load_oqs()
    assert ARCHIVE_ALGORITHM in oqs.get_enabled_sig_mechanisms()
    ours = liboqs_install_dir() / "lib" / "liboqs.so"
    assert Path(oqs.native()._name).resolve() == ours.resolve()


def test_round_trip(signer: ArchiveSigner, signature: bytes) -> None:
    assert len(signer.public_key) == 32
    assert len(signature) == 7856  # fixed by the SPHINCS+-SHA2-128s parameter set
    assert ArchiveSigner.verify(signer.public_key, MESSAGE, signature)
    assert ArchiveSigner.verify(signer.public_key, b"", signer.sign(b""))


def test_signing_is_randomised_but_both_verify(signer: ArchiveSigner, signature: bytes) -> None:
    again = signer.sign(MESSAGE)
    assert again != signature  # liboqs uses the randomised SPHINCS+ variant
    assert ArchiveSigner.verify(signer.public_key, MESSAGE, again)


@pytest.mark.parametrize("index", [0, len(MESSAGE) // 2, len(MESSAGE) - 1])
def test_flipped_message_bit_fails(signer: ArchiveSigner, signature: bytes, index: int) -> None:
    assert not ArchiveSigner.verify(signer.public_key, flip_bit(MESSAGE, index, 3), signature)


def test_changed_message_length_fails(signer: ArchiveSigner, signature: bytes) -> None:
    assert not ArchiveSigner.verify(signer.public_key, MESSAGE + b"\x00", signature)
    assert not ArchiveSigner.verify(signer.public_key, MESSAGE[:-1], signature)


@pytest.mark.parametrize("index", [0, 16, 3927, 7855])  # randomiser, FORS, hypertree, last
def test_flipped_signature_bit_fails(signer: ArchiveSigner, signature: bytes, index: int) -> None:
    assert not ArchiveSigner.verify(signer.public_key, MESSAGE, flip_bit(signature, index, 7))


def test_wrong_public_key_fails(signer: ArchiveSigner, signature: bytes) -> None:
    other = ArchiveSigner.generate()
    assert other.public_key != signer.public_key
    assert not ArchiveSigner.verify(other.public_key, MESSAGE, signature)
    assert not ArchiveSigner.verify(flip_bit(signer.public_key, 31), MESSAGE, signature)


def test_malformed_lengths_are_invalid_not_errors(signer: ArchiveSigner, signature: bytes) -> None:
    assert not ArchiveSigner.verify(signer.public_key + b"\x00", MESSAGE, signature)
    assert not ArchiveSigner.verify(signer.public_key[:-1], MESSAGE, signature)
    assert not ArchiveSigner.verify(signer.public_key, MESSAGE, signature[:-1])
    assert not ArchiveSigner.verify(signer.public_key, MESSAGE, signature + b"\x00")
    assert not ArchiveSigner.verify(signer.public_key, MESSAGE, b"")


def test_signatures_are_domain_separated(signer: ArchiveSigner, signature: bytes) -> None:
    oqs = load_oqs()
    with oqs.Signature(ARCHIVE_ALGORITHM) as raw:
        # The archive signature is over DOMAIN_TAG + message, not the bare message ...
        assert raw.verify(DOMAIN_TAG + MESSAGE, signature, signer.public_key)
        assert not raw.verify(MESSAGE, signature, signer.public_key)
        # ... and a bare signature by the same key is not an archive signature.
        pk = raw.generate_keypair()
        bare = raw.sign(MESSAGE)
    assert not ArchiveSigner.verify(pk, MESSAGE, bare)


def test_signer_rebuilt_from_keys_signs_for_same_public_key(signer: ArchiveSigner) -> None:
    rebuilt = ArchiveSigner(signer._secret_key, signer.public_key)
    assert ArchiveSigner.verify(signer.public_key, b"x", rebuilt.sign(b"x"))
    with pytest.raises(ValueError, match="secret key must be 64 bytes"):
        ArchiveSigner(b"short", signer.public_key)
    assert signer._secret_key.hex() not in repr(signer)


def test_install_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OQS_INSTALL_PATH", raising=False)
    monkeypatch.delenv("PCVHUB_CACHE_DIR", raising=False)
    assert liboqs_install_dir() == REPO_ROOT / ".cache" / "liboqs" / "install"
    monkeypatch.setenv("PCVHUB_CACHE_DIR", str(tmp_path))
    assert liboqs_install_dir() == tmp_path / "liboqs" / "install"
    monkeypatch.setenv("OQS_INSTALL_PATH", str(tmp_path / "elsewhere"))
    assert liboqs_install_dir() == tmp_path / "elsewhere"


@pytest.fixture
def fresh_loader() -> Iterator[None]:
    """Forget the loaded backend so load_oqs() checks again; forget the test's result after."""
    load_oqs.cache_clear()
    yield
    load_oqs.cache_clear()


def test_missing_library_raises_with_path_and_fix(
    fresh_loader: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OQS_INSTALL_PATH", str(tmp_path))
    with pytest.raises(ArchiveBackendMissing) as caught:
        load_oqs()
    assert isinstance(caught.value, RuntimeError)
    assert str(tmp_path / "lib" / "liboqs.so") in str(caught.value)
    assert "bash infra/liboqs/build.sh" in str(caught.value)


def test_unloadable_library_raises_instead_of_falling_back(
    fresh_loader: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "liboqs.so").write_bytes(b"not an ELF file")
    monkeypatch.setenv("OQS_INSTALL_PATH", str(tmp_path))
    with pytest.raises(ArchiveBackendMissing, match="cannot be loaded"):
        load_oqs()


# Runs in a fresh interpreter, so `oqs` is not already imported. The audit hook blocks and
# records any socket use or child process from the moment pcvhub's loader is called: the
# no-library case must fail before `import oqs` and before anything could reach a network.
PROBE = textwrap.dedent(
    """
    import sys
    from pcvhub.trust import archive

    attempts = []
    WATCHED = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
               "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn")

    def hook(event, args):
        if event in WATCHED:
            attempts.append(event)
            if event.startswith("socket") or sys.argv[1] == "missing":
                raise RuntimeError("blocked " + event)

    sys.addaudithook(hook)
    try:
        archive.load_oqs()
        print("LOADED")
    except archive.ArchiveBackendMissing as exc:
        print("MISSING:", exc)
    print("OQS_IMPORTED:", "oqs" in sys.modules)
    print("ATTEMPTS:", sorted(set(attempts)))
    """
)


def run_probe(mode: str, env_overrides: dict[str, str]) -> tuple[str, float]:
    env = {**os.environ, **env_overrides}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    return done.stdout, elapsed


def test_missing_library_fails_fast_without_importing_oqs_or_network(tmp_path: Path) -> None:
    out, elapsed = run_probe("missing", {"OQS_INSTALL_PATH": str(tmp_path), "HOME": str(tmp_path)})
    assert "MISSING: liboqs shared library not found" in out
    assert str(tmp_path / "lib" / "liboqs.so") in out
    assert "bash infra/liboqs/build.sh" in out
    assert "OQS_IMPORTED: False" in out
    assert "ATTEMPTS: []" in out
    # liboqs-python's own install path waits 5 s before cloning; we answer at once.
    assert elapsed < 10, elapsed


def test_loading_the_real_library_opens_no_socket() -> None:
    out, _ = run_probe("present", {"OQS_INSTALL_PATH": str(liboqs_install_dir())})
    assert "LOADED" in out
    assert "OQS_IMPORTED: True" in out
    # liboqs-python probes for a system liboqs via ctypes.util.find_library, which may run
    # ldconfig/gcc as child processes; those are local. No socket may be touched.
    attempts = out.split("ATTEMPTS:", 1)[1]
    assert "socket" not in attempts
    # And none of liboqs-python's stdout chatter leaks through.
    assert "faulthandler" not in out
