"""The vault on the real broker: put records the share map, get needs the patient's token.

Given a therapy sequenced on a real gatekeeper (its patient's card bound, genome storage
consented) and three site processes, when the lab puts the genome, then ``GenomeStored``
with the share map is on the canonical log; when the design service gets it with the
patient's token, the file comes back whole, ``GenomeRestored`` is on the log and a second
get on the same token is refused before any share is fetched, leaving no file.
"""

from __future__ import annotations

import os

import pytest

from pcvhub.streams.sandbox import PASSPHRASE, Sandbox
from pcvhub.trust.issuer import now_us
from pcvhub.trust.keys import KeyStore
from pcvhub.trust.registry import Actor, registration_payload
from pcvhub.vault.local_sites import LocalSites
from pcvhub.vault.service import RestoreDenied, VaultService

from ..unit.therapy_builder import Hub, TherapyScenario

pytestmark = pytest.mark.kafka

LAB, DESIGNER = "vault-genolab", "vault-neoai"


@pytest.fixture(scope="module")
def sequenced(kafka, settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("vault-hub")
    hub = Sandbox.create(settings, kafka.bootstrap_servers, root)
    builder = Hub()
    builder.deploy_gatekeeper(hub)
    store = KeyStore(hub.settings.data_dir / "keys", PASSPHRASE.encode())
    for actor, role, site in ((LAB, "SEQUENCING_LAB", "GENOLAB"),
                              (DESIGNER, "DESIGN_SERVICE", "NEOAI")):
        key = store.create(actor, str(now_us()))
        builder.admit(builder.registry_event("ActorRegistered", registration_payload(
            Actor(actor, actor, frozenset({role}), site), key.key_id, key.keys.public,
            builder.clock_us)))
    scenario = TherapyScenario(builder)
    scenario.run_until("sequence")
    worker = hub.start_worker()
    hub.send([(e.coi.encode(), e.raw) for e in builder.registry_log])
    assert hub.wait_answered(len(builder.registry_log), 180, worker) == \
        len(builder.registry_log), hub.worker_log()
    hub.send([(e.coi.encode(), e.raw) for e in scenario.log])
    expected = len(builder.registry_log) + len(scenario.log)
    assert hub.wait_answered(expected, 180, worker) == expected, hub.worker_log()
    assert hub.count("rejected") == 0, hub.worker_log()
    pytest.MonkeyPatch().setenv("PCVHUB_KEY_PASSPHRASE", PASSPHRASE)
    with LocalSites(root / "sites", ["site-kyoto", "site-tohoku", "site-nict"]) as sites:
        yield hub, scenario, sites
    hub.stop_all()


def test_put_records_the_share_map_and_get_needs_a_fresh_token(sequenced, tmp_path) -> None:
    hub, scenario, sites = sequenced
    genome = tmp_path / "tumour.cram"
    data = os.urandom(300_000)
    genome.write_bytes(data)
    with VaultService.open(LAB, "GENOLAB", sites.registry_dir, hub.settings) as lab:
        result, outcome = lab.put(genome, scenario.coi, k=2, n=3, chunk_size=64 * 1024)
    assert outcome.accepted, f"{outcome.code} {outcome.reason}\n{hub.worker_log()[-3000:]}"
    assert {s["site_id"] for s in result.payload["shares"]} == set(sites.site_ids)

    token = scenario.card.consent_token(scenario.coi, "NEOANTIGEN_REDESIGN", DESIGNER,
                                        now_us() + 15 * 60_000_000)
    out = tmp_path / "restored.cram"
    with VaultService.open(DESIGNER, "NEOAI", sites.registry_dir, hub.settings) as design:
        assert design.wait_folded(scenario.coi, lambda record: record.latest is not None)
        with pytest.raises(RestoreDenied) as wrong:
            design.get(scenario.coi, "RESEARCH_EXPORT", token, out)
        assert wrong.value.code == "TOKEN_WRONG_PURPOSE" and not out.exists()
        payload = design.get(scenario.coi, "NEOANTIGEN_REDESIGN", token, out)
        assert out.read_bytes() == data
        assert payload["root_hash"] == result.payload["root_hash"]
        assert len(payload["sites_used"]) == 2
        out.unlink()
        assert design.wait_folded(scenario.coi, lambda record: token.nonce in record.spent)
        with pytest.raises(RestoreDenied) as again:
            design.get(scenario.coi, "NEOANTIGEN_REDESIGN", token, out)
        assert again.value.code == "TOKEN_SPENT" and not out.exists()
