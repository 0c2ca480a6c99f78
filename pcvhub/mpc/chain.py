"""A study's chain on the log: what was requested, what an ethics approver approved, what ran.

Every study has a chain of its own (``pcvhub:study:<study id>``, :func:`pcvhub.ids.study_coi`)
on the canonical log, holding only study events (the gatekeeper's R4 keeps it so):

- ``StudyRequested`` (a RESEARCHER): the whole :class:`~pcvhub.mpc.study.StudySpec` as
  canonical JSON, its digest, and the parts people read (statistics, sites, consent
  scope, small-cell threshold), which must agree with the spec;
- ``StudyApproved`` (an ETHICS_APPROVER, signature meaning APPROVED): names the digest of
  the exact spec approved, optionally until when;
- ``StudyRunCompleted`` and ``StudyResultPublished`` (the RESEARCHER who ran the parties):
  one run, its parties and result digest, then the result itself.

A party folds the chain with :class:`StudyChain` from records the one log reader admitted
(:func:`read_study_chain`) and computes only :meth:`StudyChain.approved`: the *latest*
request, approved by its digest, by an actor holding ETHICS_APPROVER who is not the
requester, at the time the run starts. A request altered after its approval (another
statistic, another threshold) has another digest, so no approval covers it and every
party refuses it. An event of the chain that does not hold together is not folded; its
reason is kept in :attr:`StudyChain.ignored` and shown with the refusal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pcvhub.ids import study_coi
from pcvhub.mpc.study import StudyRefused, StudySpec, StudySpecError
from pcvhub.schemas.codec import to_us
from pcvhub.schemas.policy import ETHICS_APPROVER
from pcvhub.streams.event import InboundEvent

STUDY_EVENTS = ("StudyRequested", "StudyApproved", "StudyRunCompleted", "StudyResultPublished")


@dataclass(frozen=True)
class StudyRequest:
    spec: StudySpec
    digest: str
    requester: str
    event_id: str
    at_us: int


@dataclass(frozen=True)
class StudyApproval:
    digest: str
    approver: str
    approval_ref: str
    expires_at_us: int | None
    event_id: str
    at_us: int


@dataclass(frozen=True)
class StudyRunRecord:
    run_id: str
    spec_digest: str
    statistics: tuple[str, ...]
    parties: tuple[str, ...]
    consent_as_of_us: int
    result_digest: str
    event_id: str


@dataclass
class StudyChain:
    """The fold of one study's chain (events in log order, each already admitted)."""

    study_id: str
    requests: list[StudyRequest] = field(default_factory=list)
    approvals: list[StudyApproval] = field(default_factory=list)
    runs: dict[str, StudyRunRecord] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> result JSON
    ignored: list[str] = field(default_factory=list)  # why an event was not folded

    @property
    def coi(self) -> str:
        return study_coi(self.study_id)

    def apply(self, event: InboundEvent, signer_roles: frozenset[str]) -> None:
        """Fold one admitted event of this chain; ``signer_roles``: its signer's roles in
        the registry the log reader folded."""
        if event.coi != self.coi or event.event_type not in STUDY_EVENTS:
            return
        problem = getattr(self, f"_{event.event_type}")(event, event.payload, signer_roles)
        if problem is not None:
            self.ignored.append(f"{event.event_type} {event.event_id}: {problem}")

    # -- one method per event type; each returns why it is not folded, or None ------------

    def _StudyRequested(self, event: InboundEvent, p: Mapping[str, Any],  # noqa: N802
                        roles: frozenset[str]) -> str | None:
        try:
            spec = StudySpec.from_json(json.loads(p["spec"]), where="its spec")
        except (StudySpecError, json.JSONDecodeError, TypeError) as exc:
            return f"the spec is not a valid study specification: {exc}"
        digest = spec.digest().hex()
        disagree = [name for name, said, actual in (
            ("study_id", p["study_id"], self.study_id), ("spec study_id", spec.study_id,
                                                         self.study_id),
            ("spec_digest", p["spec_digest"], digest),
            ("statistics", list(p["statistics"]), [s.value for s in spec.statistics]),
            ("sites", list(p["sites"]), list(spec.sites)),
            ("consent_scope", p["consent_scope"], spec.consent_scope),
            ("small_cell_threshold", p["small_cell_threshold"], spec.small_cell_threshold),
        ) if said != actual]
        if disagree:
            return f"{', '.join(disagree)} disagree(s) with the spec it carries"
        self.requests.append(StudyRequest(spec, digest, event.producer, event.event_id,
                                          event.occurred_at_us))
        return None

    def _StudyApproved(self, event: InboundEvent, p: Mapping[str, Any],  # noqa: N802
                       roles: frozenset[str]) -> str | None:
        if ETHICS_APPROVER not in roles:
            return f"signed by {event.producer}, who is not an {ETHICS_APPROVER}"
        request = self._request(p["spec_digest"])
        if request is None:
            return f"names spec {p['spec_digest'][:12]}, which no request of the chain holds"
        if request.requester == event.producer:
            return (f"{event.producer} requested this spec and may not approve it: an "
                    "ethics approval is someone else's")
        self.approvals.append(StudyApproval(p["spec_digest"], event.producer, p["approval_ref"],
                                            _opt_us(p.get("expires_at")), event.event_id,
                                            event.occurred_at_us))
        return None

    def _StudyRunCompleted(self, event: InboundEvent, p: Mapping[str, Any],  # noqa: N802
                           roles: frozenset[str]) -> str | None:
        if p["run_id"] in self.runs:
            return f"run {p['run_id']} is already recorded"
        self.runs[p["run_id"]] = StudyRunRecord(
            p["run_id"], p["spec_digest"], tuple(p["statistics"]), tuple(p["parties"]),
            to_us(p["consent_as_of"]), p["result_digest"], event.event_id)
        return None

    def _StudyResultPublished(self, event: InboundEvent, p: Mapping[str, Any],  # noqa: N802
                              roles: frozenset[str]) -> str | None:
        from pcvhub.mpc.results import result_digest

        run = self.runs.get(p["run_id"])
        if run is None:
            return f"names run {p['run_id']}, which the chain has not recorded"
        try:
            result = json.loads(p["result"])
        except json.JSONDecodeError as exc:
            return f"the result is not JSON: {exc}"
        if not result_digest(result) == p["result_digest"] == run.result_digest:
            return f"its result does not have the digest run {run.run_id} recorded"
        self.results[run.run_id] = result
        return None

    # -- what a party asks ------------------------------------------------------------------

    def _request(self, digest: str) -> StudyRequest | None:
        return next((r for r in reversed(self.requests) if r.digest == digest), None)

    def approved(self, at_us: int) -> StudySpec:
        """The spec parties may compute at ``at_us``, or :class:`StudyRefused` saying why."""
        def refuse(why: str) -> StudyRefused:
            notes = f" (not folded: {'; '.join(self.ignored)})" if self.ignored else ""
            return StudyRefused(f"study {self.study_id!r} on chain {self.coi}: {why}{notes}")

        if not self.requests:
            raise refuse("no valid StudyRequested on the log")
        latest = self.requests[-1]
        approvals = [a for a in self.approvals if a.digest == latest.digest]
        if not approvals:
            earlier = any(a.digest != latest.digest for a in self.approvals)
            raise refuse(f"its current spec {latest.digest[:12]} (requested by "
                         f"{latest.requester}, event {latest.event_id}) is not approved"
                         + ("; an earlier spec was, and the request changed since" if earlier
                            else "; an ethics approver must approve it (StudyApproved)"))
        live = [a for a in approvals if a.expires_at_us is None or a.expires_at_us > at_us]
        if not live:
            raise refuse(f"the approval of spec {latest.digest[:12]} expired at "
                         f"{max(a.expires_at_us or 0 for a in approvals)} µs")
        return latest.spec


