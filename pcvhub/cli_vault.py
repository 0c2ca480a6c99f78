"""`pcvhub vault site|put|token|get` (top floor): storage sites, and the genome in and out.

- ``site FOLDER``: run one storage site (``--create`` makes the folder a site first);
- ``put FILE --coi X``: split the file k-of-n to the registered sites chosen by share
  control, then record the share map as ``GenomeStored`` (signed by the sequencing lab);
- ``token``: the patient's card signs a one-use consent token for a restore (the wallet);
- ``get --coi X --purpose P --token T --out FILE``: judge the token against the therapy's
  log, restore from any k sites, check every chunk and the root, record ``GenomeRestored``,
  and only then move the file into place.

Sites are known by their registrations (``site.json``) in a directory of registrations
(``--sites``, default ``<data dir>/vault/sites``): ``site --create`` copies its registration
there; a serving site updates its port in its own folder and, when ``--sites`` is given,
there too. Exit codes: 4 refused (token, consent, placement), 3 a site failed (nothing
recorded), 1 bad input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True, soft_wrap=True)
REFUSED, SITE_FAILED, BAD_INPUT = 4, 3, 1


def _sites_dir(given: Path | None) -> Path:
    from pcvhub.config import load_settings

    return given if given is not None else Path(load_settings().data_dir) / "vault" / "sites"


vault_app = typer.Typer(help="The genome vault: storage sites, put and consent-gated get.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``vault`` command group to the ``pcvhub`` application."""
    app.add_typer(vault_app, name="vault")


@vault_app.command("site")
def site(
    folder: Path = typer.Argument(..., help="The site's own folder (shares and keys)."),
    create: bool = typer.Option(False, "--create", help="Make the folder a site first."),
    site_id: str | None = typer.Option(None, "--site-id", help="With --create: its id."),
    operator: str | None = typer.Option(None, "--operator", help="With --create: who runs "
                                        "it (no operator may hold k shares)."),
    capacity_mib: int = typer.Option(1 << 20, "--capacity-mib", help="With --create."),
    port: int = typer.Option(0, "--port", help="Loopback port (0: any free one)."),
    sites: Path | None = typer.Option(None, "--sites", help="Directory of registrations "
                                      "to publish this site's registration in."),
) -> None:
    """Run one storage site: HTTPS on loopback, TLS 1.3 with X25519MLKEM768 only."""
    from pcvhub.vault.site import SiteFolderError, SiteRegistration, create_site, serve_site

    try:
        if create and not (folder / "site.json").exists():
            if not site_id:
                raise SiteFolderError("--create needs --site-id")
            create_site(folder, site_id, operator or site_id, capacity_mib << 20)
        SiteRegistration.load(folder)
    except SiteFolderError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(BAD_INPUT) from exc

    def publish() -> None:
        if sites is not None:
            sites.mkdir(parents=True, exist_ok=True)
            registration = SiteRegistration.load(folder)
            registration.save_as(sites / f"{registration.site_id}.json")

    try:
        serve_site(folder, port=port, on_ready=publish)
    except KeyboardInterrupt:
        pass

