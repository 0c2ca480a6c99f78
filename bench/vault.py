"""Genome vault throughput on one core: split, restore and put beside copy, AES-GCM, SHA-256.

Baselines measured in the same run over the same bytes: a plain copy into a preallocated
buffer, AES-256-GCM encryption and SHA-256. Every vault rate counts *input* bytes (a 2-of-3
split writes three times as many). The process pins itself to one CPU first. Split and
restore include the chunk tree's SHA-256 of every chunk, so on one core they cannot beat
the SHA-256 line; "restore 2 of 3 + verify tree" also hashes its output (its sink), the
"sink discards" line does not, and "Shamir split alone" leaves out reading and hashing.

Peak memory: a child process puts a generated 4 GiB input (``--peak-gib 16`` for 16 GiB)
through split + seal + tree, discarding the sealed shares, then restores it with the shares
regenerated chunk by chunk from the same seeded DRBG and hashes the output instead of
writing it, so disk is never the limit; it reports its peak resident set.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import subprocess
import sys
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from rich.console import Console
from rich.progress import BarColumn, Progress, TransferSpeedColumn

from bench.report import Figure, median_rate
from pcvhub.vault.chunks import DEFAULT_CHUNK_SIZE
from pcvhub.vault.randomness import AesCtrDrbg, OsRandomness
from pcvhub.vault.sealing import SiteKeyPair
from pcvhub.vault.shamir import ShamirSplitter
from pcvhub.vault.stream import restore_stream, split_stream
from pcvhub.vault.vault import Site, put

MB = 1e6  # rates print as MB/s: the shared table rounds to one decimal
CHUNK = DEFAULT_CHUNK_SIZE


class GeneratedInput(io.RawIOBase):
    """``size`` bytes made of one random 4 MiB pattern repeated: no disk, no big buffer."""

    def __init__(self, size: int, pattern: bytes) -> None:
        self.size, self.pattern, self.position = size, memoryview(pattern), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        count = min(len(buffer), self.size - self.position, len(self.pattern))
        start = self.position % len(self.pattern)
        count = min(count, len(self.pattern) - start)
        buffer[:count] = self.pattern[start:start + count]
        self.position += count
        return count


def _pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def run(quick: bool = False, peak_gib: int = 4) -> list[Figure]:
    _pin_to_one_core()
    size = (64 if quick else 256) << 20
    pattern = os.urandom(CHUNK)
    chunks = size // CHUNK
    target = bytearray(CHUNK)
    aead = AESGCM(os.urandom(32))
    nonce = os.urandom(12)

    def copy() -> int:
        for _ in range(chunks):
            target[:] = pattern
        return size

    def sha256() -> int:
        digest = hashlib.sha256()
        for _ in range(chunks):
            digest.update(pattern)
        return size

    def aes_gcm() -> int:
        for _ in range(chunks):
            aead.encrypt(nonce, pattern, None)
        return size

    def split(randomness) -> int:
        split_stream(GeneratedInput(size, pattern), lambda *a: None, randomness=randomness)
        return size

    # restore: a smaller share set kept in memory (3 x input)
    restore_size = (32 if quick else 64) << 20
    shares: dict[tuple[int, int], bytes] = {}
    manifest = split_stream(GeneratedInput(restore_size, pattern),
                            lambda s, c, b: shares.__setitem__((s, c), bytes(b)),
                            randomness=AesCtrDrbg())

    def restore() -> int:
        digest = hashlib.sha256()
        restore_stream(manifest, lambda s, c: shares.get((s, c)), digest.update)
        return restore_size

    def restore_discard() -> int:  # the same, with a sink that does not hash again
        restore_stream(manifest, lambda s, c: shares.get((s, c)), lambda chunk: None)
        return restore_size

    splitter = ShamirSplitter(2, 3, AesCtrDrbg(), CHUNK)
    chunk = memoryview(bytearray(pattern))

    def shamir_only() -> int:  # the splitter alone: no read, no tree hash
        for _ in range(chunks):
            splitter.split(chunk)
        return size

    keys = [SiteKeyPair.generate() for _ in range(3)]
    sites = [Site(f"site-{i}", key.public, f"bench://{i}") for i, key in enumerate(keys)]

    def put_sealed(randomness_class) -> int:
        put(GeneratedInput(size, pattern), "bench-coi", sites, lambda *a: None,
            randomness=randomness_class())
        return size

    repeats = 3
    rate = lambda op: median_rate(op, repeats) / MB  # noqa: E731
    base_copy, base_sha, base_gcm = rate(copy), rate(sha256), rate(aes_gcm)
    section = "vault (1 core, 2-of-3)"
    figures = [
        Figure(section, "plain copy", base_copy, "MB/s"),
        Figure(section, "SHA-256", base_sha, "MB/s", "copy", base_copy),
        Figure(section, "AES-256-GCM encrypt", base_gcm, "MB/s", "copy", base_copy),
    ]
    measured = [
        ("split, OS randomness (information-theoretic)", lambda: split(OsRandomness()), "gcm"),
        ("split, AES-CTR DRBG (computational)", lambda: split(AesCtrDrbg()), "gcm"),
        ("restore 2 of 3 + verify tree", restore, "sha"),
        ("restore 2 of 3 + verify tree, sink discards", restore_discard, "sha"),
        ("Shamir split alone, DRBG (no read, no tree)", shamir_only, "gcm"),
        ("put = split + HPKE seal + tree, OS randomness", lambda: put_sealed(OsRandomness),
         "gcm"),
        ("put = split + HPKE seal + tree, DRBG", lambda: put_sealed(AesCtrDrbg), "gcm"),
    ]
    for name, op, against in measured:
        base_name, base = (("SHA-256", base_sha) if against == "sha"
                           else ("AES-256-GCM", base_gcm))
        figures.append(Figure(section, name, rate(op), "MB/s", base_name, base))
    figures.extend(_peak_memory(peak_gib))
    return figures


def _peak_memory(gib: int) -> list[Figure]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "bench.vault", "--peak-child", str(gib)],
                            capture_output=False, stdout=subprocess.PIPE, text=True, check=True)
    baseline_mib, peak_mib = (float(x) for x in result.stdout.split()[-2:])
    seconds = time.perf_counter() - started
    section = f"vault peak memory, {gib} GiB put + restore"
    return [Figure(section, "resident set after imports", baseline_mib, "MiB"),
            Figure(section, "peak resident set", peak_mib, "MiB", "after imports", baseline_mib),
            Figure(section, "wall time, put + restore", seconds, "s")]


def _peak_child(gib: int) -> None:
    _pin_to_one_core()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = gib << 30
    pattern = os.urandom(CHUNK)
    seed = os.urandom(32)
    keys = [SiteKeyPair.generate() for _ in range(3)]
    sites = [Site(f"site-{i}", key.public, f"bench://{i}") for i, key in enumerate(keys)]
    # the bar goes to stderr: stdout carries the two numbers the parent reads
    with Progress(*Progress.get_default_columns(), TransferSpeedColumn(), BarColumn(),
                  transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task(f"put {gib} GiB", total=size)
        manifest, _ = put(GeneratedInput(size, pattern), "bench-coi", sites, lambda *a: None,
                          randomness=AesCtrDrbg(seed),
                          on_chunk=lambda n: progress.advance(task, n))
        # the sites' shares, regenerated in lock-step from the same seed instead of stored
        splitter = ShamirSplitter(2, 3, AesCtrDrbg(seed), CHUNK)
        current: dict[str, object] = {"chunk": -1, "shares": None}
        source_input = GeneratedInput(size, pattern)
        buffer = bytearray(CHUNK)

        def source(share_index: int, chunk_index: int):
            if current["chunk"] != chunk_index:
                got = source_input.readinto(memoryview(buffer))
                current["chunk"], current["shares"] = chunk_index, splitter.split(
                    memoryview(buffer)[:got])
            return current["shares"][share_index - 1]  # type: ignore[index]

        task = progress.add_task(f"restore {gib} GiB", total=size)
        digest = hashlib.sha256()
        restore_stream(manifest, source, digest.update, expected_root=manifest.root,
                       on_chunk=lambda n: progress.advance(task, n))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{baseline:.1f} {peak:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--peak-child", type=int, required=True)
    _peak_child(parser.parse_args().peak_child)
