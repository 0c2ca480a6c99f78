"""Every party of a study as a process on this machine, on loopback ports, over TLS.

What the tests, the benchmark and a demo need in order to run ``pcvhub mpc party`` once
per site: the study file, a fresh TLS directory per party, free ports, and the command
lines. Each party is a real, separate process; nothing is shared between them but the
network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pcvhub.mpc.study import StudySpec
from pcvhub.mpc.tls import issue_party_certificates


def free_ports(count: int) -> list[int]:
    """Ports the kernel has just handed out (they stay free unless another process races)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass(frozen=True)
class LocalStudyRun:
    """One run's files under ``root``: ``study.json``, ``tls/party-<i>``, ``result-<site>.json``."""

    root: Path
    spec: StudySpec
    tls: tuple[Path, ...]
    ports: tuple[int, ...]
    on_the_log: bool = False

    @classmethod
    def create(cls, root: Path, spec: StudySpec, *, on_the_log: bool = False
               ) -> LocalStudyRun:
        """``on_the_log``: each party reads the study's approval from the log
        (``--study-id``) instead of a spec file (``--study``, synthetic rows only)."""
        root.mkdir(parents=True, exist_ok=True)
        (root / "study.json").write_text(json.dumps(spec.to_json(), indent=2) + "\n")
        return cls(root, spec, tuple(issue_party_certificates(root / "tls", len(spec.sites))),
                   tuple(free_ports(len(spec.sites))), on_the_log)

    @property
    def spec_path(self) -> Path:
        return self.root / "study.json"

    def result(self, site: str) -> Path:
        return self.root / f"result-{site}.json"

    def command(self, index: int, rows: Sequence[str], *extra: str,
                program: Sequence[str] = ()) -> list[str]:
        """``pcvhub mpc party`` for party ``index``; ``rows``: ``--synthetic S:N`` or
        ``--projection FILE``; ``program`` replaces ``python -m pcvhub.cli_mpc`` (the
        ``mpc`` commands alone: quicker to start than all of ``pcvhub``)."""
        site = self.spec.sites[index]
        return [*(program or (sys.executable, "-m", "pcvhub.cli_mpc")), "mpc", "party",
                "--site", site, *(("--study-id", self.spec.study_id) if self.on_the_log
                                  else ("--study", str(self.spec_path))),
                *(arg for s, p in zip(self.spec.sites, self.ports, strict=True)
                  for arg in ("--party", f"{s}=127.0.0.1:{p}")),
                "--tls-dir", str(self.tls[index]), *rows, "--result", str(self.result(site)),
                *extra]

    def start(self, command: Sequence[str], env: Mapping[str, str] | None = None
              ) -> subprocess.Popen[str]:
        """One party's process; ``env``: its environment (default: this one's), e.g. the
        deployment whose log holds the study."""
        return subprocess.Popen(list(command), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env={**(os.environ if env is None else env),
                                     "PYTHONUNBUFFERED": "1"})


def finish(processes: Sequence[subprocess.Popen[str]], timeout: float = 600
           ) -> list[tuple[int, str]]:
    """(exit code, output) of each process, in order."""
    outcomes = []
    for process in processes:
        out, _ = process.communicate(timeout=timeout)
        outcomes.append((process.returncode, out))
    return outcomes
