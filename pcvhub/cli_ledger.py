"""`pcvhub ledger ...` (top floor): the transparency ledger's commands.

``init`` makes the log's keys, ``run`` follows the gatekeeper's outputs into the log (and
publishes each checkpoint on the ``ledger`` topic as well as the file),
``serve`` serves its tiles read-only on loopback, ``vkey`` prints its verifier keys,
``prove`` prints an inclusion or consistency proof as JSON, and ``verify`` audits a tile
folder (a copy fetched from anywhere) offline against the two verifier keys.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pcvhub.config import ConfigError, load_settings
from pcvhub.ledger.archive import DAY_SECONDS, DailyArchive
from pcvhub.ledger.errors import LedgerError
from pcvhub.ledger.follow import CheckpointTopic, LedgerFollower
from pcvhub.ledger.log import (
    KEY_FILE,
    TransparencyLog,
    load_archive_signer,
    load_keys,
    save_keys,
)
from pcvhub.ledger.note import LogKeys, VerifiedCheckpoint, VerifierKey
from pcvhub.ledger.serve import TileServer
from pcvhub.ledger.tiles import audit_tiles
from pcvhub.ledger.witnessing import Cosigning, WitnessPolicy, read_history
from pcvhub.log.reader import LogReadError
from pcvhub.topics import Principal
from pcvhub.trust.archive import ARCHIVE_ALGORITHM, ArchiveBackendMissing, ArchiveSigner
from pcvhub.trust.keys import KeyStoreError, passphrase_from_env
from pcvhub.trust.registry import ANCHOR_FILE, anchor_ledger


def _fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code=code)


def _folder(folder: Path | None) -> Path:
    return folder if folder is not None else load_settings().data_dir / "ledger"


def _open(folder: Path | None) -> TransparencyLog:
    root = _folder(folder)
    return TransparencyLog(root, load_keys(root / KEY_FILE, passphrase_from_env()))


def register(app: typer.Typer) -> None:
    """Add the ``ledger`` command group to the ``pcvhub`` application."""
    ledger_app = typer.Typer(help="The transparency ledger: checkpoints, tiles, proofs.",
                             no_args_is_help=True)
    app.add_typer(ledger_app, name="ledger")
    folder_option = typer.Option(None, "--dir", help="The log folder (default: "
                                                     "<data_dir>/ledger).")

    @ledger_app.command("init")
    def init(origin: str = typer.Option(..., help="The log's origin and key name, a "
                                                  "schema-less URL (e.g. hub.example/ledger)."),
             folder: Path | None = folder_option) -> None:
        """Create the log's Ed25519 and ML-DSA-44 keys and its empty, signed checkpoint."""
        try:
            root = _folder(folder)
            if (root / KEY_FILE).exists():
                _fail(f"{root / KEY_FILE} exists: this folder already holds a log")
            keys = LogKeys.generate(origin)
            archive = ArchiveSigner.generate()  # liboqs: the daily archive seal's key
            save_keys(root / KEY_FILE, keys, passphrase_from_env(), archive)
            with TransparencyLog(root, keys) as log:
                log.checkpoint(int(time.time()))
            anchor = load_settings().data_dir / ANCHOR_FILE
            if anchor.exists():  # the deployment's anchor names the log's keys from now on
                anchor_ledger(anchor, origin, str(keys.ed25519_vkey), str(keys.ml_dsa_44_vkey),
                              archive.public_key)
        except (LedgerError, KeyStoreError, ConfigError, ArchiveBackendMissing) as exc:
            _fail(str(exc))
        print(f"ledger {origin} in {root}")
        print(f"vkey {keys.ed25519_vkey}")
        print(f"mldsa-vkey {keys.ml_dsa_44_vkey}")
        print(f"archive-key {ARCHIVE_ALGORITHM} {archive.public_key.hex()}")

    @ledger_app.command("vkey")
    def vkey(folder: Path | None = folder_option) -> None:
        """Print the log's Ed25519 note vkey, then its ML-DSA-44 cosignature vkey."""
        path = _folder(folder) / KEY_FILE
        if not path.exists():
            _fail(f"no ledger keys at {path}: run `pcvhub ledger init` first")
        record = json.loads(path.read_text())
        print(record["ed25519_vkey"])
        print(record["ml_dsa_44_vkey"])

    @ledger_app.command("run")
    def run(every: int = typer.Option(1000, help="Checkpoint after this many new records."),
            seconds: float = typer.Option(5.0, help="... or this many seconds after the "
                                                    "first record no checkpoint covers."),
            witnesses: Path | None = typer.Option(None, help="Witness configuration (JSON: "
                                                  "quorum, witnesses' URLs and vkeys): send "
                                                  "each checkpoint to them for cosigning."),
            archive_every: float = typer.Option(
                DAY_SECONDS, help="Seal the latest checkpoint with the archive key "
                                  "(SPHINCS+) at most this often, in seconds."),
            folder: Path | None = folder_option) -> None:
        """Follow the canonical, rejected and alerts topics into the log until SIGTERM."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            with _open(folder) as log:
                print(f"ledger {log.origin}: {log.size} records logged, following",
                      flush=True)

                # the ledger's principal: it reads the outputs, writes only its own topic
                settings = load_settings().as_principal(Principal.LEDGER)
                topic = CheckpointTopic(settings)
                if log.latest is not None and topic.catch_up(log.latest, log.keys):
                    print(f"published {log.latest.checkpoint.size}: the checkpoint resumed "
                          "from, which the topic did not hold yet", flush=True)
                cosigning = (Cosigning(log, WitnessPolicy.read(witnesses))
                             if witnesses is not None else None)

                def announce(signed: VerifiedCheckpoint) -> None:
                    cosigned = ""
                    if cosigning is not None:
                        witnessed = cosigning(signed)
                        signed, count = witnessed.signed, witnessed.count
                        cosigned = (f" cosigned {len(count.cosigned)}/"
                                    f"{len(cosigning.policy.witnesses)}"
                                    + (" BELOW QUORUM" if count.below_quorum else ""))
                    topic(signed)
                    print(f"checkpoint {signed.checkpoint.size} "
                          f"{signed.checkpoint.root.hex()}{cosigned}", flush=True)

                signer = load_archive_signer(_folder(folder) / KEY_FILE, passphrase_from_env())
                if signer is None:
                    print("warning: this log has no archive key (made before the daily "
                          "archive seal): checkpoints are not archive-sealed", flush=True)
                archive = (DailyArchive(log.tiles, signer, log.keys.ed25519_vkey,
                                        log.keys.ml_dsa_44_vkey, every=archive_every)
                           if signer is not None else None)
                follower = LedgerFollower(settings, log, every=every, seconds=seconds,
                                          publish=announce, archive=archive)
                try:
                    follower.run(stop, on_caught_up=lambda: print("caught up", flush=True))
                finally:
                    topic.close()
                    if cosigning is not None:
                        cosigning.close()
                for sentence in follower.discrepancies:
                    print(f"discrepancy {sentence}", flush=True)
        except (LedgerError, KeyStoreError, ConfigError, LogReadError,
                FileNotFoundError, ArchiveBackendMissing) as exc:
            _fail(str(exc))

    @ledger_app.command("serve")
    def serve(port: int = typer.Option(8081, help="Port (0: a free one)."),
              host: str = typer.Option("127.0.0.1", help="A loopback address."),
              folder: Path | None = folder_option) -> None:
        """Serve checkpoint, tile/ and tile/entries/ read-only over HTTP."""
        try:
            server = TileServer(_folder(folder) / "tiles", host, port)
        except (LedgerError, OSError) as exc:
            _fail(str(exc))
        print(f"serving {server.tiles} at {server.url}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()

    @ledger_app.command("prove")
    def prove(index: int | None = typer.Option(None, help="Inclusion proof of this leaf."),
              since: int | None = typer.Option(None, help="Consistency proof from this "
                                                          "size."),
              size: int | None = typer.Option(None, help="Tree size (default: the last "
                                                         "checkpoint's)."),
              folder: Path | None = folder_option) -> None:
        """Print an inclusion (--index) or consistency (--since) proof as JSON."""
        if (index is None) == (since is None):
            _fail("give exactly one of --index and --since", code=2)
        try:
            with _open(folder) as log:
                if log.latest is None:
                    _fail("the log has no checkpoint yet")
                assert log.latest is not None
                tree = size if size is not None else log.latest.checkpoint.size
                if index is not None:
                    out = {"inclusion": log.inclusion_proof(index, tree).to_json(),
                           "entry": log.entry(index).hex()}
                else:
                    assert since is not None
                    out = {"consistency": log.consistency_proof(since, tree).to_json()}
        except (LedgerError, KeyStoreError, ConfigError) as exc:
            _fail(str(exc))
        print(json.dumps(out, indent=1))

    @ledger_app.command("verify")
    def verify(tiles: Path = typer.Argument(..., help="A tile folder (checkpoint, tile/)."),
               vkey: str = typer.Option(..., help="The log's Ed25519 vkey."),
               mldsa_vkey: str = typer.Option(..., help="The log's ML-DSA-44 vkey.")) -> None:
        """Audit a tile folder offline: both checkpoint lines, every tile, every entry."""
        try:
            result = audit_tiles(tiles, VerifierKey.parse(vkey), VerifierKey.parse(mldsa_vkey))
        except LedgerError as exc:
            _fail(str(exc))
        head = result.checkpoint.checkpoint
        print(f"verified {head.origin} size {head.size} root {head.root.hex()}: "
              f"{result.entries_checked} entries, {result.tiles_read} files")

    @ledger_app.command("checkpoints")
    def checkpoints(witnesses: Path = typer.Option(..., help="Witness configuration (JSON)."),
                    last: int = typer.Option(20, help="Show this many, newest last."),
                    folder: Path | None = folder_option) -> None:
        """Each recorded checkpoint with how many configured witnesses cosigned it; exits 1
        if the latest is below quorum."""
        root = _folder(folder)
        try:
            record = json.loads((root / KEY_FILE).read_text())
            policy = WitnessPolicy.read(witnesses)
            counts = list(read_history(root, VerifierKey.parse(record["ed25519_vkey"]),
                                       VerifierKey.parse(record["ml_dsa_44_vkey"]), policy))
        except (LedgerError, OSError) as exc:
            _fail(str(exc))
        table = Table(title=f"checkpoints of {record['name']}: quorum {policy.quorum} of "
                            f"{len(policy.witnesses)} witnesses")
        for column in ("size", "root", "cosigned"):
            table.add_column(column, no_wrap=True)
        table.add_column("by")
        table.add_column("missing")
        for count in counts[-last:]:
            flag = " [bold red]BELOW QUORUM[/]" if count.below_quorum else ""
            table.add_row(str(count.checkpoint.size), count.checkpoint.root.hex()[:16],
                          f"{len(count.cosigned)}/{len(policy.witnesses)}{flag}",
                          ", ".join(c.witness for c in count.cosigned),
                          "; ".join(f"{n}: {why[:120]}" for n, why in count.missing))
        Console().print(table)
        raise typer.Exit(code=1 if counts and counts[-1].below_quorum else 0)
