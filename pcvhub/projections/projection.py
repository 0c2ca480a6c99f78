"""A projection file and the projector that continues it, without Kafka.

``Projection.apply(records)`` is one step of the runner: project a batch, commit its rows
and offsets in one transaction, then let the projector's memory move on. The runner
feeds it from Kafka; tests feed it records they made, in any batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pcvhub.log.verify import (
    CANONICAL,
    CheckpointCover,
    LogVerifier,
    RawRecord,
    RegistryLookahead,
)
from pcvhub.projections.projector import Projector, RowBatch
from pcvhub.projections.store import ProjectionStore
from pcvhub.trust.checks import SignatureChecks
from pcvhub.trust.registry import KeyRegistry
from pcvhub.trust.seal import SealSource


def anchor_name(anchor: KeyRegistry, anchored: bool) -> str:
    """Which trust anchor verified the registry chain: the file records it, because the
    same log verified under another anchor (or none) gives other rows."""
    if not anchored:
        return "none"
    return ",".join(sorted(f"{actor}/{key}" for actor, key in anchor.keys))


class Projection:
    """Open (or create) a projection file and resume its fold.

    :param topic_prefix: the deployment whose topics the file projects.
    :param anchor: the trust anchor's registry (empty, with ``anchored`` False, if none).
    :param registry_partition: the canonical partition holding the registry chain.
    :param read_registry: reads that partition ahead, from an offset (see
        ``pcvhub.log.verify``); None to never read ahead.
    :param seals: where the gatekeeper's batch heads are read (``pcvhub.log.reader``).
    :param checks: processes that check each batch's signatures ahead, across cores.

    Records are verified by the one log reader's ``LogVerifier``, resumed where the file
    stands: the registry events it admitted before, the chain heads, the registry
    partition's next offset.
    """

    def __init__(self, path: Path, topic_prefix: str, anchor: KeyRegistry, anchored: bool,
                 registry_partition: int, read_registry: RegistryLookahead | None = None,
                 seals: SealSource | None = None, checks: SignatureChecks | None = None,
                 checkpoint: CheckpointCover | None = None) -> None:
        self.store = ProjectionStore(path, {"topic_prefix": topic_prefix,
                                            "trust_anchor": anchor_name(anchor, anchored)},
                                     anchor=anchor if anchored else None)
        try:
            self.positions = self.store.offsets()
            progress = self.store.progress()
            self.verifier = LogVerifier(
                self.store.fold_registry(anchor.copy()), registry_partition,
                lookahead=read_registry,
                heads={coi: bytes.fromhex(p.head) for coi, p in progress.items()},
                registry_cursor=self.positions.get((CANONICAL, registry_partition), 0),
                seals=seals, checks=checks, checkpoint=checkpoint, reader="projection")
            self.projector = Projector(self.verifier, progress, self.positions)
        except BaseException:
            self.store.close()
            raise

    def apply(self, records: Sequence[RawRecord]) -> RowBatch:
        """Project ``records`` and commit them with their offsets, in one transaction."""
        batch = self.projector.project(records)
        self.store.write(batch)
        self.projector.committed(batch)
        return batch

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Projection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
