"""The gatekeeper's rules accept a ``GenomeStored`` event made by the vault for a therapy.

Given a therapy whose patient consented to genome storage and whose sequencing lab has
sequenced the sample, when the lab puts the genome into the vault and sends the
``GenomeStored`` payload that ``put`` returns, then the hub's rules accept it.
"""

from __future__ import annotations

import io
import os

from pcvhub.vault.randomness import AesCtrDrbg
from pcvhub.vault.sealing import SiteKeyPair
from pcvhub.vault.vault import Site, put

from .therapy_builder import Hub, TherapyScenario


def test_a_genome_stored_event_from_the_vault_is_accepted_for_a_consenting_therapy() -> None:
    scenario = TherapyScenario(Hub())
    scenario.run_until("sequence")  # includes consent_genome: GENOME_STORAGE granted
    assert "GENOME_STORAGE" in {e.payload["scope"] for e in scenario.log
                                if e.event_type == "ConsentGranted"}
    keys = [SiteKeyPair.generate() for _ in range(3)]
    sites = [Site(f"vault-site-{i}", k.public, f"vault://site-{i}/{scenario.coi}")
             for i, k in enumerate(keys, 1)]
    _, payload = put(io.BytesIO(os.urandom(3000)), scenario.coi, sites, lambda *a: None,
                     chunk_size=1024, randomness=AesCtrDrbg())
    stored = scenario.accept(scenario.issue("lab", "GenomeStored", payload))
    assert stored.payload["root_hash"] == payload["root_hash"]
