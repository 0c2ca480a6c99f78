"""The vault's storage sites as real processes on loopback, and the drills.

Given three (or four) ``pcvhub vault site`` processes, each with its own folder, port and
key pair, when a file is put and got back through them, then every share travels over TLS
with X25519MLKEM768, no site holds more than one share of any chunk nor anything of the
file in the clear, and the drills hold: a site's folder deleted, one byte of one share
corrupted, a site killed in the middle of a put.
"""

from __future__ import annotations

import io
import os
import socket
import ssl
from collections.abc import Iterator

import pytest

from pcvhub.vault.client import SiteClient
from pcvhub.vault.local_sites import LocalSites
from pcvhub.vault.pqtls import PQ_GROUP
from pcvhub.vault.remote import PutFailed, get_from_sites, put_to_sites
from pcvhub.vault.site import SiteRegistration

CHUNK = 64 * 1024
COI = "PCV-KYOTO01-2026-000777"
NONCE = "ab" * 32


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSites]:
    with LocalSites(tmp_path_factory.mktemp("vault-sites"),
                    ["site-kyoto", "site-tohoku", "site-nict", "site-osaka"],
                    capacity_mib=[64, 64, 64, 1]) as running:  # osaka is nearly full
        yield running


def _three(sites: LocalSites) -> list[SiteRegistration]:
    return sites.registrations()[:3]


def _get(payload: dict, registrations: list[SiteRegistration]) -> tuple[bytes, object]:
    out = io.BytesIO()
    result = get_from_sites(payload, COI, {r.site_id: r for r in registrations}, out.write,
                            NONCE)
    return out.getvalue(), result


def test_the_sites_negotiate_x25519mlkem768(sites: LocalSites) -> None:
    for registration in sites.registrations():
        client = SiteClient(registration)
        health = client.health()
        print(f"{registration.site_id}: client {client.negotiated_group}, "
              f"site {health['tls_group']}")
        assert client.negotiated_group == PQ_GROUP and health["tls_group"] == PQ_GROUP
        client.close()


def test_a_classical_only_client_is_refused(sites: LocalSites) -> None:
    # the stdlib ssl's OpenSSL 3.0 offers no ML-KEM group: the site must close the connection
    registration = sites.registrations()[0]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((registration.host, registration.port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = tls.recv(1024)
            except (ssl.SSLError, ConnectionError):
                answer = b""
    assert b"site_id" not in answer and answer == b""


def test_a_put_through_three_sites_is_got_back_whole(sites: LocalSites) -> None:
    data = os.urandom(3 * CHUNK + 123)
    registrations = _three(sites)
    result = put_to_sites(io.BytesIO(data), COI, registrations, k=2, chunk_size=CHUNK)
    assert result.groups == {r.site_id: PQ_GROUP for r in registrations}
    assert [s["site_id"] for s in result.payload["shares"]] == [r.site_id for r in registrations]
    restored, report = _get(result.payload, registrations)
    assert restored == data
    assert report.report.bad_shares == [] and len(report.sites_used) == 2


def test_a_site_holds_one_sealed_share_per_chunk_and_nothing_in_the_clear(
        sites: LocalSites) -> None:
    data = os.urandom(2 * CHUNK)
    registrations = _three(sites)
    result = put_to_sites(io.BytesIO(data), COI, registrations, k=2, chunk_size=CHUNK)
    for index, registration in enumerate(registrations, start=1):
        stored = sites.folder(registration.site_id) / "objects" / result.object_id
        assert sorted(p.name for p in stored.iterdir() if p.is_dir()) == [str(index)]
        for share in (stored / str(index)).iterdir():
            body = share.read_bytes()
            # sealed: no run of 32 file bytes appears in any stored share
            assert all(data[i:i + 32] not in body for i in range(0, len(data), 4096))
        assert not (sites.folder(registration.site_id) / "staging" / result.object_id).exists()


def test_drill_a_site_folder_deleted_the_file_is_restored_from_the_others(
        sites: LocalSites) -> None:
    data = os.urandom(2 * CHUNK + 7)
    registrations = _three(sites)
    result = put_to_sites(io.BytesIO(data), COI, registrations, k=2, chunk_size=CHUNK)
    lost = sites.folder(registrations[0].site_id) / "objects" / result.object_id
    for path in sorted(lost.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    lost.rmdir()
    restored, report = _get(result.payload, registrations)
    assert restored == data
    assert registrations[0].site_id not in report.sites_used
    assert {chunk for share, chunk in report.report.missing if share == 1} == {0, 1, 2}


def test_drill_one_byte_of_one_share_corrupted_is_named_and_recovered(
        sites: LocalSites) -> None:
    data = os.urandom(3 * CHUNK)
    registrations = _three(sites)
    result = put_to_sites(io.BytesIO(data), COI, registrations, k=2, chunk_size=CHUNK)
    victim = (sites.folder(registrations[1].site_id) / "objects" / result.object_id / "2"
              / "1.sealed")
    body = bytearray(victim.read_bytes())
    body[len(body) // 2] ^= 0x01
    victim.write_bytes(bytes(body))
    restored, report = _get(result.payload, registrations)
    assert restored == data
    assert [(b.share_index, b.chunk_index) for b in report.report.bad_shares] == [(2, 1)]


def test_drill_a_site_killed_during_a_put_leaves_no_share_map_and_no_object(
        sites: LocalSites) -> None:
    registrations = _three(sites)
    killed = registrations[2].site_id
    chunks_done = []

    def kill_after_two(size: int) -> None:
        chunks_done.append(size)
        if len(chunks_done) == 2:
            sites.kill(killed)

    try:
        with pytest.raises(PutFailed) as refused:
            put_to_sites(io.BytesIO(os.urandom(8 * CHUNK)), COI, registrations, k=2,
                         chunk_size=CHUNK, on_chunk=kill_after_two)
        assert killed in str(refused.value) and "nothing is recorded" in str(refused.value)
        object_id = str(refused.value).split("dropped object ")[1].split(":")[0]
        for registration in registrations[:2]:
            folder = sites.folder(registration.site_id)
            assert not (folder / "objects" / object_id).exists()
            assert not (folder / "staging" / object_id).exists()
    finally:
        sites.start(killed)
        sites.wait_ready(killed)
    # the site is back (same folder, same keys, a new port) and takes puts again
    again = sites.registrations()[:3]
    result = put_to_sites(io.BytesIO(b"x" * 1000), COI, again, k=2, chunk_size=CHUNK)
    assert _get(result.payload, again)[0] == b"x" * 1000


def test_a_full_site_refuses_the_share_and_the_put_fails_cleanly(sites: LocalSites) -> None:
    kyoto, tohoku, _, osaka = sites.registrations()
    with pytest.raises(PutFailed, match="bytes free") as refused:
        put_to_sites(io.BytesIO(os.urandom(2 << 20)), COI, [kyoto, tohoku, osaka], k=2,
                     chunk_size=CHUNK)
    assert osaka.site_id in str(refused.value)
    object_id = str(refused.value).split("dropped object ")[1].split(":")[0]
    for registration in (kyoto, tohoku, osaka):
        folder = sites.folder(registration.site_id)
        assert not (folder / "objects" / object_id).exists()
        assert not (folder / "staging" / object_id).exists()
