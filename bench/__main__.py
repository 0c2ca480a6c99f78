"""`python -m bench [--quick] [SECTION ...]`: run the benchmarks and print one table.

Every figure is a median of repeats and, where it makes sense, a ratio against a
baseline measured in the same run on the same machine (machines are noisy; absolute
numbers from different runs are not comparable, ratios mostly are).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from bench import (
    crypto,
    gatekeeper,
    ledger,
    log_reader,
    mllp,
    mpc,
    profile,
    projections,
    seal,
    vault,
)
from bench.report import print_figures


def _gatekeeper_and_seal(quick: bool = False) -> list:
    """The gatekeeper on the broker, then its seal's cost as a ratio (in process), so that
    one ``bench gatekeeper`` run gives both."""
    return [*gatekeeper.run(quick=quick), *seal.run(quick=quick)]


SECTIONS = {"crypto": crypto.run, "log": log_reader.run, "gatekeeper": _gatekeeper_and_seal,
            "seal": seal.run,
            "mllp": mllp.run, "projections": projections.run, "vault": vault.run,
            "ledger": ledger.run, "mpc": mpc.run}


def _events(text: str) -> int:
    """``1M``, ``10M``, ``250k`` or a plain number of events."""
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    try:
        return int(float(text[:-1] if factor > 1 else text) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of events "
                                         "(e.g. 1M, 10M, 250k)") from None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer items, for a smoke run")
    parser.add_argument("--vault-gib", type=int, default=4,
                        help="input size of the vault peak-memory run (16 for the full CRAM)")
    parser.add_argument("--vault-sites-only", action="store_true",
                        help="vault: only the end-to-end put/get through site processes")
    parser.add_argument("--scale", type=_events, metavar="N",
                        help="events in the projections' big log, e.g. 1M or 10M (checks "
                             "free disk first; tens of GB at 10M; never in CI)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the processes under test with py-spy; collapsed stacks "
                             "to DIR, top functions printed")
    args = parser.parse_args()
    profile.PROFILE_DIR = args.profile
    console = Console()
    figures = []
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; "
                     f"known: {', '.join(SECTIONS)}")
    # by default every section once: "gatekeeper" includes "seal"
    for name in args.sections or [n for n in SECTIONS if n != "seal"]:
        console.print(f"[bold]bench {name}[/] ...")
        if name == "projections":
            figures.extend(projections.run(quick=args.quick, scale=args.scale))
        elif name == "vault":
            figures.extend(vault.run(quick=args.quick, peak_gib=args.vault_gib,
                                     sites_only=args.vault_sites_only))
        else:
            figures.extend(SECTIONS[name](quick=args.quick))
    print_figures(figures, console)


if __name__ == "__main__":
    main()
