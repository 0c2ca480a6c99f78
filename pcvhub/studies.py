"""A study's coordinator (top floor): request, approve, run the parties, record the run.

The steps of a cross-hospital study, each an event on the study's chain
(:mod:`pcvhub.mpc.chain`), each published through the gatekeeper and known accepted
(``publish_chain_event``) before the next:

1. a RESEARCHER requests the study (``StudyRequested``: the whole spec and its digest);
2. an ETHICS_APPROVER approves that exact digest (``StudyApproved``);
3. each hospital's party reads the approval from the log, checks its patients' consent
   at the run's time and computes (``pcvhub mpc party --study-id``); here all parties run
   on this machine (:func:`run_local_parties`), as in the tests and the demo;
4. only when every party finished and all report the same result is the run recorded
   (``StudyRunCompleted``: parties, consent time, result digest) and its result published
   (``StudyResultPublished``). A run that failed anywhere records nothing
   (:class:`StudyRunFailed`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pcvhub.config import Settings
from pcvhub.connectors.registrar import publish_chain_event, publish_chain_events
from pcvhub.ids import study_coi, uuid7
from pcvhub.mpc.chain import approval_payload, request_payload, run_payloads
from pcvhub.mpc.local_run import LocalStudyRun, finish
from pcvhub.mpc.results import result_digest
from pcvhub.mpc.study import Statistic, StudySpec
from pcvhub.schemas.codec import to_us
from pcvhub.trust.issuer import IssuedEvent
from pcvhub.trust.signing import EventSigner


class StudyRunFailed(RuntimeError):
    """A party refused or failed, or the parties disagree: nothing is recorded.

    :param parties: site -> (exit code, output) of each party, when the parties ran here.
    """

    def __init__(self, message: str, parties: Mapping[str, tuple[int, str]] | None = None
                 ) -> None:
        super().__init__(message)
        self.parties = dict(parties or {})


def request_study(settings: Settings, researcher: EventSigner, spec: StudySpec, title: str
                  ) -> IssuedEvent:
    return publish_chain_event(settings, researcher, study_coi(spec.study_id),
                               "StudyRequested", request_payload(spec, title))


def approve_study(settings: Settings, approver: EventSigner, spec: StudySpec,
                  approval_ref: str, expires_at_us: int | None = None) -> IssuedEvent:
    return publish_chain_event(settings, approver, study_coi(spec.study_id), "StudyApproved",
                               approval_payload(spec, approval_ref, expires_at_us))


@dataclass(frozen=True)
class RecordedRun:
    run_id: str
    result: dict[str, Any]
    result_digest: str
    events: tuple[IssuedEvent, IssuedEvent]


def agreed_result(spec: StudySpec, results: Mapping[str, Path]) -> dict[str, Any]:
    """The one result every party wrote (site -> its result file), or StudyRunFailed."""
    missing = [site for site in spec.sites if not results.get(site, Path()).is_file()]
    if missing:
        raise StudyRunFailed(f"study {spec.study_id}: no result from {', '.join(missing)}; "
                             "the run is not recorded")
    read = {site: json.loads(results[site].read_text()) for site in spec.sites}
    digests = {site: result_digest(r) for site, r in read.items()}
    if len(set(digests.values())) != 1:
        raise StudyRunFailed(f"study {spec.study_id}: the parties' results differ "
                             f"({', '.join(f'{s} {d[:12]}' for s, d in digests.items())}); "
                             "the run is not recorded")
    return read[spec.sites[0]]


def record_run(settings: Settings, researcher: EventSigner, spec: StudySpec,
               statistics: Sequence[Statistic], consent_as_of: datetime,
               results: Mapping[str, Path]) -> RecordedRun:
    """Step 4: record the run and publish its result, once all parties agree."""
    result = agreed_result(spec, results)
    run_id = str(uuid7())
    run, published = run_payloads(spec, run_id, [s.value for s in statistics],
                                  to_us(consent_as_of), result)
    recorded, shown = publish_chain_events(settings, researcher, study_coi(spec.study_id), [
        ("StudyRunCompleted", run), ("StudyResultPublished", published)])
    return RecordedRun(run_id, result, run["result_digest"], (recorded, shown))


def run_local_parties(root: Path, spec: StudySpec, rows: Mapping[str, Sequence[str]],
                      env: Mapping[str, str], *, as_of: datetime | None = None,
                      statistics: Sequence[Statistic] = (), timeout: float = 600
                      ) -> tuple[LocalStudyRun, list[tuple[int, str]]]:
    """Step 3 on this machine: one ``pcvhub mpc party --study-id`` process per site.

    :param rows: site -> the party's row arguments (``--projection FILE``).
    :param env: the parties' environment: the deployment whose log holds the study.
    :returns: the run's files and each party's (exit code, output), in site order.
    """
    run = LocalStudyRun.create(root, spec, on_the_log=True)
    extra = [*(("--as-of", as_of.isoformat()) if as_of is not None else ()),
             *(a for s in statistics for a in ("--statistic", s.value))]
    processes = [run.start(run.command(i, rows[site], *extra), env=env)
                 for i, site in enumerate(spec.sites)]
    return run, finish(processes, timeout=timeout)


def run_and_record(settings: Settings, researcher: EventSigner, root: Path, spec: StudySpec,
                   rows: Mapping[str, Sequence[str]], env: Mapping[str, str],
                   as_of: datetime, statistics: Sequence[Statistic] = ()) -> RecordedRun:
    """Steps 3 and 4: run every party here, then record the run, or StudyRunFailed."""
    run, outcomes = run_local_parties(root, spec, rows, env, as_of=as_of,
                                      statistics=statistics)
    failed = [(site, code, out) for site, (code, out) in zip(spec.sites, outcomes, strict=True)
              if code != 0]
    if failed:
        site, code, out = failed[0]
        last = out.strip().splitlines()[-1] if out.strip() else "(no output)"
        raise StudyRunFailed(f"study {spec.study_id}: party {site} exited {code}: {last}; "
                             f"{len(failed)} of {len(spec.sites)} parties failed, the run is "
                             "not recorded", dict(zip(spec.sites, outcomes, strict=True)))
    computed = tuple(s for s in spec.statistics if not statistics or s in statistics)
    return record_run(settings, researcher, spec, computed, as_of,
                      {site: run.result(site) for site in spec.sites})
