"""Genome vault throughput: split, restore and put beside copy, AES-GCM, SHA-256.

Baselines measured in the same run over the same bytes: a plain copy into a preallocated
buffer, AES-256-GCM encryption and SHA-256. Every vault rate counts *input* bytes (a 2-of-3
split writes three times as many). Each figure is printed twice from the same runs:
``[wall]`` (elapsed time; split and restore hash the chunk tree on a second thread, so with
a second core free the tree's SHA-256 overlaps the splitting) and ``[CPU]`` (CPU time of
the whole process, every thread included: core-seconds). The targets are per core, so
they are judged on the ``[CPU]`` lines. Split and restore include the tree's SHA-256 of every
chunk, so their CPU rate cannot beat the SHA-256 line; "sink hashes" also hashes the
output (its sink) on the main thread, "sink discards" does not, and "split alone" leaves
out reading and hashing. The XOR-only scheme (:mod:`pcvhub.vault.xorshare`) is measured
beside Shamir in the same run.

Peak memory: a child process warms up on tiny chunks (kernels loaded, keys, thread pool),
takes its resident set as the baseline, then puts a generated 4 GiB input
(``python -m bench vault --vault-gib 16`` for the full 16 GiB CRAM) through split + seal +
tree, discarding the sealed shares, and restores it with the shares regenerated chunk by
chunk from the same seeded DRBG, hashing the output instead of writing it, so disk is never
the limit. The vault's own peak is the peak resident set minus that baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from rich.console import Console
from rich.progress import BarColumn, Progress, TransferSpeedColumn

from bench.report import Figure
from pcvhub.vault.chunks import DEFAULT_CHUNK_SIZE
from pcvhub.vault.randomness import AesCtrDrbg, OsRandomness, Randomness
from pcvhub.vault.sealing import SiteKeyPair
from pcvhub.vault.shamir import SCHEME as SHAMIR
from pcvhub.vault.shamir import ShamirSplitter
from pcvhub.vault.stream import Splitter, restore_stream, split_stream
from pcvhub.vault.vault import Site, put
from pcvhub.vault.xorshare import SCHEME as XOR
from pcvhub.vault.xorshare import XorSplitter

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


def _rates(operation: Callable[[], int], repeats: int) -> tuple[float, float]:
    """Medians of (wall-clock, CPU-time) MB/s over the same runs; CPU time is the whole
    process's, every thread included, so it is the cost in core-seconds."""
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        items = operation()
        wall.append(items / (time.perf_counter() - started) / MB)
        cpu.append(items / (time.process_time() - started_cpu) / MB)
    return statistics.median(wall), statistics.median(cpu)


