"""The demo's genome vault: every sequenced patient's file into three site processes, and
one restore under that patient's own token.

After the cohort has run, three storage sites start (``pcvhub vault site``, each its own
process, folder, key pair and HTTPS port, TLS with X25519MLKEM768). The sequencing lab puts
a synthetic sequencing file (seeded, 256 KiB) of every therapy through share control (2 of
3) and records ``GenomeStored``; a therapy the hub refuses it for (no genome-storage
consent, say) is counted with the hub's reason. The design service then restores the first
stored genome with a token the patient's card signed for it, and the same token is tried
once more: the hub must refuse it (``TOKEN_SPENT``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from pcvhub.demo.driver import Drive, World
from pcvhub.schemas.policy import from_stage
from pcvhub.schemas.stages import Stage
from pcvhub.trust.issuer import now_us
from pcvhub.vault.local_sites import LocalSites
from pcvhub.vault.service import RestoreDenied, VaultService

SITES = ("vault-kyoto", "vault-tohoku", "vault-nict")
OPERATORS = ("KYOTO-UNIV-HOSPITAL", "TOHOKU-MEGABANK", "NICT")
PURPOSE = "NEOANTIGEN_REDESIGN"
FILE_BYTES = 256 * 1024
SEQUENCED_ON = from_stage(Stage.SEQUENCED)


@dataclass
class VaultRun:
    stored: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # hub's reason code -> therapies
    placements: Counter[str] = field(default_factory=Counter)  # site -> shares kept
    groups: set[str] = field(default_factory=set)  # TLS groups the sites negotiated
    restored_coi: str = ""
    restored_bytes: int = 0
    restore_sites: list[str] = field(default_factory=list)
    restore_matches: bool = False
    second_use: str = ""  # the hub's answer to the same token again
    problem: str = ""

    @property
    def ok(self) -> bool:
        return (not self.problem and self.stored > 0 and self.restore_matches
                and self.second_use == "TOKEN_SPENT")


def play(world: World, drive: Drive, console: Console) -> VaultRun:
    """Store every finished therapy's genome; restore one under its patient's token."""
    outcome = VaultRun()
    folder = world.deployment.run_dir / "vault"
    settings, passphrase = world.deployment.settings, world.deployment.passphrase.encode()
    lab, designer = world.cast["lab"], world.cast["designer"]
    files = {}
    with console.status("genome vault: starting 3 storage sites ..."), \
            LocalSites(folder / "sites", SITES, OPERATORS) as sites:
        with VaultService.open(lab.actor_id, lab.site, sites.registry_dir, settings,
                               passphrase) as vault:
            for run in drive.runs:
                # only sequenced therapies have a genome (the stalled referral has none)
                if (not run.coi or run.broken is not None
                        or run.scenario.case.stage not in SEQUENCED_ON):
                    continue
                genome = folder / f"{run.patient.tag}.cram"
                genome.write_bytes(random.Random(run.patient.index).randbytes(FILE_BYTES))
                result, answer = vault.put(genome, run.coi, k=2, n=3, chunk_size=64 * 1024)
                outcome.groups |= {g for g in result.groups.values() if g}
                if answer.accepted:
                    outcome.stored += 1
                    files[run.coi] = (run, genome)
                    outcome.placements.update(s["site_id"] for s in result.payload["shares"])
                else:
                    outcome.refused[answer.code or "PENDING"] += 1
        if not files:
            outcome.problem = "no genome was stored"
            return outcome
        coi, (run, genome) = next(iter(files.items()))
        card = world.wallets[run.patient.index]
        token = card.consent_token(coi, PURPOSE, designer.actor_id, now_us() + 15 * 60_000_000)
        out = folder / f"{run.patient.tag}.restored.cram"
        with VaultService.open(designer.actor_id, designer.site, sites.registry_dir, settings,
                               passphrase) as design:
            design.wait_folded(coi, lambda record: record.latest is not None)
            try:
                payload = design.get(coi, PURPOSE, token, out)
            except RestoreDenied as exc:
                outcome.problem = f"restore refused: {exc.code}: {exc}"
                return outcome
            outcome.restored_coi, outcome.restored_bytes = coi, payload["content_size"]
            outcome.restore_sites = payload["sites_used"]
            outcome.restore_matches = out.read_bytes() == genome.read_bytes()
            # the second try is judged on the log: wait until it shows the first restore
            design.wait_folded(coi, lambda record: token.nonce in record.spent)
            try:
                design.get(coi, PURPOSE, token, folder / "second-use.cram")
                outcome.second_use = "RESTORED AGAIN"
            except RestoreDenied as exc:
                outcome.second_use = exc.code
    return outcome


def render(console: Console, run: VaultRun) -> None:
    table = Table("genome vault", "", title="genome vault (2-of-3 over site processes)")
    table.add_row("genomes stored (GenomeStored accepted)", str(run.stored))
    for code, count in sorted(run.refused.items()):
        table.add_row(f"  refused by the hub: {code}", str(count))
    for site, count in sorted(run.placements.items()):
        table.add_row(f"  shares kept at {site}", str(count))
    table.add_row("sites' TLS key exchange", ", ".join(sorted(run.groups)) or "?")
    table.add_row("restored under the patient's token",
                  f"{run.restored_coi}: {run.restored_bytes:,} bytes from "
                  f"{', '.join(run.restore_sites)}; "
                  f"{'identical' if run.restore_matches else 'DIFFERENT'}")
    table.add_row("the same token again", run.second_use or "-")
    if run.problem:
        table.add_row("[red]problem[/]", run.problem)
    console.print(table)
