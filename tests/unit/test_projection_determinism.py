"""Projections are pure functions of the log: the same records give the same digest however
partitions interleave, however records are batched, and across restarts.

Kafka keeps order within a partition only; a runner that is killed and restarted reads
the partitions in another interleaving and cuts batches elsewhere. A rebuilt file must
still equal the live one.
"""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcvhub.log.verify import RawRecord
from pcvhub.projections.digest import digest_file
from pcvhub.projections.lifecycle import TherapyProgress
from pcvhub.projections.projection import Projection
from pcvhub.projections.projector import OffsetRegression
from pcvhub.projections.schema import LayoutError
from pcvhub.projections.store import connect
from pcvhub.schemas.policy import LifecycleState, advance
from pcvhub.topics import partition_for
from pcvhub.trust.registry import REGISTRY_COI

from .sealing import SEAL_BOOK
from .test_projection_scenario import PARTITIONS, ScriptedLog, project, scripted_log
from .therapy_builder import QC_STEPS, RECIPE_STEPS, Hub, TherapyScenario


@pytest.fixture(scope="module")
def scripted() -> ScriptedLog:
    return scripted_log()


@pytest.fixture(scope="module")
def records(scripted: ScriptedLog) -> list[RawRecord]:
    return scripted.gatekeep()


@pytest.fixture(scope="module")
def reference(scripted: ScriptedLog, records: list[RawRecord],
              tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("reference") / "hub.duckdb"
    project(path, records, scripted.anchor, batch=len(records))
    return digest_file(path).sha256


def interleave(records: list[RawRecord], rng: random.Random) -> list[RawRecord]:
    """Another order Kafka could deliver: each topic-partition's own order kept."""
    queues: dict[tuple[str, int], list[RawRecord]] = {}
    for record in records:
        queues.setdefault((record.topic, record.partition), []).append(record)
    for queue in queues.values():
        queue.reverse()
    shuffled = []
    while queues:
        key = rng.choice(sorted(queues))
        shuffled.append(queues[key].pop())
        if not queues[key]:
            del queues[key]
    return shuffled


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 40))
def test_any_interleaving_and_batching_gives_the_same_digest(
        scripted: ScriptedLog, records: list[RawRecord], reference: str,
        tmp_path_factory: pytest.TempPathFactory, seed: int, batch: int) -> None:
    path = tmp_path_factory.mktemp("shuffled") / "hub.duckdb"
    shuffled = interleave(records, random.Random(seed))
    project(path, shuffled, scripted.anchor, batch=batch)
    assert digest_file(path).sha256 == reference


def test_a_restart_between_batches_continues_to_the_same_digest(
        scripted: ScriptedLog, records: list[RawRecord], reference: str,
        tmp_path: Path) -> None:
    path = tmp_path / "hub.duckdb"
    shuffled = interleave(records, random.Random(3))
    for part in (shuffled[:40], shuffled[40:77], shuffled[77:]):  # three lives of the runner
        project(path, part, scripted.anchor, batch=9, log=records)
    assert digest_file(path).sha256 == reference


def test_a_record_already_projected_is_refused_and_nothing_is_written(
        scripted: ScriptedLog, records: list[RawRecord], tmp_path: Path) -> None:
    path = tmp_path / "hub.duckdb"
    project(path, records[:30], scripted.anchor)
    before = digest_file(path).sha256
    registry_partition = partition_for(REGISTRY_COI.encode(), PARTITIONS)
    with Projection(path, "test", scripted.anchor, True, registry_partition,
                    seals=SEAL_BOOK) as projection:
        with pytest.raises(OffsetRegression, match=r"already projected"):
            projection.apply([records[30], records[5]])
    assert digest_file(path).sha256 == before


def test_the_digest_changes_when_the_log_does(scripted: ScriptedLog,
                                              records: list[RawRecord], reference: str,
                                              tmp_path: Path) -> None:
    project(tmp_path / "short.duckdb", records[:-1], scripted.anchor)
    assert digest_file(tmp_path / "short.duckdb").sha256 != reference


