"""Put a file to real storage sites and get it back: the core's split and restore, over TLS.

:func:`put_to_sites` streams a file through :func:`pcvhub.vault.vault.put`; each sealed share
goes to its site on that site's own uploader thread (a bounded queue, so memory stays a few
chunks per site). Written as steps, each after the one before succeeded everywhere:

1. every share of every chunk is staged at its site (a site keeps nothing it could serve yet);
2. every site commits the object (the manifest goes beside its shares);
3. only then does the caller get the ``GenomeStored`` payload: the share map it records.

If any site fails in step 1 or 2, every site is told to drop the object (staged or
committed) and :class:`PutFailed` names the site and its answer: there is never a share map
for a put that did not complete, and never a map naming a site that does not hold its share.

:func:`get_from_sites` asks the sites for the shares (each resealed by its site to a one-time
key made for this restore), restores through :func:`~pcvhub.vault.stream.restore_stream`
against the root from the log, and names any site whose share was missing or bad.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag

from pcvhub.vault.chunks import DEFAULT_CHUNK_SIZE
from pcvhub.vault.client import SiteClient, SiteUnavailable
from pcvhub.vault.randomness import Randomness
from pcvhub.vault.sealing import SiteKeyPair, open_sealed, share_context
from pcvhub.vault.shamir import SCHEME as SHAMIR
from pcvhub.vault.site import SiteRegistration
from pcvhub.vault.stream import Manifest, RestoreReport, ShareTampered, restore_stream
from pcvhub.vault.vault import Site, put

_DONE = object()


class PutFailed(RuntimeError):
    """A put did not reach every site; every site was told to drop it (nothing recorded)."""


def storage_ref(site_id: str, obj: str, share_index: int) -> str:
    return f"vault://{site_id}/{obj}/{share_index}"


def parse_storage_ref(ref: str) -> tuple[str, str, int]:
    """(site id, object id, share index) of a share map's ``storage_ref``."""
    if not ref.startswith("vault://"):
        raise ValueError(f"storage_ref {ref!r} is not a vault:// reference")
    site_id, obj, share = ref[len("vault://"):].split("/")
    return site_id, obj, int(share)


