"""Putting a file into the vault and getting it back: split, seal per site, tree, event.

:func:`put` streams a file through :func:`~pcvhub.vault.stream.split_stream`, seals each
share to its site's public key (HPKE X-Wing, bound to CoI, chunk and share index) and hands
the sealed bytes to ``store``; it returns the manifest and the ``GenomeStored`` payload
(root, chunking, scheme, k, n, share map: never data). :func:`sealed_source` is the way
back: it opens sealed shares with the site keys for :func:`~pcvhub.vault.stream.restore_stream`.
Real storage sites come in the next issue; tests and the benchmark use a dict.

A share index may instead travel over a one-time-pad link (the demonstrator's stand-in for
QKD keys): ``put`` checks every link's budget for the whole file before it makes a single
share, so a put that would run a pad dry is refused with nothing sent and no pad used. The
site opens such a share on arrival with its end of the link, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag

from pcvhub.vault.chunks import DEFAULT_CHUNK_SIZE
from pcvhub.vault.randomness import Randomness
from pcvhub.vault.sealing import (
    SEALING_HPKE,
    SEALING_OTP,
    OneTimePadLink,
    PadExhausted,
    SiteKeyPair,
    SitePublicKey,
    open_sealed,
    seal,
    share_context,
)
from pcvhub.vault.shamir import SCHEME as SHAMIR
from pcvhub.vault.stream import Manifest, ShareSource, ShareTampered, split_stream

#: store(share_index, chunk_index, sealed bytes)
SealedStore = Callable[[int, int, bytes], None]
#: fetch(share_index, chunk_index) -> sealed bytes, or None when the site is unreachable
SealedFetch = Callable[[int, int], "bytes | None"]


@dataclass(frozen=True)
class Site:
    """Where one share index goes: the site's id, its public key and its storage reference."""

    site_id: str
    public_key: SitePublicKey
    storage_ref: str


def put(source: BinaryIO, coi: str, sites: list[Site], store: SealedStore, k: int = 2,
        chunk_size: int = DEFAULT_CHUNK_SIZE, randomness: Randomness | None = None,
        on_chunk: Callable[[int], None] | None = None,
        links: Mapping[int, OneTimePadLink] | None = None,
        scheme: str = SHAMIR) -> tuple[Manifest, dict[str, Any]]:
    """Split, seal and store; share index i (1-based) goes to ``sites[i - 1]``.

    ``scheme`` is a key of :data:`~pcvhub.vault.stream.SCHEMES`, named in the event.

    ``links`` maps share indices to the one-time-pad link their share travels over instead
    of HPKE; ``source`` must then be seekable, since every budget is checked up front.
    """
    links = dict(links or {})
    unknown = sorted(set(links) - set(range(1, len(sites) + 1)))
    if unknown:
        raise ValueError(f"one-time-pad links for share indices {unknown}, but there are "
                         f"only {len(sites)} sites (share indices 1..{len(sites)})")
    if links:
        _check_pad_budgets(source, chunk_size, links, sites)
    hpke_keys = {index: site.public_key.hpke_key()
                 for index, site in enumerate(sites, start=1) if index not in links}

    def seal_and_store(share_index: int, chunk_index: int, share: memoryview) -> None:
        context = share_context(coi, chunk_index, share_index)
        link = links.get(share_index)
        sealed = (link.seal(share, context) if link is not None
                  else seal(share, hpke_keys[share_index], context))
        store(share_index, chunk_index, sealed)

    manifest = split_stream(source, seal_and_store, k=k, n=len(sites), chunk_size=chunk_size,
                            randomness=randomness, on_chunk=on_chunk, scheme=scheme)
    return manifest, genome_stored_payload(manifest, sites, otp_shares=set(links))


def _check_pad_budgets(source: BinaryIO, chunk_size: int, links: Mapping[int, OneTimePadLink],
                       sites: list[Site]) -> None:
    """Refuse, before anything is split or sent, a put that some link's pad cannot cover."""
    if not source.seekable():
        raise ValueError("a put over one-time-pad links needs a seekable input: every link's "
                         "budget is checked for the whole file before the first share")
    here = source.tell()
    size = source.seek(0, 2) - here
    source.seek(here)
    # each chunk's share is as long as the chunk, plus one tag key per message
    needed = OneTimePadLink.pad_needed(size, -(-size // chunk_size))
    short = [f"{link.name} (share {index}, site {sites[index - 1].site_id}) needs "
             f"{needed:,} pad bytes, has {link.remaining:,}: short by {needed - link.remaining:,}"
             for index, link in sorted(links.items()) if link.remaining < needed]
    if short:
        raise PadExhausted(f"put of {size:,} bytes refused, nothing sent and no pad used: "
                           + "; ".join(short))


def sealed_source(coi: str, fetch: SealedFetch,
                  site_keys: Mapping[int, SiteKeyPair]) -> ShareSource:
    """A share source that opens each sealed share with its site's key (sites you hold)."""
    private = {index: key.hpke_key() for index, key in site_keys.items()}

    def source(share_index: int, chunk_index: int) -> bytes | None:
        if share_index not in private:
            return None
        sealed = fetch(share_index, chunk_index)
        if sealed is None:
            return None
        try:
            return open_sealed(sealed, private[share_index],
                               share_context(coi, chunk_index, share_index))
        except InvalidTag as exc:
            raise ShareTampered(f"share {share_index} of chunk {chunk_index}") from exc

    return source


def genome_stored_payload(manifest: Manifest, sites: list[Site],
                          otp_shares: Collection[int] = ()) -> dict[str, Any]:
    """The ``GenomeStored`` payload: where the shares are and how to check them, no data.

    ``otp_shares``: share indices sent over a one-time-pad link (no recipient key)."""
    return {
        "root_hash": manifest.root.hex(),
        "content_size": manifest.tree.size,
        "chunk_size": manifest.tree.chunk_size,
        "chunk_count": manifest.tree.chunk_count,
        "scheme": manifest.scheme,
        "randomness": manifest.randomness,
        "security": manifest.security.upper().replace("-", "_"),
        "k": manifest.k,
        "n": manifest.n,
        "shares": [{"share_index": index, "site_id": site.site_id,
                    "storage_ref": site.storage_ref,
                    "sealing": SEALING_OTP if index in otp_shares else SEALING_HPKE,
                    "recipient_key_id": (None if index in otp_shares
                                         else site.public_key.key_id)}
                   for index, site in enumerate(sites, start=1)],
    }