def run(quick: bool = False, peak_gib: int = 4, sites_only: bool = False) -> list[Figure]:
    if sites_only:
        return through_sites(quick)
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

    def split(randomness: Randomness, k: int = 2, n: int = 3, scheme: str = SHAMIR) -> int:
        split_stream(GeneratedInput(size, pattern), lambda *a: None, k=k, n=n,
                     randomness=randomness, scheme=scheme)
        return size

    # restore: a smaller share set kept in memory (3 x input), one per scheme
    restore_size = (32 if quick else 64) << 20
    share_sets = {}
    for scheme in (SHAMIR, XOR):
        shares: dict[tuple[int, int], bytes] = {}

        def keep(s: int, c: int, b: memoryview, kept: dict = shares) -> None:
            kept[(s, c)] = bytes(b)

        manifest = split_stream(GeneratedInput(restore_size, pattern), keep,
                                randomness=AesCtrDrbg(), scheme=scheme)
        share_sets[scheme] = (manifest, shares)

    def restore(scheme: str = SHAMIR, hashing_sink: bool = True) -> int:
        manifest, shares = share_sets[scheme]
        sink = hashlib.sha256().update if hashing_sink else (lambda chunk: None)
        restore_stream(manifest, lambda s, c: shares.get((s, c)), sink)
        return restore_size

    chunk = memoryview(bytearray(pattern))

    def splitter_only(splitter: Splitter) -> Callable[[], int]:
        def op() -> int:  # the splitter alone: no read, no tree hash
            for _ in range(chunks):
                splitter.split(chunk)
            return size
        return op

    keys = [SiteKeyPair.generate() for _ in range(3)]
    sites = [Site(f"site-{i}", key.public, f"bench://{i}") for i, key in enumerate(keys)]

    def put_sealed(randomness_class: Callable[[], Randomness]) -> int:
        put(GeneratedInput(size, pattern), "bench-coi", sites, lambda *a: None,
            randomness=randomness_class())
        return size

    repeats = 5
    rates = lambda op: _rates(op, repeats)  # noqa: E731
    section = "vault (2-of-3)"
    baselines = {"copy": rates(copy), "SHA-256": rates(sha256),
                 "AES-256-GCM": rates(aes_gcm)}
    figures = []
    for clock, column in (("wall", 0), ("CPU", 1)):
        copy_rate = baselines["copy"][column]
        figures.append(Figure(section, f"plain copy [{clock}]", copy_rate, "MB/s"))
        for name in ("SHA-256", "AES-256-GCM"):
            figures.append(Figure(section, f"{name} [{clock}]", baselines[name][column],
                                  "MB/s", "copy", copy_rate))
    # (name, operation, baseline, target in MB/s or None)
    measured = [
        ("split, OS randomness (information-theoretic)", lambda: split(OsRandomness()),
         "AES-256-GCM", 150),
        ("split, AES-CTR DRBG (computational)", lambda: split(AesCtrDrbg()), "AES-256-GCM",
         1000),
        ("split, XOR scheme, AES-CTR DRBG", lambda: split(AesCtrDrbg(), scheme=XOR),
         "AES-256-GCM", 1000),
        ("split 3-of-5, AES-CTR DRBG", lambda: split(AesCtrDrbg(), 3, 5), "AES-256-GCM", None),
        ("split 3-of-5, XOR scheme, AES-CTR DRBG", lambda: split(AesCtrDrbg(), 3, 5, XOR),
         "AES-256-GCM", None),
        ("restore 2 of 3 + verify tree, sink hashes", restore, "SHA-256", 1000),
        ("restore 2 of 3 + verify tree, sink discards", lambda: restore(SHAMIR, False),
         "SHA-256", 1000),
        ("restore 2 of 3, XOR scheme, sink discards", lambda: restore(XOR, False), "SHA-256",
         1000),
        ("Shamir split alone, DRBG (no read, no tree)",
         splitter_only(ShamirSplitter(2, 3, AesCtrDrbg(), CHUNK)), "AES-256-GCM", None),
        ("XOR scheme split alone, DRBG (no read, no tree)",
         splitter_only(XorSplitter(2, 3, AesCtrDrbg(), CHUNK)), "AES-256-GCM", None),
        ("put = split + HPKE seal + tree, OS randomness", lambda: put_sealed(OsRandomness),
         "AES-256-GCM", None),
        ("put = split + HPKE seal + tree, DRBG", lambda: put_sealed(AesCtrDrbg),
         "AES-256-GCM", None),
    ]
    for name, op, against, goal in measured:
        wall, cpu = rates(op)
        goal_text = f", target {goal:,} per core" if goal else ""
        figures.append(Figure(section, f"{name} [wall]", wall, "MB/s", "wall " + against,
                              baselines[against][0]))
        figures.append(Figure(section, f"{name} [CPU{goal_text}]", cpu, "MB/s", "CPU " + against,
                              baselines[against][1]))
    figures.extend(_peak_memory(peak_gib))
    figures.extend(through_sites(quick))
    return figures


def through_sites(quick: bool = False) -> list[Figure]:
    """End to end through real site processes (HTTPS, X25519MLKEM768, staged then committed
    on each site's disk; get resealed by each site to the restore's one-time key), 2-of-3
    and 3-of-5, beside the core alone on the same input in the same run: put = split +
    seal with the shares discarded, get = restore + tree check from shares in memory."""
    size = (16 if quick else 64) << 20
    pattern = os.urandom(CHUNK)
    repeats = 2 if quick else 3
    return [figure for k, n in ((2, 3), (3, 5))
            for figure in _through_n_sites(k, n, size, pattern, repeats)]


def _through_n_sites(k: int, n: int, size: int, pattern: bytes, repeats: int) -> list[Figure]:
    import tempfile
    from pathlib import Path

    from pcvhub.vault.local_sites import LocalSites
    from pcvhub.vault.remote import get_from_sites, put_to_sites

    keys = [SiteKeyPair.generate() for _ in range(n)]
    core_sites = [Site(f"s{i}", key.public, f"bench://{i}") for i, key in enumerate(keys)]
    kept: dict[tuple[int, int], bytes] = {}

    def core_put() -> int:
        put(GeneratedInput(size, pattern), "bench-coi", core_sites, lambda *a: None, k=k,
            randomness=AesCtrDrbg())
        return size

    manifest = split_stream(GeneratedInput(size, pattern),
                            lambda s, c, b: kept.__setitem__((s, c), bytes(b)), k=k, n=n,
                            randomness=AesCtrDrbg())

    def core_get() -> int:
        restore_stream(manifest, lambda s, c: kept.get((s, c)), lambda chunk: None)
        return size

    figures: list[Figure] = []
    section = "vault through sites"
    with tempfile.TemporaryDirectory(prefix="bench-vault-sites-") as root, \
            LocalSites(Path(root), [f"bench-site-{i}" for i in range(1, n + 1)]) as sites:
        registrations = sites.registrations()
        stored: list[dict] = []

        def site_put() -> int:
            result = put_to_sites(GeneratedInput(size, pattern), "bench-coi", registrations,
                                  k=k, randomness=AesCtrDrbg())
            stored.append(result.payload)
            return size

        def site_get() -> int:
            get_from_sites(stored[-1], "bench-coi", {r.site_id: r for r in registrations},
                           lambda chunk: None, "00" * 32)
            return size

        for what, core_op, site_op in (("put", core_put, site_put),
                                       ("get", core_get, site_get)):
            core_wall, _ = _rates(core_op, repeats)
            site_wall, _ = _rates(site_op, repeats)
            label = f"{k}-of-{n} {what}"
            figures.append(Figure(section, f"{label}, core alone [wall]", core_wall, "MB/s"))
            figures.append(Figure(section, f"{label} through {n} site processes [wall]",
                                  site_wall, "MB/s", "core alone", core_wall))
    return figures


