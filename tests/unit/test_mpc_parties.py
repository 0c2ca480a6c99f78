"""Three hospitals' parties as separate processes on loopback, over TLS.

Given an approved study and a seeded synthetic cohort per site, when each site runs
``pcvhub mpc party`` in its own process, then every party writes the same result and it
equals the plaintext reference over the pooled rows; what a party received holds none of
another site's counts; a run asking for an unapproved statistic is refused by every
party; a party killed mid-run makes the others fail with a clear error and write nothing;
a spec file never lets a party compute over its patients' rows.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from pcvhub.mpc.aggregates import Layout, aggregate
from pcvhub.mpc.local_run import LocalStudyRun, finish
from pcvhub.mpc.plaintext import reference_result
from pcvhub.mpc.runtime import lone_runtime
from pcvhub.mpc.secure import COUNT_BITS, SURVIVAL_BITS
from pcvhub.mpc.study import Statistic, StudySpec
from pcvhub.mpc.synthetic import synthetic_site_rows

SITES = ("KYOTO01", "OSAKA02", "TOKYO03")
SEED, THERAPIES = 11, 300

#: runs the real CLI in a party process, recording every payload the MPyC runtime takes in
RECORDING_PARTY = """
import pickle, sys
import mpyc.asyncoro
received = []
original = mpyc.asyncoro.MessageExchanger.receive
def receive(self, pc):
    payload = original(self, pc)
    if isinstance(payload, bytes):
        received.append((self.peer_pid, payload))
    else:
        payload.add_done_callback(lambda f: received.append((self.peer_pid, f.result())))
    return payload
mpyc.asyncoro.MessageExchanger.receive = receive
from pcvhub.cli import app
try:
    app(sys.argv[2:], standalone_mode=False)
finally:
    with open(sys.argv[1], "wb") as out:
        pickle.dump(received, out)
"""


def party(run: LocalStudyRun, index: int, *extra: str, statistics: Sequence[str] = (),
          record: Path | None = None) -> list[str]:
    program = (sys.executable, "-c", RECORDING_PARTY, str(record)) if record else ()
    return run.command(index, ("--synthetic", f"{SEED}:{THERAPIES}"), "--connect-timeout",
                       "60", *(a for s in statistics for a in ("--statistic", s)), *extra,
                       program=program)


def study(**changes: object) -> StudySpec:
    fields: dict[str, object] = {
        "study_id": "STUDY-P", "statistics": tuple(Statistic), "sites": SITES,
        "cancer_types": ("C43", "C34", "C18", "C50"), "small_cell_threshold": 5,
        "site_groups": {"KYOTO01": "kansai", "OSAKA02": "kansai", "TOKYO03": "kanto"},
        "day_bins": 128, "survival_buckets": 12}
    return StudySpec(**{**fields, **changes})  # type: ignore[arg-type]


Completed = tuple[LocalStudyRun, list[Path]]


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Completed]:
    run = LocalStudyRun.create(tmp_path_factory.mktemp("mpc-run"), study())
    records = [run.root / f"received-{s}.pickle" for s in SITES]
    outcomes = finish([run.start(party(run, i, record=records[i]))
                        for i in range(len(SITES))])
    for code, out in outcomes:
        assert code == 0, out
    yield run, records


def test_every_party_writes_the_plaintext_reference_result(
        completed: Completed) -> None:
    run, _ = completed
    spec = StudySpec.load(run.spec_path)
    pooled = [r for s in SITES for r in synthetic_site_rows(s, THERAPIES, SEED)]
    expected = reference_result(spec, spec.statistics, pooled).to_json()
    for site in SITES:
        assert json.loads(run.result(site).read_text()) == expected


def test_a_party_receives_no_count_of_another_site_in_the_clear(
        completed: Completed) -> None:
    """Each peer's payloads are shares (even the opened results arrive as shares), so no
    run of another site's counts appears among them as plain field elements."""
    import pickle

    run, records = completed
    spec = StudySpec.load(run.spec_path)
    layout = Layout(spec, spec.statistics)
    rt = lone_runtime()
    widths = {rt.SecInt(bits).field.byte_length for bits in (COUNT_BITS, SURVIVAL_BITS)}
    for index, path in enumerate(records):
        received = pickle.loads(path.read_bytes())
        assert {peer for peer, _ in received} == set(range(len(SITES))) - {index}
        stream = b"".join(payload for _, payload in received)
        for other, site in enumerate(SITES):
            if other == index:
                continue
            mine = aggregate(synthetic_site_rows(site, THERAPIES, SEED), layout, site)
            windows = plain_windows([*mine.counts, *mine.survival], widths)
            assert windows, "the site has counts to look for"
            leaked = [w for w in windows if w in stream]
            assert not leaked, f"party {index} received {site}'s counts in the clear"
        # the detector finds such a run when it is there
        assert plain_windows([7, 3, 9, 4], widths)[0] in b"x" + plain_windows(
            [7, 3, 9, 4], widths)[0] + b"y"


