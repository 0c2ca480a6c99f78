"""A projection file and the projector that continues it, without Kafka.

``Projection.apply(records)`` is one step of the runner: project a batch, commit its rows
and offsets in one transaction, then let the projector's memory move on. The runner
feeds it from Kafka; tests feed it records they made, in any batching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pcvhub.projections.projector import CANONICAL, LogRecord, Projector, RowBatch
from pcvhub.projections.store import ProjectionStore
from pcvhub.projections.verification import SignatureCheck
from pcvhub.schemas.envelope import Envelope
from pcvhub.trust.registry import KeyRegistry

#: reads the registry chain's partition from an offset to its current end
RegistryReader = Callable[[int], Iterable[Envelope]]


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
        ``pcvhub.projections.verification``); None to never read ahead.
    """

    def __init__(self, path: Path, topic_prefix: str, anchor: KeyRegistry, anchored: bool,
                 registry_partition: int, read_registry: RegistryReader | None = None) -> None:
        self.store = ProjectionStore(path, {"topic_prefix": topic_prefix,
                                            "trust_anchor": anchor_name(anchor, anchored)},
                                     anchor=anchor if anchored else None)
        try:
            self.positions = self.store.offsets()
            registry = self.store.fold_registry(anchor.copy())

            def catch_up() -> Iterable[Envelope]:
                if read_registry is None:
                    return ()
                return read_registry(self.positions.get((CANONICAL, registry_partition), 0))

            checker = SignatureCheck(registry, anchored, catch_up)
            self.projector = Projector(checker, self.store.progress(), self.positions)
        except BaseException:
            self.store.close()
            raise

    def apply(self, records: Sequence[LogRecord]) -> RowBatch:
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
