"""The genome vault core: k-of-n secret sharing of large files, sealed per site, chunk tree.

Open :mod:`pcvhub.vault.vault` first: ``put`` (split + seal + tree + the ``GenomeStored``
payload) and ``sealed_source`` (the way back). Then, from the outside in:
:mod:`~pcvhub.vault.stream` (chunked split and restore, tamper location),
:mod:`~pcvhub.vault.chunks` (the RFC 9162 chunk tree), :mod:`~pcvhub.vault.shamir`
(Shamir over GF(2^8) on whole chunks), :mod:`~pcvhub.vault.xorshare` (an XOR-only threshold
scheme, the other choice), :mod:`~pcvhub.vault.gf256` (the field and its
vectorised kernels), :mod:`~pcvhub.vault.randomness` (OS randomness, information-theoretic;
AES-CTR DRBG, computational) and :mod:`~pcvhub.vault.sealing` (HPKE X-Wing, one-time pads).
"""
