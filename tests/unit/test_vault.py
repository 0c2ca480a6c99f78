"""The genome vault core: Shamir over GF(2^8), chunk tree, tamper location, sealing, event.

Shamir is checked against the independent ``galois`` package and a pure-Python field;
the restore and tamper tests go through the same streaming code the hub uses.
"""

from __future__ import annotations

import io
import itertools
import os
from collections import Counter

import fastavro
import galois
import numpy as np
import pytest
from cryptography.exceptions import InvalidSignature, InvalidTag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcvhub.schemas.catalog import load_catalog
from pcvhub.trust.merkle import root_of
from pcvhub.vault import gf256, shamir, xorshare
from pcvhub.vault.chunks import ChunkTree, changed_chunks
from pcvhub.vault.randomness import AesCtrDrbg, OsRandomness
from pcvhub.vault.sealing import (
    SEALING_HPKE,
    SEALING_OTP,
    OneTimePadLink,
    PadExhausted,
    SiteKeyPair,
    open_sealed,
    seal,
    share_context,
)
from pcvhub.vault.shamir import ShamirSplitter, interpolate
from pcvhub.vault.stream import Manifest, RestoreRefused, restore_stream, split_stream
from pcvhub.vault.vault import Site, put, sealed_source

GF = galois.GF(2**8, irreducible_poly=0x11B)
FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


SCHEMES = [shamir.SCHEME, xorshare.SCHEME]


def _split_in_memory(data: bytes, k: int, n: int, chunk_size: int, randomness=None,
                     scheme: str = shamir.SCHEME):
    shares: dict[tuple[int, int], bytes] = {}
    manifest = split_stream(io.BytesIO(data), lambda s, c, b: shares.__setitem__((s, c), bytes(b)),
                            k=k, n=n, chunk_size=chunk_size,
                            randomness=randomness or AesCtrDrbg(os.urandom(32)), scheme=scheme)
    return manifest, shares


def _restore(manifest, shares, usable=None):
    out = bytearray()

    def source(s, c):
        return shares.get((s, c)) if usable is None or s in usable else None

    report = restore_stream(manifest, source, out.extend, expected_root=manifest.root)
    return bytes(out), report


# -- the field ----------------------------------------------------------------------------

def test_field_multiply_matches_galois() -> None:
    for a, b in itertools.product(range(256), repeat=2):
        assert gf256.mul(a, b) == int(GF(a) * GF(b))


@given(st.binary(min_size=8, max_size=512).filter(lambda b: len(b) % 8 == 0),
       st.integers(0, 255))
@FAST
def test_kernel_multiply_accumulate_matches_galois(data: bytes, c: int) -> None:
    dst = np.frombuffer(os.urandom(len(data)), np.uint64).copy()
    expected = GF(dst.view(np.uint8)) + GF(np.frombuffer(data, np.uint8)) * GF(c)
    gf256.mul_xor_into(dst, np.frombuffer(data, np.uint64), gf256.planes(c))
    assert np.array_equal(dst.view(np.uint8), np.asarray(expected))


@given(st.binary(min_size=8, max_size=512).filter(lambda b: len(b) % 8 == 0),
       st.integers(1, 16))
@FAST
def test_small_point_kernels_match_galois(data: bytes, x: int) -> None:
    base = np.frombuffer(os.urandom(len(data)), np.uint64)
    src = np.frombuffer(data, np.uint64)
    outs = [np.empty_like(src) for _ in range(3)]
    gf256.mul_small_xor_into(outs[0], base, src, x)
    assert np.array_equal(outs[0].view(np.uint8),
                          np.asarray(GF(base.view(np.uint8)) + GF(src.view(np.uint8)) * GF(x)))
    gf256.mul_small_xor_into3(outs[0], outs[1], outs[2], base, src, x)
    for t, out in enumerate(outs):
        expected = GF(base.view(np.uint8)) + GF(src.view(np.uint8)) * GF(x + t)
        assert np.array_equal(out.view(np.uint8), np.asarray(expected))