def test_a_file_for_another_deployment_is_refused(scripted: ScriptedLog,
                                                   records: list[RawRecord],
                                                   tmp_path: Path) -> None:
    project(tmp_path / "hub.duckdb", records[:5], scripted.anchor)
    with pytest.raises(RuntimeError, match="topic_prefix = 'test'.*'other'"):
        project(tmp_path / "hub.duckdb", records[5:], scripted.anchor, topic_prefix="other")


def test_a_file_verified_under_another_trust_anchor_is_refused(scripted: ScriptedLog,
                                                               records: list[RawRecord],
                                                               tmp_path: Path) -> None:
    project(tmp_path / "hub.duckdb", records[:5], anchor=None)
    with pytest.raises(RuntimeError, match="trust_anchor = 'none'"):
        project(tmp_path / "hub.duckdb", records[5:], scripted.anchor)


def test_a_file_of_another_table_layout_must_be_rebuilt(scripted: ScriptedLog,
                                                         records: list[RawRecord],
                                                         tmp_path: Path) -> None:
    project(tmp_path / "hub.duckdb", records[:5], scripted.anchor)
    con = duckdb.connect(str(tmp_path / "hub.duckdb"))
    con.execute("UPDATE log.meta SET value = 'older' WHERE key = 'layout'")
    con.close()
    with pytest.raises(LayoutError, match="layout 'older'.*projections rebuild"):
        project(tmp_path / "hub.duckdb", records[5:], scripted.anchor)
    with pytest.raises(LayoutError, match="layout 'older'"):
        digest_file(tmp_path / "hub.duckdb")


# -- the lifecycle fold and its stored form ---------------------------------------------------

def stages_of(therapy: TherapyScenario) -> list[str]:
    """The stage after each event of ``therapy``, by the policy table's lifecycle fold."""
    state = LifecycleState()
    stages = []
    for event in therapy.log:
        advance(state, event.event_type, event.payload, event.producer)
        stages.append(state.stage.value)
    return stages


def test_a_rejected_batch_sends_the_therapy_back_to_approved_and_on_again() -> None:
    scenario = TherapyScenario(Hub())
    scenario.run_until(RECIPE_STEPS[-1])
    scenario.accept(scenario.record_qc("FAIL"))
    scenario.accept(scenario.release("REJECTED"))
    scenario.batch_id = "BATCH-2"
    scenario.run(("start_manufacturing", *RECIPE_STEPS, *QC_STEPS, "release", "ship",
                  "receive_at_site", "place#1", "place#2"))
    assert stages_of(scenario)[-(12 + len(RECIPE_STEPS)):] == [
        "QC", "APPROVED",  # the failed QC, then the rejection
        "MANUFACTURING", *["MANUFACTURING"] * len(RECIPE_STEPS),  # start, the recipe's steps
        "QC", "QC", "QC", "QC",  # the panel's four tests
        "RELEASED", "SHIPPED", "RECEIVED_AT_SITE", "PLACED", "PLACED"]


def test_the_projection_stores_the_stage_the_fold_reached(scripted: ScriptedLog,
                                                         records: list[RawRecord],
                                                         tmp_path: Path) -> None:
    project(tmp_path / "hub.duckdb", records, scripted.anchor)
    con = connect(tmp_path / "hub.duckdb", read_only=True)
    try:
        stored = dict(con.execute("SELECT coi, stage FROM log.therapy_progress").fetchall())
    finally:
        con.close()
    for therapy in scripted.therapies.values():
        assert stored[therapy.coi] == stages_of(therapy)[-1]


def test_the_fold_survives_its_own_serialisation(scripted: ScriptedLog) -> None:
    therapy = scripted.therapies["A"]
    progress = TherapyProgress()
    for event in therapy.log[:20]:
        advance(progress.lifecycle, event.event_type, event.payload, event.producer)
    restored = TherapyProgress.restore(progress.chain_seq, progress.head, progress.stage.value,
                                       progress.state_json())
    assert restored == progress
    assert progress.lifecycle.approvers  # the round trip carried remembered facts


def test_projected_files_open_read_only_while_closed(scripted: ScriptedLog,
                                                      records: list[RawRecord],
                                                      tmp_path: Path) -> None:
    project(tmp_path / "hub.duckdb", records, scripted.anchor)
    con = connect(tmp_path / "hub.duckdb", read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM log.envelopes").fetchone()[0] == len(records)
    finally:
        con.close()
