"""`pcvhub keys new|list|rotate|revoke` (top floor).

Private keys stay in the local encrypted key store (``<data_dir>/keys``). What the hub
needs to know about keys travels as events: with ``--publish`` each command issues the
matching registry event (ActorRegistered, KeyRotated, KeyRevoked), signed by the
registrar's key from the same store and linked onto the head of the registry chain, onto
the direct ingress topic, and waits until the gatekeeper has accepted it
(``pcvhub.connectors.registrar``).
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from pcvhub.config import load_settings
from pcvhub.schemas.catalog import load_catalog
from pcvhub.times import utc_iso
from pcvhub.trust.issuer import now_us
from pcvhub.trust.keys import KeyStore, KeyStoreError, passphrase_from_env
from pcvhub.trust.registry import (
    ANCHOR_FILE,
    Actor,
    KeyRecord,
    registration_payload,
    revocation_payload,
    rotation_payload,
    write_anchor,
)

#: the KeyRevoked.reason symbols, read from the catalog so the two cannot drift apart
REVOCATION_REASONS: tuple[str, ...] = tuple(next(
    f["type"]["symbols"] for f in load_catalog().schema("KeyRevoked").raw["fields"]
    if f["name"] == "reason"))

keys_app = typer.Typer(help="Actor key pairs: create, list, rotate, revoke.", no_args_is_help=True)
console = Console()


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=1)


def _store() -> KeyStore:
    try:
        return KeyStore(load_settings().data_dir / "keys", passphrase_from_env())
    except KeyStoreError as exc:
        _fail(str(exc))
        raise


def _publish(store: KeyStore, registrar: str, event_type: str, payload: dict,
             wait: bool = True) -> None:
    """Link onto the registry chain, send, and say "published" only once accepted."""
    from pcvhub.connectors.registrar import RegistryPublishError, publish_registry_event

    try:
        signer = store.latest(registrar)
    except KeyStoreError as exc:
        _fail(str(exc))
    try:
        with console.status(f"publishing {event_type}: reading the registry chain, then "
                            "waiting for the gatekeeper's verdict ..."):
            issued = publish_registry_event(load_settings(), signer, event_type, payload,
                                            wait=wait)
    except RegistryPublishError as exc:
        _fail(str(exc))
    if not wait:
        console.print(f"sent {event_type} {issued.envelope.event_id} signed by {registrar}, "
                      "linked onto the registry chain; the gatekeeper judges it when it runs")
        return
    console.print(f"published {event_type} {issued.envelope.event_id} signed by {registrar}: "
                  "accepted onto the registry chain")


@keys_app.command("new")
def keys_new(
    actor_id: str = typer.Argument(..., help="Actor id, e.g. site-tokyo-emr."),
    display_name: str = typer.Option("", help="Name people see; defaults to the actor id."),
    role: list[str] = typer.Option([], help="Role the actor holds (repeat for several)."),
    site: str = typer.Option("hub", help="Site the actor belongs to."),
    publish: bool = typer.Option(False, help="Issue ActorRegistered to the hub."),
    wait: bool = typer.Option(True, help="With --publish: wait for the gatekeeper's verdict "
                                         "(--no-wait: the gatekeeper's own key, before the "
                                         "first worker runs)."),
    registrar: str = typer.Option("hub-registrar", help="Actor whose key signs the registration."),
    anchor: bool = typer.Option(False, help="Make this actor the deployment's trust anchor "
                                            "(the first registrar): writes trust-anchor.json."),
) -> None:
    """Create a hybrid key pair (Ed25519 + ML-DSA-65) for an actor, encrypted at rest."""
    store = _store()
    signer = store.create(actor_id, utc_iso(now_us(), "microseconds"))
    console.print(f"created key {signer.key_id} for {actor_id} in {store.root}")
    actor = Actor(actor_id, display_name or actor_id, frozenset(role), site)
    if anchor:
        path = load_settings().data_dir / ANCHOR_FILE
        write_anchor(path, actor, KeyRecord(actor_id, signer.key_id, signer.keys.public,
                                            now_us()))
        console.print(f"trust anchor written to {path}")
    if publish:
        _publish(store, registrar, "ActorRegistered",
                 registration_payload(actor, signer.key_id, signer.keys.public, now_us()),
                 wait=wait)


@keys_app.command("list")
def keys_list() -> None:
    """Every stored key: actor, key id, creation time, public key fingerprints."""
    import hashlib

    table = Table(title="stored keys (private halves encrypted)")
    for column in ("actor", "key id", "created", "Ed25519 (sha256/8)", "ML-DSA-65 (sha256/8)"):
        table.add_column(column)
    for key in _store().list():
        table.add_row(key.actor_id, key.key_id, key.created_at,
                      hashlib.sha256(key.public.ed25519).hexdigest()[:16],
                      hashlib.sha256(key.public.ml_dsa_65).hexdigest()[:16])
    console.print(table)


@keys_app.command("rotate")
def keys_rotate(
    actor_id: str = typer.Argument(...),
    overlap_hours: float = typer.Option(24.0, help="How long the old key stays valid."),
    publish: bool = typer.Option(False, help="Issue KeyRotated to the hub."),
    registrar: str = typer.Option("hub-registrar"),
) -> None:
    """Create the actor's next key; the old one stays valid for the overlap, then expires."""
    store = _store()
    try:
        old = store.latest(actor_id).key_id
    except KeyStoreError as exc:
        _fail(str(exc))
    signer = store.create(actor_id, utc_iso(now_us(), "microseconds"))
    console.print(f"rotated {actor_id}: {old} -> {signer.key_id} "
                  f"(old key valid {overlap_hours:g} h more)")
    if publish:
        _publish(store, registrar, "KeyRotated", rotation_payload(
            actor_id, old, signer.key_id, signer.keys.public, now_us(),
            int(overlap_hours * 3_600_000_000)))


@keys_app.command("revoke")
def keys_revoke(
    actor_id: str = typer.Argument(...),
    key_id: str = typer.Argument(...),
    reason: str = typer.Option("COMPROMISED", help=f"One of {', '.join(REVOCATION_REASONS)}."),
    registrar: str = typer.Option("hub-registrar"),
) -> None:
    """Revoke a key from now on: events it signs that occur later are refused.

    A revocation exists only as a KeyRevoked event, so this always publishes it."""
    if reason not in REVOCATION_REASONS:
        _fail(f"reason {reason!r} is not one of {', '.join(REVOCATION_REASONS)}")
    store = _store()
    if key_id not in {k.key_id for k in store.list() if k.actor_id == actor_id}:
        console.print(f"[yellow]note:[/] {key_id} is not in the local store; revoking anyway")
    _publish(store, registrar, "KeyRevoked", revocation_payload(actor_id, key_id, now_us(), reason))
    console.print(f"revoked {key_id} of {actor_id} ({reason})")
