"""`pcvhub schemas release` snapshots a new compatible schema instead of refusing it."""

from __future__ import annotations

import shutil
from pathlib import Path

from pcvhub.schemas.compat import check, release


def test_release_writes_a_changed_compatible_schema(tmp_path: Path) -> None:
    released = tmp_path / "released"
    shutil.copytree(Path(__file__).resolve().parents[2] / "pcvhub/schemas/released", released)
    victim = next(p for p in released.glob("pcvhub.events.*/v1.avsc"))
    shutil.rmtree(victim.parent)  # as if its event type were new
    assert victim.parent.name in check(released_dir=released).unreleased
    written = release(released_dir=released)
    assert victim in written
    assert check(released_dir=released).ok
