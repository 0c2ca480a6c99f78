"""RFC 6962 / 9162 proofs of pcvhub.trust.merkle against the RFC's reference vectors and
against the definition, for every size and pair of sizes up to 40 leaves."""

from __future__ import annotations

import random

import pytest

from pcvhub.trust import merkle

# The 8-leaf reference tree of the RFC 6962 test data (Certificate Transparency's C++
# tests, kept as data in transparency-dev/merkle testonly): inputs, roots by size and the
# node hashes by level, from which the proofs below are read off.
LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")]
H = {name: bytes.fromhex(h) for name, h in {
    "l0": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "l1": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "l4": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "n1_0": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "n1_1": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "n1_2": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "n1_3": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "n2_0": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "n2_1": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
}.items()}
HASHES = [merkle.leaf_hash(leaf) for leaf in LEAVES]


def mth(hashes):
    return lambda lo, hi: merkle.root_of(hashes[lo:hi])


def test_roots_match_the_reference_tree():
    assert [merkle.root_of(HASHES[:n]) for n in range(9)] == ROOTS


@pytest.mark.parametrize(("index", "size", "path"), [
    (0, 1, []), (0, 8, ["l1", "n1_1", "n2_1"]), (5, 8, ["l4", "n1_3", "n2_0"]),
    (2, 3, ["n1_0"]), (1, 5, ["l0", "n1_1", "l4"])])
def test_inclusion_proofs_match_the_reference(index, size, path):
    proof = merkle.inclusion_proof(mth(HASHES), index, size)
    assert proof == [H[p] for p in path]
    assert merkle.root_from_path(LEAVES[index], index, size, proof) == ROOTS[size]


@pytest.mark.parametrize(("old", "new", "path"), [
    (1, 1, []), (1, 8, ["l1", "n1_1", "n2_1"]), (6, 8, ["n1_2", "n1_3", "n2_0"]),
    (2, 5, ["n1_1", "l4"])])
def test_consistency_proofs_match_the_reference(old, new, path):
    proof = merkle.consistency_proof(mth(HASHES), old, new)
    assert proof == [H[p] for p in path]
    if 0 < old < new:
        assert merkle.consistency_roots(old, new, ROOTS[old], proof) == (ROOTS[old], ROOTS[new])


def test_every_consistency_proof_up_to_40_leaves_verifies_and_a_flip_fails():
    rng = random.Random(6962)
    hashes = [merkle.leaf_hash(rng.randbytes(8)) for _ in range(40)]
    roots = [merkle.root_of(hashes[:n]) for n in range(41)]
    for new in range(1, 41):
        for old in range(1, new):
            proof = merkle.consistency_proof(mth(hashes), old, new)
            assert merkle.consistency_roots(old, new, roots[old], proof) == (roots[old],
                                                                            roots[new])
            for i in range(len(proof)):
                bad = [*proof]
                bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
                assert merkle.consistency_roots(old, new, roots[old], bad) != (roots[old],
                                                                              roots[new])
            assert merkle.consistency_roots(old, new, roots[old], [*proof, proof[0]]) is None


def test_compact_root_is_the_range_root_from_aligned_subtrees():
    rng = random.Random(1)
    hashes = [merkle.leaf_hash(rng.randbytes(4)) for _ in range(37)]

    def aligned(level, index):
        return merkle.root_of(hashes[index << level:(index + 1) << level])

    for size in range(1, 38):
        assert merkle.compact_root(aligned, 0, size) == merkle.root_of(hashes[:size])
    assert merkle.compact_root(aligned, 32, 37) == merkle.root_of(hashes[32:37])
    with pytest.raises(ValueError, match="subtree boundary"):
        merkle.compact_root(aligned, 3, 7)
