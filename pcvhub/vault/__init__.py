"""The genome vault core: k-of-n secret sharing of large files, sealed per site, chunk tree.

Open :mod:`pcvhub.vault.vault` first: ``put`` (split + seal + tree + the ``GenomeStored``
payload) and ``sealed_source`` (the way back). Then, from the outside in:
:mod:`~pcvhub.vault.stream` (chunked split and restore, tamper location),
:mod:`~pcvhub.vault.chunks` (the RFC 9162 chunk tree), :mod:`~pcvhub.vault.shamir`
(Shamir over GF(2^8) on whole chunks), :mod:`~pcvhub.vault.xorshare` (an XOR-only threshold
scheme, the other choice), :mod:`~pcvhub.vault.gf256` (the field and its
vectorised kernels), :mod:`~pcvhub.vault.randomness` (OS randomness, information-theoretic;
AES-CTR DRBG, computational) and :mod:`~pcvhub.vault.sealing` (HPKE X-Wing, one-time pads).

Storage sites: :mod:`~pcvhub.vault.site` (one site: its folder, keys and HTTPS service),
:mod:`~pcvhub.vault.pqtls` (TLS with X25519MLKEM768 via pyOpenSSL), :mod:`~pcvhub.vault.client`
(talking to one site), :mod:`~pcvhub.vault.placement` (share control),
:mod:`~pcvhub.vault.remote` (put to and get from sites), :mod:`~pcvhub.vault.restore_gate`
(the patient's token judged on the log), :mod:`~pcvhub.vault.service` (put and get as an actor
on the hub's log) and :mod:`~pcvhub.vault.local_sites` (sites as local processes).
"""