def _peak_memory(gib: int) -> list[Figure]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "bench.vault", "--peak-child", str(gib)],
                            capture_output=False, stdout=subprocess.PIPE, text=True, check=True)
    baseline_mib, peak_mib = (float(x) for x in result.stdout.split()[-2:])
    seconds = time.perf_counter() - started
    section = f"vault peak memory, {gib} GiB put + restore"
    return [Figure(section, "resident set, interpreter + numba + kernels warm", baseline_mib,
                   "MiB"),
            Figure(section, "peak resident set", peak_mib, "MiB"),
            Figure(section, "vault's own peak (peak - warm baseline)", peak_mib - baseline_mib,
                   "MiB"),
            Figure(section, "wall time, put + restore", seconds, "s")]


def _memory_mib(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in MiB. Not
    ``ru_maxrss``: that survives exec, so a child started by a big parent inherits the
    parent's peak (measured: 283 MiB "vault-only" under the full bench, 44 MiB alone)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _put_and_restore(size: int, chunk_size: int, seed: bytes, progress: Progress | None) -> None:
    """Put ``size`` generated bytes (sealed shares discarded), then restore them with the
    shares regenerated from the same seeded DRBG, hashing the output instead of writing it."""
    pattern = os.urandom(chunk_size)
    keys = [SiteKeyPair.generate() for _ in range(3)]
    sites = [Site(f"site-{i}", key.public, f"bench://{i}") for i, key in enumerate(keys)]
    advance = (lambda task: lambda n: progress.advance(task, n)) if progress else (
        lambda task: None)
    task = progress.add_task(f"put {size >> 30} GiB", total=size) if progress else None
    manifest, _ = put(GeneratedInput(size, pattern), "bench-coi", sites, lambda *a: None,
                      chunk_size=chunk_size, randomness=AesCtrDrbg(seed),
                      on_chunk=advance(task))
    # the sites' shares, regenerated in lock-step from the same seed instead of stored; two
    # splitters in turn, since a source's shares must outlive the next chunk's request
    drbg = AesCtrDrbg(seed)
    splitters = [ShamirSplitter(2, 3, drbg, chunk_size) for _ in range(2)]
    current: dict[int, list[memoryview]] = {}
    source_input = GeneratedInput(size, pattern)
    buffer = bytearray(chunk_size)

    def source(share_index: int, chunk_index: int) -> memoryview:
        if chunk_index not in current:
            got = source_input.readinto(memoryview(buffer))
            current.pop(chunk_index - 2, None)
            current[chunk_index] = splitters[chunk_index % 2].split(memoryview(buffer)[:got])
        return current[chunk_index][share_index - 1]

    task = progress.add_task(f"restore {size >> 30} GiB", total=size) if progress else None
    digest = hashlib.sha256()
    restore_stream(manifest, source, digest.update, expected_root=manifest.root,
                   on_chunk=advance(task))


def _peak_child(gib: int) -> None:
    _pin_to_one_core()  # peak memory does not depend on cores; keep the other one free
    # warm up on a few tiny chunks: numba kernels loaded, thread pool, HPKE; then measure the
    # resident set, so that what the big run adds on top is the vault's own memory
    _put_and_restore(3 * 4096, 4096, os.urandom(32), None)
    baseline = _memory_mib("VmRSS")
    # the bar goes to stderr: stdout carries the two numbers the parent reads
    with Progress(*Progress.get_default_columns(), TransferSpeedColumn(), BarColumn(),
                  transient=True, console=Console(stderr=True)) as progress:
        _put_and_restore(gib << 30, CHUNK, os.urandom(32), progress)
    peak = _memory_mib("VmHWM")
    print(f"{baseline:.1f} {peak:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--peak-child", type=int, required=True)
    _peak_child(parser.parse_args().peak_child)
