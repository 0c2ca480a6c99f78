"""The projection runner (`pcvhub project`) and the rebuild (`pcvhub projections rebuild`).

The runner reads the canonical, rejected and alerts topics through the one log reader
(``pcvhub.log``: one consumer, every record verified before it is folded) and writes a
DuckDB file, one transaction per batch:

1. On start it opens the file (creating its tables if new), reads the next offset of
   every partition from the file's ``offsets`` table, and the folds and registry keys
   the file already holds. Consumer-group commits are never used: ``assign`` only, so the
   file alone says where the projection stands.
2. It seeks every partition to the stored offset (the beginning if none).
3. Each batch (up to ``batch_size`` records) is projected in memory, then its rows, the
   folds it moved and its new offsets are committed in one DuckDB transaction
   (``ProjectionStore.write``). Only then does the runner's memory move on.
4. Killed at any point, it restarts from the last committed offsets: what the killed
   process had read but not committed is read again; what it had committed is not.

A rebuild is the same loop into a fresh file, stopped once every partition has reached
the end it had when the rebuild started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pcvhub.config import Settings
from pcvhub.log.reader import (
    LogReadError,
    RegistryLookahead,
    SealLookup,
    TopicReader,
    registry_partition,
)
from pcvhub.log.verify import CheckpointCover
from pcvhub.projections.projection import Projection
from pcvhub.projections.projector import TOPIC_ROLES
from pcvhub.projections.store import ProjectionStore
from pcvhub.topics import Principal
from pcvhub.trust.checks import SignatureChecks
from pcvhub.trust.registry import ANCHOR_FILE, KeyRegistry, load_anchor

log = logging.getLogger(__name__)
#: the live projection file, inside the data folder
DEFAULT_FILE = Path("projections") / "hub.duckdb"


class ProjectionError(RuntimeError):
    """The runner cannot go on (a topic is missing, Kafka refuses a read)."""


@dataclass
class RunProgress:
    """What a run has done so far; ``behind`` is how many records it still has to read of
    those on the log when it last looked (``None`` while unknown)."""

    records: int = 0
    batches: int = 0
    #: records admitted on a witnessed checkpoint's word (their signatures not re-checked)
    by_checkpoint: int = 0
    started: float = field(default_factory=time.monotonic)
    behind: int | None = None

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.records / elapsed if elapsed > 0 else 0.0


def load_trust_anchor(settings: Settings) -> tuple[KeyRegistry, bool]:
    """The registry of the deployment's trust anchor, or an empty one if there is none."""
    path = settings.data_dir / ANCHOR_FILE
    if path.exists():
        return load_anchor(path), True
    return KeyRegistry(), False


class ProjectionRunner:
    """Projects this deployment's topics into one DuckDB file.

    :param settings: Kafka and topic prefix; ``data_dir`` holds the trust anchor.
    :param db_path: the projection file (created if missing).
    :param batch_size: records per transaction at most.
    :param poll_timeout: seconds to wait for records before a batch is cut short.
    :param checkpoint: a witnessed ledger checkpoint (``pcvhub.ledger.trusted``) standing
        for the signatures of the records it covers; None: every signature re-checked.
    """

    def __init__(self, settings: Settings, db_path: Path, *, batch_size: int = 2000,
                 poll_timeout: float = 0.5, checkpoint: CheckpointCover | None = None
                 ) -> None:
        # the projection runner's principal: it may read the gatekeeper's outputs, nothing else
        self.settings = settings.as_principal(Principal.PROJECTIONS)
        self.db_path = Path(db_path)
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.checkpoint = checkpoint

    def run(self, stop: threading.Event | None = None, *, until_end: bool = False,
            on_batch: Callable[[RunProgress], None] | None = None,
            between_batches: Callable[[ProjectionStore], None] | None = None) -> RunProgress:
        """Project until ``stop`` is set (or, with ``until_end``, until the log's end as of
        the start is reached). ``on_batch`` sees the progress after every commit;
        ``between_batches`` may use the open file (e.g. to publish snapshots)."""
        stop = stop or threading.Event()
        lookahead = RegistryLookahead(self.settings)
        seals = SealLookup(self.settings)
        checks = SignatureChecks(self.settings.verify_workers)
        projection: Projection | None = None
        reader: TopicReader | None = None
        progress = RunProgress()
        try:
            # Step 1. Open the file: its offsets, folds and verified registry say where the
            # projection stands (never a consumer group).
            anchor, anchored = load_trust_anchor(self.settings)
            projection = Projection(self.db_path, self.settings.topic_prefix, anchor, anchored,
                                    registry_partition(), lookahead, seals, checks,
                                    self.checkpoint)
            positions = projection.positions
            try:
                # Step 2. Seek every partition to the stored offset (the beginning if none).
                reader = TopicReader(self.settings, TOPIC_ROLES, start=positions)
            except LogReadError as exc:
                raise ProjectionError(str(exc)) from None
            ends = reader.ends()
            looked_at = time.monotonic()
            progress.behind = self._behind(reader, ends, positions)
            while not stop.is_set() and not (until_end and progress.behind == 0):
                records = reader.poll(self.batch_size, self.poll_timeout)
                if records:
                    # Step 3. Verify and project the batch in memory, then commit its rows,
                    # folds and next offsets in one DuckDB transaction; only then does
                    # memory move on. Step 4 (after a kill): restart at Step 1.
                    batch = projection.apply(records)
                    progress.records += batch.records
                    progress.batches += 1
                    progress.by_checkpoint = projection.verifier.report.by_checkpoint
                if not until_end and time.monotonic() - looked_at >= 1.0:
                    ends, looked_at = reader.ends(), time.monotonic()
                progress.behind = self._behind(reader, ends, positions)
                if records and on_batch is not None:
                    on_batch(progress)
                if between_batches is not None:
                    between_batches(projection.store)
            return progress
        except LogReadError as exc:
            raise ProjectionError(str(exc)) from None
        finally:
            if reader is not None:
                reader.close()
            lookahead.close()
            seals.close()
            checks.close()
            if projection is not None:
                projection.close()

    @staticmethod
    def _behind(reader: TopicReader, ends: dict[tuple[str, int], int],
                positions: dict[tuple[str, int], int]) -> int:
        """Records between what is committed (or, past control records, fetched) and
        ``ends``."""
        fetched = reader.fetched()
        return sum(max(end - max(positions.get(tp, 0), fetched.get(tp, 0)), 0)
                   for tp, end in ends.items())


def rebuild(settings: Settings, out: Path, *, batch_size: int = 2000,
            on_batch: Callable[[RunProgress], None] | None = None,
            checkpoint: CheckpointCover | None = None) -> RunProgress:
    """Replay the log from the start into a fresh file ``out`` (which must not exist),
    up to the end every partition had when the rebuild started (``checkpoint``: by a
    witnessed ledger checkpoint, see ``ProjectionRunner``)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; a rebuild writes a fresh file: choose a new "
                              "path or remove it first")
    runner = ProjectionRunner(settings, out, batch_size=batch_size, checkpoint=checkpoint)
    return runner.run(until_end=True, on_batch=on_batch)