@given(st.binary(min_size=16, max_size=512).filter(lambda b: len(b) % 16 == 0),
       st.integers(0, 255))
@FAST
def test_two_point_kernel_matches_galois(data: bytes, w: int) -> None:
    a, b = np.frombuffer(data, np.uint64).reshape(2, -1)
    out = np.empty_like(a)
    gf256.two_point_into(out, a, b, gf256.planes(w))
    ga, gb = GF(a.view(np.uint8)), GF(b.view(np.uint8))
    assert np.array_equal(out.view(np.uint8), np.asarray(ga + GF(w) * (ga + gb)))


# -- Shamir -------------------------------------------------------------------------------

@given(data=st.binary(min_size=1, max_size=3000), k=st.integers(2, 5), extra=st.integers(0, 4),
       seed=st.binary(min_size=32, max_size=32))
@FAST
def test_shares_are_polynomial_values_and_any_k_restore(data, k, extra, seed) -> None:
    n = k + extra
    shares = [bytes(s) for s in ShamirSplitter(k, n, AesCtrDrbg(seed), len(data)).split(data)]
    # independent check with galois: the shares lie on one polynomial of degree < k
    # through (0, data): interpolating k of them with galois gives the data at 0
    ys = np.array([np.frombuffer(s, np.uint8) for s in shares[:k]])
    xs = GF(np.arange(1, k + 1))
    for byte in range(0, len(data), max(1, len(data) // 7)):
        poly = galois.lagrange_poly(xs, GF(ys[:, byte]))
        assert int(poly(GF(0))) == data[byte]
    for subset in itertools.combinations(range(1, n + 1), k):
        assert bytes(interpolate({x: shares[x - 1] for x in subset})) == data


def test_k_minus_one_shares_have_the_same_distribution_for_two_inputs() -> None:
    """Not an erasure code: with OS randomness, k-1 shares of all-zero and of all-0xFF
    input are identically (uniformly) distributed. A chi-square test on byte counts of
    many one-byte splits would fail for any systematic code, whose share 1 is the input."""
    for k, n in ((2, 3), (3, 5)):
        counts = []
        for secret in (b"\x00" * 4096, b"\xff" * 4096):
            splitter = ShamirSplitter(k, n, OsRandomness(), len(secret))
            tally: Counter[bytes] = Counter()
            for _ in range(16):
                shares = splitter.split(secret)
                # the first k-1 shares, read as pairs of bytes across shares
                joint = np.stack([np.frombuffer(shares[i], np.uint8) for i in range(k - 1)])
                tally.update(joint.T.tobytes()[j:j + k - 1]
                             for j in range(0, joint.size, k - 1))
            counts.append(tally)
        # each share alone: 256 byte values, expected 256 each; chi-square df 255
        for tally in counts:
            singles = Counter(key[0] for key in tally.elements())
            observed = np.array([singles.get(v, 0) for v in range(256)])
            chi2 = ((observed - observed.mean()) ** 2 / observed.mean()).sum()
            assert chi2 < 370, chi2  # p ~ 1e-5 at df 255
        # and the two inputs give the same distribution (two-sample chi-square)
        a = np.array([Counter(x[0] for x in counts[0].elements()).get(v, 0) for v in range(256)])
        b = np.array([Counter(x[0] for x in counts[1].elements()).get(v, 0) for v in range(256)])
        two_sample = (((a - b) ** 2) / np.maximum(a + b, 1)).sum()
        assert two_sample < 370, two_sample


def test_the_distribution_test_catches_an_erasure_code() -> None:
    """The same statistic on a systematic code's first share (the input itself) fails."""
    zeros = np.zeros(65536, np.uint8)
    observed = np.bincount(zeros, minlength=256)
    chi2 = ((observed - observed.mean()) ** 2 / observed.mean()).sum()
    assert chi2 > 370


def _rank(masks: list[int]) -> int:
    """Rank over GF(2) of rows given as bit masks."""
    rank, rows = 0, list(masks)
    while rows:
        pivot = rows.pop()
        if pivot:
            rank += 1
            low = pivot & -pivot
            rows = [r ^ pivot if r & low else r for r in rows]
    return rank


@pytest.mark.parametrize("n", range(2, 8))
def test_xor_scheme_k_minus_one_shares_are_uniform_and_any_k_determine_the_chunk(n) -> None:
    """Exact, by rank: for every (k-1)-subset, the random parts of its pieces are linearly
    independent, so those pieces are uniform whatever the chunk (perfect secrecy); every
    k-subset solves for each piece of the chunk."""
    p = xorshare.prime_for(n)
    for k in range(2, n + 1):
        masks = xorshare._unknown_masks(k, n)
        random_part = ~((1 << (p - 1)) - 1)
        for subset in itertools.combinations(range(n), k - 1):
            rows = [m & random_part for i in subset for m in masks[i]]
            assert _rank(rows) == len(rows), (k, n, subset)
        for subset in itertools.combinations(range(1, n + 1), k):
            assert len(xorshare.plan(k, n, subset)) == p - 1
        with pytest.raises(xorshare.NotRecoverable):
            xorshare.plan(k, n, tuple(range(1, k)))


def test_the_rank_check_catches_too_little_randomness() -> None:
    """The same check fails for a 3-of-5 split built with the randomness of a 2-of-5 one:
    two of its shares then leak (XOR of their pieces cancels the single random row)."""
    n, p = 5, xorshare.prime_for(5)
    masks = xorshare._unknown_masks(2, n)
    random_part = ~((1 << (p - 1)) - 1)
    ranks = [_rank([m & random_part for i in pair for m in masks[i]])
             for pair in itertools.combinations(range(n), 2)]
    assert max(ranks) < 2 * (p - 1)


def test_xor_k_minus_one_shares_have_the_same_distribution_for_two_inputs() -> None:
    """As for Shamir: with OS randomness, one share of all-zero and of all-0xFF input have
    the same, uniform, byte distribution (chi-square, and two-sample chi-square)."""
    for k, n in ((2, 3), (3, 5)):
        histograms = []
        for secret in (b"\x00" * 4096, b"\xff" * 4096):
            splitter = xorshare.XorSplitter(k, n, OsRandomness(), len(secret))
            observed = np.zeros(256, np.int64)
            for _ in range(16):
                for share in splitter.split(secret)[:k - 1]:
                    observed += np.bincount(np.frombuffer(share, np.uint8), minlength=256)
            chi2 = ((observed - observed.mean()) ** 2 / observed.mean()).sum()
            assert chi2 < 370, chi2
            histograms.append(observed)
        a, b = histograms
        assert (((a - b) ** 2) / np.maximum(a + b, 1)).sum() < 370


def test_parameters_are_checked() -> None:
    for k, n in ((1, 3), (4, 3), (2, 17)):
        with pytest.raises(ValueError):
            ShamirSplitter(k, n, OsRandomness(), 16)


# -- streaming split and restore, the chunk tree -----------------------------------------

@pytest.mark.parametrize("scheme", SCHEMES)
@given(data=st.binary(min_size=0, max_size=5000), chunk=st.integers(1, 700),
       k=st.integers(2, 4), extra=st.integers(0, 2))
@FAST
def test_any_k_of_n_restore_the_stream_byte_for_byte(scheme, data, chunk, k, extra) -> None:
    n = k + extra
    manifest, shares = _split_in_memory(data, k, n, chunk, scheme=scheme)
    assert manifest.scheme == scheme
    assert manifest.tree.chunk_count == -(-len(data) // chunk)
    assert manifest.root == ChunkTree.of_bytes(data, chunk).root
    for usable in itertools.combinations(range(1, n + 1), k):
        restored, report = _restore(manifest, shares, set(usable))
        assert restored == data and not report.bad_shares


@pytest.mark.parametrize("scheme", SCHEMES)
@given(data=st.binary(min_size=1, max_size=3000), chunk=st.integers(16, 600),
       where=st.floats(0, 1, exclude_max=True), share=st.integers(1, 3),
       flip=st.integers(1, 255))
@FAST
def test_a_flipped_byte_in_any_share_is_named_and_recovered(scheme, data, chunk, where, share,
                                                            flip) -> None:
    manifest, shares = _split_in_memory(data, 2, 3, chunk, scheme=scheme)
    offset = int(where * len(data))
    chunk_index, in_chunk = divmod(offset, chunk)
    bad = bytearray(shares[(share, chunk_index)])
    bad[in_chunk] ^= flip
    shares[(share, chunk_index)] = bytes(bad)
    restored, report = _restore(manifest, shares)
    assert restored == data
    if share <= 2:  # shares 1 and 2 are the fast path; a bad share 3 is never read
        assert [(b.share_index, b.chunk_index, b.start, b.end) for b in report.bad_shares] == [
            (share, chunk_index, in_chunk, in_chunk + 1)]
    else:
        assert not report.bad_shares


def test_with_k_above_2_an_xor_share_outside_the_good_set_is_named_whole() -> None:
    data = os.urandom(900)
    manifest, shares = _split_in_memory(data, 3, 4, 300, scheme=xorshare.SCHEME)
    bad = bytearray(shares[(2, 1)])
    bad[5] ^= 0x40
    shares[(2, 1)] = bytes(bad)
    restored, report = _restore(manifest, shares)
    assert restored == data
    length = xorshare.share_length(300, 4)
    assert [(b.share_index, b.chunk_index, b.start, b.end) for b in report.bad_shares] == [
        (2, 1, 0, length)]


def test_an_unknown_scheme_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown sharing scheme 'rot13'"):
        _split_in_memory(b"x", 2, 3, 16, scheme="rot13")


def test_with_no_consistent_set_the_restore_refuses_and_lists_the_chunks() -> None:
    data = os.urandom(1000)
    manifest, shares = _split_in_memory(data, 2, 3, 100)
    for s in (1, 2):
        shares[(s, 4)] = bytes(b ^ 1 for b in shares[(s, 4)])
    shares[(3, 7)] = b""  # wrong length at chunk 7: named, chunk 7 still restores
    shares[(1, 7)] = bytes(b ^ 2 for b in shares[(1, 7)])
    with pytest.raises(RestoreRefused) as refused:
        _restore(manifest, shares)
    assert refused.value.report.bad_chunks == [4, 7]


def test_a_forged_leaf_list_is_refused_against_the_event_root() -> None:
    manifest, shares = _split_in_memory(os.urandom(300), 2, 3, 100)
    forged = ChunkTree(100, 300, (manifest.tree.leaf_hashes[0],) * 3)
    with pytest.raises(ValueError, match="leaf list"):
        forged.check_root(manifest.root)
    assert manifest.root == root_of(list(manifest.tree.leaf_hashes))


def test_an_altered_epitope_in_a_design_file_is_named() -> None:
    epitopes = ["SIINFEKL", "GILGFVFTL", "NLVPMVATV", "KVAELVHFL", "YLQPRTFLL"]
    design = "".join(f">ep{i}\n{e}\n" for i, e in enumerate(epitopes)).encode()
    tree = ChunkTree.of_bytes(design, 8)
    altered = design.replace(b"NLVPMVATV", b"NLVPMVAKV")
    [changed] = changed_chunks(tree, altered)
    at = design.index(b"NLVPMVATV") + 7
    assert changed.start <= at < changed.end
    assert changed_chunks(tree, design) == []


# -- sealing and the event ----------------------------------------------------------------

def test_sealed_shares_are_bound_to_coi_chunk_and_share_index() -> None:
    site = SiteKeyPair.generate()
    context = share_context("COI-1", 5, 2)
    sealed = seal(b"share bytes", site.public, context)
    assert open_sealed(sealed, site, context) == b"share bytes"
    for other in (share_context("COI-2", 5, 2), share_context("COI-1", 6, 2),
                  share_context("COI-1", 5, 3)):
        with pytest.raises(InvalidTag):
            open_sealed(sealed, site, other)
    # the stored form of the private key (ML-KEM seed + X25519 key) opens it too
    again = SiteKeyPair(site.mlkem_seed, site.x25519_private)
    assert open_sealed(sealed, again, context) == b"share bytes"


def test_put_seals_per_site_and_losing_one_site_loses_nothing() -> None:
    keys = [SiteKeyPair.generate() for _ in range(3)]
    sites = [Site(f"site-{i}", k.public, f"vault://site-{i}/x") for i, k in enumerate(keys, 1)]
    data = os.urandom(5000)
    stored: dict[tuple[int, int], bytes] = {}
    manifest, payload = put(io.BytesIO(data), "COI-9", sites,
                            lambda s, c, b: stored.__setitem__((s, c), b), chunk_size=1024)
    assert payload["root_hash"] == manifest.root.hex() and payload["chunk_count"] == 5
    assert payload["security"] == "INFORMATION_THEORETIC"
    assert [s["site_id"] for s in payload["shares"]] == ["site-1", "site-2", "site-3"]
    assert data[:64] not in b"".join(stored.values())
    # site 1 is lost; sites 2 and 3 restore
    source = sealed_source("COI-9", lambda s, c: stored.get((s, c)), {2: keys[1], 3: keys[2]})
    out = bytearray()
    restore_stream(manifest, source, out.extend, expected_root=bytes.fromhex(payload["root_hash"]))
    assert bytes(out) == data
    # a sealed share altered at rest fails its tag and is named; another set restores
    stored[(2, 3)] = stored[(2, 3)][:-1] + bytes([stored[(2, 3)][-1] ^ 1])
    source = sealed_source("COI-9", lambda s, c: stored.get((s, c)), dict(enumerate(keys, 1)))
    out = bytearray()
    report = restore_stream(manifest, source, out.extend)
    assert bytes(out) == data
    assert [(b.share_index, b.chunk_index) for b in report.bad_shares] == [(2, 3)]


def test_a_put_with_the_xor_scheme_names_it_and_restores_from_any_two_sites() -> None:
    keys = [SiteKeyPair.generate() for _ in range(3)]
    sites = [Site(f"site-{i}", k.public, f"vault://site-{i}/x") for i, k in enumerate(keys, 1)]
    data = os.urandom(2500)
    stored: dict[tuple[int, int], bytes] = {}
    manifest, payload = put(io.BytesIO(data), "COI-X", sites,
                            lambda s, c, b: stored.__setitem__((s, c), b), chunk_size=1000,
                            scheme=xorshare.SCHEME)
    assert payload["scheme"] == manifest.scheme == "xor-kurihara"
    assert payload["security"] == "INFORMATION_THEORETIC"
    assert fastavro.validate(payload, load_catalog().schema("GenomeStored").parsed,
                             raise_errors=True)
    for held in ({1: keys[0], 3: keys[2]}, {2: keys[1], 3: keys[2]}):
        source = sealed_source("COI-X", lambda s, c: stored.get((s, c)), held)
        out = bytearray()
        restore_stream(Manifest.from_json(manifest.to_json()), source, out.extend,
                       expected_root=bytes.fromhex(payload["root_hash"]))
        assert bytes(out) == data


def test_the_payload_matches_the_genome_stored_schema() -> None:
    key = SiteKeyPair.generate()
    sites = [Site(f"s{i}", key.public, f"ref{i}") for i in range(3)]
    _, payload = put(io.BytesIO(b"x" * 100), "COI", sites, lambda *a: None, chunk_size=64,
                     randomness=AesCtrDrbg())
    assert payload["security"] == "COMPUTATIONAL" and payload["randomness"] == "drbg-aes256-ctr"
    schema = load_catalog().schema("GenomeStored").parsed
    assert fastavro.validate(payload, schema, raise_errors=True)


def test_one_time_pad_link_consumes_its_budget_byte_for_byte() -> None:
    pad = os.urandom(200)
    sender, receiver = OneTimePadLink(pad), OneTimePadLink(pad)
    context = share_context("COI", 0, 1)
    sealed = sender.seal(b"a" * 50, context)
    assert sender.remaining == 200 - 32 - 50
    assert receiver.open(sealed, context) == b"a" * 50
    with pytest.raises(PadExhausted):
        sender.seal(b"b" * 100, context)
    assert sender.remaining == 118  # a refused message uses no pad
    tampered = OneTimePadLink(pad)
    with pytest.raises(InvalidSignature):
        tampered.open(sealed[:20] + bytes([sealed[20] ^ 1]) + sealed[21:], context)


def _otp_sites():
    keys = [SiteKeyPair.generate() for _ in range(3)]
    return keys, [Site(f"site-{i}", k.public, f"vault://site-{i}/x") for i, k in enumerate(keys, 1)]


def test_a_put_over_a_pad_link_consumes_its_budget_byte_for_byte() -> None:
    keys, sites = _otp_sites()
    data = os.urandom(5000)  # 5 chunks of 1024 bytes, the last one 904
    needed = 5 * OneTimePadLink.TAG_KEY + 5000
    pad = os.urandom(needed + 7)
    hub_end, site_end = OneTimePadLink(pad, "hub -> site-2"), OneTimePadLink(pad)
    hpke_sealed: dict[tuple[int, int], bytes] = {}
    kept_by_site_2: dict[tuple[int, int], bytes] = {}

    def deliver(share_index: int, chunk_index: int, sealed: bytes) -> None:
        if share_index == 2:  # site 2 opens on arrival with its end of the link
            context = share_context("COI-7", chunk_index, 2)
            kept_by_site_2[(2, chunk_index)] = site_end.open(sealed, context)
        else:
            hpke_sealed[(share_index, chunk_index)] = sealed

    manifest, payload = put(io.BytesIO(data), "COI-7", sites, deliver, chunk_size=1024,
                            links={2: hub_end})
    assert hub_end.remaining == site_end.remaining == 7
    assert [(s["sealing"], s["recipient_key_id"] is None) for s in payload["shares"]] == [
        (SEALING_HPKE, False), (SEALING_OTP, True), (SEALING_HPKE, False)]
    assert fastavro.validate(payload, load_catalog().schema("GenomeStored").parsed,
                             raise_errors=True)
    # site 3 is lost: share 1 (HPKE) and share 2 (kept by site 2) restore
    opened = sealed_source("COI-7", lambda s, c: hpke_sealed.get((s, c)), {1: keys[0]})
    out = bytearray()
    restore_stream(manifest, lambda s, c: kept_by_site_2.get((s, c)) if s == 2 else opened(s, c),
                   out.extend, expected_root=manifest.root)
    assert bytes(out) == data


def test_a_put_that_would_run_a_pad_dry_is_refused_with_nothing_sent() -> None:
    _, sites = _otp_sites()
    data = os.urandom(3000)
    needed = 3 * OneTimePadLink.TAG_KEY + 3000
    enough = OneTimePadLink(os.urandom(needed), "hub -> site-1")
    short = OneTimePadLink(os.urandom(needed - 1), "hub -> site-3")
    sent: list[tuple[int, int]] = []
    with pytest.raises(PadExhausted) as refused:
        put(io.BytesIO(data), "COI-8", sites, lambda s, c, b: sent.append((s, c)),
            chunk_size=1024, links={1: enough, 3: short})
    message = str(refused.value)
    assert "hub -> site-3 (share 3, site site-3)" in message and "short by 1" in message
    assert "site-1" not in message.split(":", 1)[1]
    assert sent == [] and enough.remaining == needed and short.remaining == needed - 1
    with pytest.raises(ValueError, match="only 3 sites"):
        put(io.BytesIO(data), "COI-8", sites, lambda *a: None, links={4: enough})
