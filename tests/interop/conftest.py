"""The Go verifier of the ledger (``infra/tlog-verify``), built once per session."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "tlog-verify" / "build.sh"


@pytest.fixture(scope="session")
def go_verifier() -> Path:
    if shutil.which("go") is None:
        pytest.fail("go not found: the ledger interop test needs Go 1.26 (apt-get install "
                    "golang-go) and, on the first build, the Go module proxy")
    built = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                           timeout=900, check=False)
    if built.returncode != 0:
        pytest.fail(f"building the Go verifier failed:\n{built.stderr}")
    return Path(built.stdout.strip().splitlines()[-1])