class _Uploader(threading.Thread):
    """One site's upload queue: shares go out in order on one keep-alive connection."""

    def __init__(self, client: SiteClient, obj: str, depth: int = 4) -> None:
        super().__init__(name=f"vault-upload-{client.site_id}", daemon=True)
        self.client, self.obj = client, obj
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.error: Exception | None = None

    def run(self) -> None:
        while (item := self.queue.get()) is not _DONE:
            if self.error is None:  # after a failure, drain without sending
                share, chunk, sealed = item
                try:
                    self.client.stage(self.obj, share, chunk, sealed)
                except Exception as exc:  # noqa: BLE001 - any failure fails the put, named
                    self.error = exc if isinstance(exc, SiteUnavailable) else SiteUnavailable(
                        f"site {self.client.site_id}: {type(exc).__name__}: {exc}")

    def send(self, share: int, chunk: int, sealed: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((share, chunk, sealed))


@dataclass
class PutResult:
    object_id: str
    manifest: Manifest
    payload: dict[str, Any]  # the GenomeStored payload
    groups: dict[str, str | None] = field(default_factory=dict)  # site -> TLS group


def put_to_sites(source: BinaryIO, coi: str, sites: Sequence[SiteRegistration], k: int = 2,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, randomness: Randomness | None = None,
                 on_chunk: Callable[[int], None] | None = None,
                 scheme: str = SHAMIR) -> PutResult:
    """Split ``source`` k-of-len(sites), share i to ``sites[i - 1]`` (see the module doc)."""
    obj = uuid.uuid4().hex
    clients = [SiteClient(r) for r in sites]
    uploaders = [_Uploader(c, obj) for c in clients]
    core_sites = [Site(r.site_id, r.public_key, storage_ref(r.site_id, obj, i))
                  for i, r in enumerate(sites, start=1)]
    for u in uploaders:
        u.start()
    try:
        # step 1: stage every share
        try:
            manifest, payload = put(source, coi, core_sites,
                                    lambda s, c, sealed: uploaders[s - 1].send(s, c, sealed),
                                    k=k, chunk_size=chunk_size, randomness=randomness,
                                    on_chunk=on_chunk, scheme=scheme)
        finally:
            for u in uploaders:
                u.queue.put(_DONE)
            for u in uploaders:
                u.join()
        failed = [u for u in uploaders if u.error is not None]
        if failed:
            raise PutFailed("; ".join(str(u.error) for u in failed))
        # step 2: commit everywhere (the manifest holds no secret: the chunk tree's leaves)
        body = manifest.to_json().encode()
        for client in clients:
            client.commit(obj, body)
    except (PutFailed, SiteUnavailable) as exc:
        _drop_everywhere(clients, obj)
        raise PutFailed(f"put of {coi} to {len(sites)} sites failed, nothing is recorded and "
                        f"every reachable site dropped object {obj}: {exc}") from exc
    except BaseException:
        _drop_everywhere(clients, obj)
        raise
    groups = {c.site_id: c.negotiated_group for c in clients}
    for c in clients:
        c.close()
    # step 3: the share map, for the caller to record
    return PutResult(obj, manifest, payload, groups)


def _drop_everywhere(clients: Sequence[SiteClient], obj: str) -> None:
    for client in clients:
        for drop in (client.abort, client.delete):
            try:
                drop(obj)
            except SiteUnavailable:
                pass  # a site that is down holds at most staged shares, never served
        client.close()


@dataclass
class GetResult:
    report: RestoreReport
    manifest: Manifest
    sites_used: list[str]
    unreachable: dict[str, str]  # site -> why


def get_from_sites(genome_stored: Mapping[str, Any], coi: str,
                   sites: Mapping[str, SiteRegistration], write: Callable[[memoryview], object],
                   token_nonce: str,
                   on_chunk: Callable[[int], None] | None = None) -> GetResult:
    """Restore the file that ``genome_stored`` (the payload on the log) describes.

    ``sites``: the registrations by site id. The manifest comes from the first site that
    has one; its leaves are checked against the root on the log before any share is used.
    """
    restore_key = SiteKeyPair.generate()  # one-time: this restore's shares are sealed to it
    private = restore_key.hpke_key()
    public = restore_key.public.mlkem + restore_key.public.x25519
    located: dict[int, tuple[SiteClient, str]] = {}
    unreachable: dict[str, str] = {}
    manifest: Manifest | None = None
    for entry in genome_stored["shares"]:
        site_id, obj, share = parse_storage_ref(entry["storage_ref"])
        registration = sites.get(site_id)
        if registration is None:
            unreachable[site_id] = "no registration known for this site"
            continue
        client = SiteClient(registration)
        located[share] = (client, obj)
        if manifest is None:
            try:
                found = client.manifest(obj)
            except SiteUnavailable as exc:
                unreachable[site_id] = str(exc)
                continue
            if found is not None:
                candidate = Manifest.from_json(found.decode())
                if candidate.root.hex() == genome_stored["root_hash"]:
                    manifest = candidate
    if manifest is None:
        raise SiteUnavailable(f"no site holds a manifest of {coi} matching root "
                              f"{genome_stored['root_hash'][:16]}…; unreachable: {unreachable}")
    used: set[str] = set()
    # the first k located shares of each chunk are fetched ahead, one thread per site, the
    # next chunk while this one is rebuilt; the others only when a chunk needs them
    ahead = sorted(located)[:manifest.k]
    pool = ThreadPoolExecutor(max_workers=len(located) or 1, thread_name_prefix="vault-get")
    pending: dict[tuple[int, int], Future[bytes | None]] = {}

    def fetch(share_index: int, chunk_index: int) -> bytes | None:
        client, obj = located[share_index]
        try:
            sealed = client.share(obj, share_index, chunk_index, coi, public, token_nonce)
        except SiteUnavailable as exc:
            unreachable.setdefault(client.site_id, str(exc))
            return None
        if sealed is None:
            return None
        try:
            share = open_sealed(sealed, private, share_context(coi, chunk_index, share_index))
        except InvalidTag as exc:
            raise ShareTampered(f"share {share_index} of chunk {chunk_index}") from exc
        used.add(client.site_id)
        return share

    def source(share_index: int, chunk_index: int) -> bytes | None:
        if share_index not in located:
            return None
        for chunk in (chunk_index, chunk_index + 1):
            if chunk < manifest.tree.chunk_count:
                for s in ahead:
                    if (s, chunk) not in pending:
                        pending[(s, chunk)] = pool.submit(fetch, s, chunk)
        if (share_index, chunk_index) not in pending:
            pending[(share_index, chunk_index)] = pool.submit(fetch, share_index, chunk_index)
        return pending.pop((share_index, chunk_index)).result()

    try:
        report = restore_stream(manifest, source, write,
                                expected_root=bytes.fromhex(genome_stored["root_hash"]),
                                on_chunk=on_chunk)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for client, _ in located.values():
            client.close()
    return GetResult(report, manifest, sorted(used), unreachable)