def plain_windows(values: Sequence[int], widths: set[int], size: int = 4) -> list[bytes]:
    """Each run of ``size`` consecutive non-zero counts as little-endian field elements."""
    runs = []
    for start in range(len(values) - size + 1):
        window = values[start:start + size]
        if all(window):
            for width in widths:
                runs.append(b"".join(int(v).to_bytes(width, "little") for v in window))
    return runs


def test_an_unapproved_statistic_is_refused_by_every_party(tmp_path: Path) -> None:
    run = LocalStudyRun.create(tmp_path, study(statistics=(Statistic.RESPONSE_BY_RECIST,)))
    outcomes = finish([run.start(party(run, i, statistics=["response_by_recist",
                                                           "vein_to_vein_quartiles"]))
                       for i in range(len(SITES))], timeout=60)
    for (code, out), site in zip(outcomes, SITES, strict=True):
        assert code == 4, out
        assert "does not approve vein_to_vein_quartiles" in out and f"site {site}" in out
        assert not run.result(site).exists()


@pytest.mark.slow
def test_a_party_killed_mid_run_fails_the_run_and_nobody_writes_a_result(
        tmp_path: Path) -> None:
    # a long survival timeline keeps the run busy for seconds after the parties connect
    run = LocalStudyRun.create(tmp_path, study(statistics=(Statistic.OVERALL_SURVIVAL_KM,),
                                   survival_bucket_days=1, survival_buckets=1500))
    processes = [run.start(party(run, i)) for i in range(len(SITES))]
    victim = processes[2]
    assert victim.stdout is not None
    deadline = time.monotonic() + 120
    for line in victim.stdout:  # wait until the victim is inside the computation
        if "parties connected over TLS" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivors = finish(processes[:2], timeout=60)
    for (code, out), site in zip(survivors, SITES[:2], strict=True):
        assert code == 3, out
        assert re.search(r"lost the connection to .*party \d \(\w+\).* mid-run; no result "
                         r"is kept", out), out
        assert not run.result(site).exists()
    # the first to notice names the killed party; the other may see that one leave first
    assert any("party 2 (TOKYO03)" in out for _, out in survivors)
    assert not run.result(SITES[2]).exists()


@pytest.mark.slow
def test_parties_given_different_specs_stop_before_sharing_a_count(tmp_path: Path) -> None:
    run = LocalStudyRun.create(tmp_path, study(statistics=(Statistic.RESPONSE_BY_RECIST,)))
    other = tmp_path / "other-study.json"
    other.write_text(json.dumps(study(statistics=(Statistic.RESPONSE_BY_RECIST,),
                                      small_cell_threshold=1).to_json()))
    commands = [party(run, i) for i in range(len(SITES))]
    commands[1][commands[1].index("--study") + 1] = str(other)
    processes = [run.start(c) for c in commands]
    for (code, out), site in zip(finish(processes, timeout=120), SITES, strict=True):
        assert code == 3, out
        assert "run a different study spec or statistics" in out
        assert not run.result(site).exists()


def test_a_party_refuses_patients_rows_for_a_study_not_approved_on_the_log(
        tmp_path: Path) -> None:
    """A spec file serves synthetic cohorts only: the rows of a site's patients are
    computed only for a study an ethics approver approved on its chain (``--study-id``)."""
    import typer
    from typer.testing import CliRunner

    from pcvhub.cli_mpc import register

    app = typer.Typer()
    register(app)
    run = LocalStudyRun.create(tmp_path, study())
    projection = tmp_path / "hub.duckdb"
    projection.touch()
    command = run.command(0, ("--projection", str(projection)))
    outcome = CliRunner().invoke(app, command[command.index("mpc"):])
    assert outcome.exit_code == 4, outcome.output
    assert "site KYOTO01: a study over the site's patients is computed only when an ethics " \
           "approver approved it on the log; give --study-id" in " ".join(outcome.output.split())
    assert not run.result("KYOTO01").exists()
