"""`pcvhub witness ...` (top floor): a witness of the ledger, run by another organisation.

``init`` makes the witness's keys (Ed25519 cosignature/v1 and ML-DSA-44) in its own
folder, ``trust`` adds a log it witnesses (the log's two vkeys), ``run`` serves
``add-checkpoint`` (c2sp.org/tlog-witness) on loopback until SIGTERM, ``vkey`` prints its
two vkeys, ``evidence`` lists the split views it caught. See ``pcvhub.ledger.witness``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pcvhub.ledger.cosign import WitnessKeys
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.log import load_keys, save_keys
from pcvhub.ledger.witness import KEY_FILE, Witness, WitnessServer, read_logs, trust_log
from pcvhub.trust.keys import KeyStoreError, passphrase_from_env


def _fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code=code)


def open_witness(folder: Path) -> Witness:
    keys = load_keys(folder / KEY_FILE, passphrase_from_env(), WitnessKeys,
                     init="pcvhub witness init")
    assert isinstance(keys, WitnessKeys)
    return Witness(folder, keys)


def register(app: typer.Typer) -> None:
    """Add the ``witness`` command group to the ``pcvhub`` application."""
    witness_app = typer.Typer(help="A witness of the ledger: cosigns consistent checkpoints, "
                                   "keeps split views as evidence.", no_args_is_help=True)
    app.add_typer(witness_app, name="witness")
    folder_option = typer.Option(..., "--dir", help="The witness's own folder (keys, state).")

    @witness_app.command("init")
    def init(name: str = typer.Option(..., help="The witness's key name, a schema-less URL "
                                                "(e.g. payer.example/witness)."),
             folder: Path = folder_option) -> None:
        """Create the witness's Ed25519 and ML-DSA-44 keys."""
        try:
            if (folder / KEY_FILE).exists():
                _fail(f"{folder / KEY_FILE} exists: this folder already holds a witness")
            keys = WitnessKeys.generate(name)
            save_keys(folder / KEY_FILE, keys, passphrase_from_env())
        except (LedgerError, KeyStoreError) as exc:
            _fail(str(exc))
        print(f"witness {name} in {folder}")
        print(f"vkey {keys.ed25519_vkey}")
        print(f"mldsa-vkey {keys.ml_dsa_44_vkey}")

    @witness_app.command("trust")
    def trust(vkey: str = typer.Option(..., help="The log's Ed25519 vkey (type 0x01)."),
              mldsa_vkey: str = typer.Option(..., help="The log's ML-DSA-44 vkey."),
              folder: Path = folder_option) -> None:
        """Witness the log of these two vkeys (its origin is their name)."""
        try:
            entry = trust_log(folder, vkey, mldsa_vkey)
        except LedgerError as exc:
            _fail(str(exc))
        print(f"witnessing {entry.origin}")

    @witness_app.command("vkey")
    def vkey(folder: Path = folder_option) -> None:
        """Print the witness's cosignature/v1 vkey, then its ML-DSA-44 vkey."""
        path = folder / KEY_FILE
        if not path.exists():
            _fail(f"no witness keys at {path}: run `pcvhub witness init` first")
        record = json.loads(path.read_text())
        print(record["ed25519_vkey"])
        print(record["ml_dsa_44_vkey"])

    @witness_app.command("run")
    def run(port: int = typer.Option(8601, help="Port (0: a free one)."),
            host: str = typer.Option("127.0.0.1", help="A loopback address."),
            folder: Path = folder_option) -> None:
        """Serve POST /add-checkpoint and GET /evidence until SIGTERM."""
        try:
            witness = open_witness(folder)
            if not witness.logs:
                _fail(f"{folder} witnesses no log yet: add one with `pcvhub witness trust`")
            server = WitnessServer(witness, host, port)
        except (LedgerError, KeyStoreError, OSError) as exc:
            _fail(str(exc))
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        sizes = ", ".join(f"{o} at {witness.latest[o].checkpoint.size}"
                          if o in witness.latest else f"{o} (none yet)" for o in witness.logs)
        print(f"witness {witness.keys.name} at {server.url}: {sizes}", flush=True)
        thread = threading.Thread(target=server.serve_forever, name="witness", daemon=True)
        thread.start()
        try:
            stop.wait()
        finally:
            server.shutdown()
            server.server_close()
            witness.close()

    @witness_app.command("evidence")
    def evidence(folder: Path = folder_option) -> None:
        """The split views this witness caught: both checkpoints, the proof, the reason."""
        records = []
        for path in sorted((folder / "evidence").glob("*.json")):
            records.append(json.loads(path.read_text()) | {"file": str(path)})
        table = Table(title=f"split views caught by the witness in {folder}")
        for column in ("origin", "cosigned size", "shown size", "reason", "file"):
            table.add_column(column)
        known = read_logs(folder)
        for r in records:
            cosigned = r["cosigned"].split("\n")[1] if r["cosigned"] else "0"
            table.add_row(r["origin"] + ("" if r["origin"] in known else " (no longer "
                                         "witnessed)"), cosigned, r["shown"].split("\n")[1],
                          r["reason"], r["file"])
        Console().print(table)
        raise typer.Exit(code=1 if records else 0)
