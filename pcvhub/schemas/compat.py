"""Schema evolution: released versions and the backward-transitive compatibility check.

Every schema's released versions live in ``released/<full name>/v<N>.avsc``. Events on
the log were written with those versions and must stay readable for decades, so the
current schema must be able to *read* data written with **every** released version
(backward-transitive). Apache Avro's own ``ReaderWriterCompatibilityChecker`` decides
each pair: it implements the specification's resolution rules, which is better than a
second, hand-written interpretation of them.

``pcvhub schemas check`` runs :func:`check`; ``pcvhub schemas release`` runs
:func:`release` to snapshot every schema whose canonical form changed.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from pcvhub.schemas.catalog import (
    RELEASED_DIR,
    SchemaVersion,
    current_schema_files,
    released_schema_files,
)


@dataclass(frozen=True)
class Finding:
    schema: str
    problem: str

    def __str__(self) -> str:
        return f"{self.schema}: {self.problem}"


@dataclass(frozen=True)
class CheckReport:
    checked_pairs: int
    errors: tuple[Finding, ...]
    unreleased: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Unreleased changes fail too: a version that ships unreleased would not be
        checked against later changes, and its events could become unreadable."""
        return not self.errors and not self.unreleased


def _version_number(path: Path) -> int:
    match = re.fullmatch(r"v(\d+)\.avsc", path.name)
    return int(match.group(1)) if match else -1


def _released_by_name(released_dir: Path) -> dict[str, list[SchemaVersion]]:
    versions: dict[str, list[SchemaVersion]] = {}
    for path in sorted(released_dir.glob("*/v*.avsc"), key=_version_number):
        version = SchemaVersion.load(path)
        versions.setdefault(version.full_name, []).append(version)
    return versions


def check(current_files: list[Path] | None = None, released_dir: Path = RELEASED_DIR
          ) -> CheckReport:
    """Every current schema must read every released version of the same name."""
    current = [SchemaVersion.load(p) for p in (current_files or current_schema_files())]
    by_name = {v.full_name: v for v in current}
    released = _released_by_name(released_dir)
    checker = ReaderWriterCompatibilityChecker()
    errors: list[Finding] = []
    pairs = 0
    for name in sorted(set(released) - set(by_name)):
        errors.append(Finding(name, "was released but its schema is gone: events of this "
                                    "type on the log could no longer be read"))
    unreleased = []
    for name, now in sorted(by_name.items()):
        history = released.get(name, [])
        if not history or history[-1].fingerprint != now.fingerprint:
            unreleased.append(name)
        reader = avro.schema.parse(json.dumps(now.raw))
        for old in history:
            pairs += 1
            result = checker.get_compatibility(reader, avro.schema.parse(json.dumps(old.raw)))
            if result.compatibility is not SchemaCompatibilityType.compatible:
                where = ", ".join(sorted(result.locations)) or "/"
                what = ", ".join(i.value for i in result.incompatibilities)
                names = ", ".join(sorted(result.messages))
                errors.append(Finding(name, f"cannot read data written with released "
                                            f"{old.path.name} ({what} at {where}: {names})"))
    return CheckReport(pairs, tuple(errors), tuple(unreleased))


def release(released_dir: Path = RELEASED_DIR) -> list[Path]:
    """Snapshot each current schema whose canonical form differs from its last release."""
    report = check(released_dir=released_dir)
    # Only incompatibility stops a release: unreleased changes are what it is for
    # (report.ok also fails on them, so testing it refused every release).
    if report.errors:
        raise ValueError("refusing to release incompatible schemas:\n"
                         + "\n".join(str(e) for e in report.errors))
    released = _released_by_name(released_dir)
    written = []
    for path in current_schema_files():
        version = SchemaVersion.load(path)
        history = released.get(version.full_name, [])
        if history and history[-1].fingerprint == version.fingerprint:
            continue
        target = released_dir / version.full_name / f"v{len(history) + 1}.avsc"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        written.append(target)
    return written


__all__ = ["CheckReport", "Finding", "check", "release", "released_schema_files"]
