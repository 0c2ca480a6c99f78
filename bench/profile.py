"""Sampling profiles of the processes a benchmark measures (``python -m bench --profile DIR``).

Profile before optimising: each measured phase can be wrapped in ``sampled(pid, name)``,
which runs py-spy against the process under test for the length of the phase (py-spy
samples from outside, so the process runs unchanged). It writes the collapsed stacks to
``DIR/<name>.txt`` (``flamegraph.pl`` or speedscope read them) and prints where the
samples fell: the functions with the most samples on top of the stack (self) and on the
stack at all (inclusive). With no ``--profile`` it does nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

#: where profiles go; set by ``python -m bench --profile DIR``
PROFILE_DIR: Path | None = None
TOP = 18


def py_spy() -> str:
    """The py-spy beside this interpreter (the dev extras install it)."""
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy (in the dev extras)")
    return found


@contextmanager
def sampled(pid: int, name: str, *, native: bool = False) -> Iterator[None]:
    """Sample process ``pid`` (all its threads, idle ones left out) while the block runs."""
    if PROFILE_DIR is None:
        yield
        return
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    out = PROFILE_DIR / f"{name}.txt"
    command = [py_spy(), "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
               "--rate", "200", "--nonblocking"] + (["--native"] if native else [])
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        # py-spy writes its file when interrupted, as on Ctrl-C
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=60)
        if out.exists():
            print_profile(out, name)
        else:
            Console().print(f"[red]profile {name}: py-spy wrote nothing[/] "
                            f"{err.decode(errors='replace')[-400:]}")


def collapsed(path: Path) -> Counter[str]:
    """Stacks (frames joined by ';', outermost first) and their sample counts."""
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def _function(frame: str) -> str:
    """``fn (path/module.py:123)`` -> ``fn (module.py)``: lines of one function together."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({os.path.basename(file)})" if file else name


def top_functions(stacks: Counter[str]) -> tuple[int, Counter[str], Counter[str]]:
    """Total samples, and samples per function on top of the stack / anywhere on it."""
    total, own, anywhere = 0, Counter[str](), Counter[str]()
    for stack, count in stacks.items():
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for fn in set(frames):
            anywhere[fn] += count
    return total, own, anywhere


def print_profile(path: Path, name: str, console: Console | None = None) -> None:
    total, own, anywhere = top_functions(collapsed(path))
    table = Table(title=f"profile {name}: {total:,} samples (non-idle) -> {path}")
    for column in ("self %", "function (self)", "incl. %", "function (inclusive)"):
        table.add_column(column, justify="right" if "%" in column else "left")
    selfs, incls = own.most_common(TOP), anywhere.most_common(TOP)
    for i in range(max(len(selfs), len(incls))):
        s = selfs[i] if i < len(selfs) else ("", 0)
        n = incls[i] if i < len(incls) else ("", 0)
        table.add_row(f"{100 * s[1] / max(total, 1):.1f}", s[0],
                      f"{100 * n[1] / max(total, 1):.1f}", n[0])
    (console or Console()).print(table)