def _opt_us(value: datetime | int | None) -> int | None:
    return None if value is None else to_us(value)


def fold_study_chain(study_id: str, events: Iterable[tuple[InboundEvent, frozenset[str]]]
                     ) -> StudyChain:
    chain = StudyChain(study_id)
    for event, roles in events:
        chain.apply(event, roles)
    return chain


def read_study_chain(settings: Any, study_id: str) -> StudyChain:
    """The study's chain as the canonical log holds it now, through the one log reader
    (signatures, keys and the hash chain checked; a quarantined record is never folded)."""
    from pcvhub.log.reader import deployment_verifier, read_verified
    from pcvhub.log.verify import CANONICAL, VerifiedRecord
    from pcvhub.topics import Principal, partition_for, topic_spec

    coi = study_coi(study_id)
    reader = settings.as_principal(Principal.READER)
    verifier = deployment_verifier(reader, "mpc study chain")
    try:
        partition = partition_for(coi.encode(), topic_spec(CANONICAL).partitions)
        admitted = [r for r in read_verified(reader, CANONICAL, verifier, [partition])
                    if isinstance(r, VerifiedRecord) and r.coi == coi]
        return fold_study_chain(study_id, ((r.event, verifier.registry.roles_of(
            r.envelope.producer)) for r in admitted))
    finally:
        verifier.close()


# -- the payloads a producer signs ------------------------------------------------------------

def request_payload(spec: StudySpec, title: str) -> dict[str, Any]:
    return {"study_id": spec.study_id, "title": title,
            "statistics": [s.value for s in spec.statistics], "sites": list(spec.sites),
            "consent_scope": spec.consent_scope,
            "small_cell_threshold": spec.small_cell_threshold,
            "spec": spec.canonical().decode(), "spec_digest": spec.digest().hex()}


def approval_payload(spec: StudySpec, approval_ref: str, expires_at_us: int | None = None
                     ) -> dict[str, Any]:
    return {"study_id": spec.study_id, "spec_digest": spec.digest().hex(),
            "approval_ref": approval_ref, "expires_at": expires_at_us}


def run_payloads(spec: StudySpec, run_id: str, statistics: Sequence[str],
                 consent_as_of_us: int, result: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``StudyRunCompleted`` and ``StudyResultPublished`` of one finished run."""
    from pcvhub.mpc.results import result_digest

    digest = result_digest(result)
    run = {"study_id": spec.study_id, "run_id": run_id, "spec_digest": spec.digest().hex(),
           "statistics": list(statistics), "parties": list(spec.sites),
           "consent_as_of": consent_as_of_us, "result_digest": digest}
    published = {"study_id": spec.study_id, "run_id": run_id, "result_digest": digest,
                 "result": json.dumps(result, sort_keys=True, separators=(",", ":"))}
    return run, published
