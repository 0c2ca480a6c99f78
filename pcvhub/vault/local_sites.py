"""Storage sites as real processes on loopback, for the demo, the tests and the benchmark.

:class:`LocalSites` creates one folder per site under ``root``, starts
``pcvhub vault site FOLDER --create ...`` for each (its own process, port and key pair),
waits until every site has published its registration with its bound port in the
registrations directory and answers its health check, and stops them on exit (only the
processes it started, by their ids).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pcvhub.vault.client import SiteClient, SiteUnavailable
from pcvhub.vault.site import SiteFolderError, SiteRegistration


class LocalSites:
    def __init__(self, root: Path, site_ids: Sequence[str],
                 operators: Sequence[str] | None = None,
                 capacity_mib: int | Sequence[int] = 1 << 20,
                 timeout: float = 60.0) -> None:
        self.root = root
        self.site_ids = list(site_ids)
        self.operators = list(operators) if operators is not None else list(site_ids)
        self.capacity_mib = ([capacity_mib] * len(self.site_ids)
                             if isinstance(capacity_mib, int) else list(capacity_mib))
        self.timeout = timeout
        self.registry_dir = root / "registrations"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def folder(self, site_id: str) -> Path:
        return self.root / site_id

    def start(self, site_id: str) -> None:
        index = self.site_ids.index(site_id)
        published = self.registry_dir / f"{site_id}.json"
        published.unlink(missing_ok=True)
        log = (self.root / f"{site_id}.log").open("ab")
        self.processes[site_id] = subprocess.Popen(
            [sys.executable, "-m", "pcvhub.cli_vault", "site", str(self.folder(site_id)),
             "--create", "--site-id", site_id, "--operator", self.operators[index],
             "--capacity-mib", str(self.capacity_mib[index]), "--sites", str(self.registry_dir)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        log.close()

    def wait_ready(self, site_id: str) -> SiteRegistration:
        deadline = time.monotonic() + self.timeout
        published = self.registry_dir / f"{site_id}.json"
        while time.monotonic() < deadline:
            process = self.processes[site_id]
            if process.poll() is not None:
                raise RuntimeError(f"site {site_id} exited with {process.returncode}: "
                                   f"{(self.root / f'{site_id}.log').read_text()[-2000:]}")
            try:
                registration = SiteRegistration.load_file(published)
            except (SiteFolderError, FileNotFoundError):
                time.sleep(0.1)
                continue
            client = SiteClient(registration, timeout=5.0)
            try:
                client.health()
                return registration
            except SiteUnavailable:
                time.sleep(0.1)
            finally:
                client.close()
        raise TimeoutError(f"site {site_id} did not answer within {self.timeout:.0f} s")

    def __enter__(self) -> LocalSites:
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        try:
            for site_id in self.site_ids:
                self.start(site_id)
            for site_id in self.site_ids:
                self.wait_ready(site_id)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def registrations(self) -> list[SiteRegistration]:
        return [SiteRegistration.load_file(self.registry_dir / f"{s}.json")
                for s in self.site_ids]

    def kill(self, site_id: str) -> None:
        """SIGKILL one site (a drill: the site dies mid-work, no clean shutdown)."""
        process = self.processes.pop(site_id, None)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()