@vault_app.command("put")
def put_cmd(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The genome file."),
    coi: str = typer.Option(..., "--coi", help="The therapy's chain-of-identity id."),
    actor: str = typer.Option(..., "--as", help="The sequencing lab's actor id (its key "
                              "in the data folder's key store signs GenomeStored)."),
    lab_site: str = typer.Option(..., "--lab-site", help="The lab's site id."),
    k: int = typer.Option(2, "--k", min=2, help="Threshold: any k shares restore."),
    n: int = typer.Option(3, "--n", min=2, help="Shares (one per site)."),
    sites: Path | None = typer.Option(None, "--sites", help="Directory of registrations."),
    chunk_mib: int = typer.Option(4, "--chunk-mib", min=1),
) -> None:
    """Split FILE to n sites chosen by share control; record GenomeStored."""
    from pcvhub.vault.placement import PlacementRefused
    from pcvhub.vault.remote import PutFailed
    from pcvhub.vault.service import VaultService

    with VaultService.open(actor, lab_site, _sites_dir(sites)) as vault:
        try:
            result, outcome = vault.put(file, coi, k=k, n=n, chunk_size=chunk_mib << 20)
        except PlacementRefused as exc:
            console.print(f"[red]placement refused:[/] {exc}")
            raise typer.Exit(REFUSED) from exc
        except PutFailed as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(SITE_FAILED) from exc
    table = Table("share", "site", "storage ref", "TLS group", title=f"{coi} placed")
    for share in result.payload["shares"]:
        table.add_row(str(share["share_index"]), share["site_id"], share["storage_ref"],
                      result.groups.get(share["site_id"]) or "?")
    Console().print(table)
    if not outcome.accepted:
        console.print(f"[red]GenomeStored not accepted:[/] {outcome.code} {outcome.reason}")
        raise typer.Exit(REFUSED)
    Console().print(f"root {result.payload['root_hash']}; GenomeStored accepted")

@vault_app.command("token")
def token_cmd(
    wallet: Path = typer.Option(..., "--wallet", help="The patient's wallet folder."),
    coi: str = typer.Option(..., "--coi"),
    purpose: str = typer.Option(..., "--purpose"),
    requester: str = typer.Option(..., "--requester", help="Actor id allowed to restore."),
    valid_minutes: int = typer.Option(15, "--valid-minutes", min=1),
    out: Path = typer.Option(..., "--out", help="Where to write the token (JSON)."),
) -> None:
    """The patient's card signs a one-use restore token (PIN from PCVHUB_CARD_PIN)."""
    from pcvhub.trust.patient_card import PatientCard, WalletError
    from pcvhub.vault.restore_gate import token_to_json

    pin = os.environ.get("PCVHUB_CARD_PIN")
    if not pin:
        console.print("[red]set PCVHUB_CARD_PIN to the card's PIN[/]")
        raise typer.Exit(BAD_INPUT)
    try:
        card = PatientCard.load(wallet, pin.encode())
    except WalletError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(BAD_INPUT) from exc
    from pcvhub.trust.issuer import now_us

    expires = now_us() + valid_minutes * 60_000_000
    out.write_text(token_to_json(card.consent_token(coi, purpose, requester, expires)))

@vault_app.command("get")
def get_cmd(
    coi: str = typer.Option(..., "--coi"),
    purpose: str = typer.Option(..., "--purpose"),
    token: Path = typer.Option(..., "--token", exists=True, help="The patient's token."),
    actor: str = typer.Option(..., "--as", help="The requester's actor id (signs "
                              "GenomeRestored)."),
    actor_site: str = typer.Option(..., "--actor-site", help="The requester's site id."),
    out: Path = typer.Option(..., "--out", help="Where the restored file goes."),
    sites: Path | None = typer.Option(None, "--sites", help="Directory of registrations."),
) -> None:
    """Restore under the patient's token: judged on the log, every chunk checked."""
    from pcvhub.vault.restore_gate import token_from_json
    from pcvhub.vault.service import RestoreDenied, VaultService

    try:
        consent_token = token_from_json(token.read_text())
    except (ValueError, KeyError) as exc:
        console.print(f"[red]{token}: not a consent token ({exc})[/]")
        raise typer.Exit(BAD_INPUT) from exc
    with VaultService.open(actor, actor_site, _sites_dir(sites)) as vault:
        try:
            payload = vault.get(coi, purpose, consent_token, out)
        except RestoreDenied as exc:
            console.print(f"[red]restore refused ({exc.code}):[/] {exc}")
            raise typer.Exit(REFUSED) from exc
    Console().print(json.dumps({k: v for k, v in payload.items()
                                if not k.startswith("token_")}, indent=1))


if __name__ == "__main__":  # `python -m pcvhub.cli_vault site ...`: the same commands, without
    vault_app()             # importing every other command group (a site starts in ~1 s)
