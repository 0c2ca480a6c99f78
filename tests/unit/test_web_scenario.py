"""What the dashboard tests show: the projections' scripted log and three more therapies.

``web_scenario(path)`` projects (no Kafka) the scripted scenario of
``test_projection_scenario`` (therapy A with its quarantined dose refused at dispensing,
B billed, C stopped after its sample left the nurse, and A's duplicate, unreadable and
unregistered-signer records), plus:

- therapy D: its batch names a design hash that was never approved, refused by the real
  gatekeeper code (R5 DESIGN_ALTERED_AFTER_APPROVAL, with an alert);
- therapy E: its sample id carries HTML markup, which every page must escape;
- therapy F: its only event, an enrolment signed by an unregistered key, refused (R1), so
  the log holds a refusal of F and no accepted event;
- therapy E's treatment consent, recorded by the physician from a paper form as a late
  entry (envelope v2's signed flag), which every page must show as late;
- a record written straight to C's chain on the canonical topic (as a bug or someone with
  broker access could), signed by an unregistered key: the projection re-verifies it and
  the dashboard must show C's sample link as broken.

The HTML helpers read pages the way the tests need them: tables as rows of cell texts,
elements by id. The tests in this module check the scenario itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from pcvhub.ids import new_coi
from pcvhub.log.verify import RawRecord
from pcvhub.projections.store import connect
from pcvhub.topics import partition_for
from pcvhub.trust.issuer import EventIssuer
from pcvhub.trust.signing import EventSigner, HybridKeyPair

from .test_projection_scenario import PARTITIONS, ScriptedLog, project, scripted_log
from .therapy_builder import DAY_US, TherapyScenario

MARKUP_SAMPLE = '<script>alert("sample")</script>'
UNAPPROVED_DESIGN = "0f" * 32
LATE_REASON = "paper consent form found in the clinic's file"


@dataclass
class WebScenario:
    """The projected file and what the tests need to know about it."""

    path: Path
    log: ScriptedLog
    d: TherapyScenario
    e: TherapyScenario
    altered_batch_id: str  # D's refused ManufacturingStarted event id
    coi_f: str  # a therapy whose only event was refused
    forged_id: str  # the unregistered record on C's chain
    patient_hashes: set[str] = field(default_factory=set)
    unsealed_id: str = ""  # E's record written past the gatekeeper (no seal)
    late_id: str = ""  # E's paper consent, recorded as a late entry

    @property
    def a(self) -> TherapyScenario:
        return self.log.therapies["A"]

    @property
    def c(self) -> TherapyScenario:
        return self.log.therapies["C"]


def web_scenario(path: Path) -> WebScenario:
    log = scripted_log()
    a, c = log.therapies["A"], log.therapies["C"]
    # D and E start after A's last event, so that no timer of theirs fires on a partition
    # whose event time A moved on (the alerts shown stay the ones the scenario names)
    d = TherapyScenario(log.hub, cast=a.actors, patient_hash="dd" * 32)
    d.now_us = a.now_us + DAY_US
    log.run(d, "approve_second")
    altered = d.start_manufacturing(design_hash=UNAPPROVED_DESIGN)
    verdict = d.judge(altered)
    assert not verdict.accepted, "the gatekeeper accepted a batch of an unapproved design"
    log.send(altered)

    e = TherapyScenario(log.hub, cast=a.actors, patient_hash="ee" * 32)
    e.now_us = d.now_us + DAY_US
    e.sample_id = MARKUP_SAMPLE
    log.run(e, "receive_sample")
    # a paper consent form found in the clinic's file, entered now as a late entry
    late = log.accept(e, e.consent("TREATMENT", by="physician", late_entry=LATE_REASON))

    stranger = EventIssuer(EventSigner("stranger", "stranger-k1", HybridKeyPair.generate()))
    coi_f = new_coi("KYOTO01", 2026)
    enrolment = stranger.issue("PatientEnrolled", coi_f, {
        "patient_hash": "ff" * 32, "site_id": "KYOTO01", "mrn_assigning_authority": "KUH",
        "sex": "MALE", "therapy_type": e.therapy_type}, occurred_at_us=e.now_us + 1)
    log.ingress.append((enrolment.key, enrolment.wire))

    records = log.gatekeep()
    forged = stranger.issue("SampleReceived", c.coi, {
        "sample_id": c.sample_id, "condition": "ACCEPTABLE", "location": "unknown bench",
        "temperature_celsius": 4.0}, occurred_at_us=c.now_us + 1, prev_hash=c.case.head)
    partition = partition_for(c.coi.encode(), PARTITIONS)
    offset = 1 + max(r.offset for r in records
                     if r.topic == "events" and r.partition == partition)
    records.append(RawRecord.at("events", partition, offset, forged.key, forged.wire))
    # E's next record, signed by a registered key and linked onto its chain, but written
    # straight to the canonical topic (broker access) instead of through the gatekeeper:
    # it carries no seal
    unsealed = e.actors["nurse"].issuer.issue("ConsentWithdrawn", e.coi, {
        "scope": "RESEARCH", "consent_document_ref": "DocumentReference/9", "reason": None,
        "granted_event_id": None}, occurred_at_us=e.now_us + 1, prev_hash=e.case.head)
    partition = partition_for(e.coi.encode(), PARTITIONS)
    offset = 1 + max(r.offset for r in records
                     if r.topic == "events" and r.partition == partition)
    records.append(RawRecord.at("events", partition, offset, unsealed.key, unsealed.wire))
    project(path, records, log.anchor)
    therapies = [*log.therapies.values(), d, e]
    return WebScenario(path, log, d, e, altered.event_id, coi_f, forged.envelope.event_id,
                       {"ff" * 32, *(t.patient_hash for t in therapies)},
                       unsealed.envelope.event_id, late.event_id)


# -- reading pages ----------------------------------------------------------------------------

@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text for c in self.children]
        return " ".join(" ".join(parts).split())

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[Element]:
        found = []
        for child in self.children:
            if isinstance(child, Element):
                if (tag is None or child.tag == tag) and (
                        cls is None or cls in child.attrs.get("class", "").split()):
                    found.append(child)
                found += child.find_all(tag, cls)
        return found

    def by_id(self, element_id: str) -> Element:
        if self.attrs.get("id") == element_id:
            return self
        for child in self.find_all():
            if child.attrs.get("id") == element_id:
                return child
        raise AssertionError(f"no element with id {element_id!r}")

    def rows(self) -> list[list[str]]:
        """Texts of the cells of every body row of the tables in this element."""
        return [[cell.text for cell in row.find_all("td")] for row in self.find_all("tr")
                if row.find_all("td")]


VOID = {"meta", "link", "br", "img", "input", "hr"}


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, 0, -1):
            if self.open[i].tag == tag:
                del self.open[i:]
                return

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse(html: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


# -- the scenario itself ----------------------------------------------------------------------

def test_the_scenario_holds_what_the_dashboard_tests_expect(tmp_path: Path) -> None:
    scenario = web_scenario(tmp_path / "hub.duckdb")
    con = connect(scenario.path, read_only=True)
    try:
        refused = dict(con.execute(
            "SELECT rejected_event_id, reason_code FROM rejections").fetchall())
        forged = con.execute("SELECT verification, chain_link FROM audit(?) WHERE event_id = ?",
                             [scenario.c.coi, scenario.forged_id]).fetchone()
        stages = dict(con.execute("SELECT coi, stage FROM case_status").fetchall())
        refused_f = con.execute("SELECT rule, reason_code FROM rejections WHERE coi = ?",
                                [scenario.coi_f]).fetchall()
    finally:
        con.close()
    assert refused[scenario.altered_batch_id] == "DESIGN_ALTERED_AFTER_APPROVAL"
    assert refused[scenario.log.refused_dispense_id] == "DOSE_QUARANTINED"
    assert refused_f == [("R1", "UNREGISTERED_KEY")] and scenario.coi_f not in stages
    assert forged == ("UNREGISTERED_KEY", "LINKED")
    assert stages[scenario.d.coi] == "APPROVED"
    assert stages[scenario.e.coi] == "RECEIVED_AT_LAB"


def test_the_page_reader_finds_tables_and_ids() -> None:
    page = parse('<div id="x"><table><tr><th>h</th></tr><tr><td>a <b>b</b></td><td>c'
                 '</td></tr></table><br><img src="i"><p class="n m">t &amp; u</p></div>')
    assert page.by_id("x").rows() == [["a b", "c"]]
    assert [p.text for p in page.find_all("p", "m")] == ["t & u"]
