"""The connector outcome: one answer type, said as an HL7 ACK, a FHIR OperationOutcome and a
result-file entry (no Kafka)."""

from __future__ import annotations

import json

from pcvhub.connectors.fhir.app import operation_outcome
from pcvhub.connectors.hl7.messages import ack
from pcvhub.connectors.outcome import Outcome, Problem, Status

TWO_PROBLEMS = Outcome.refuse("HL7", "HL7_REQUIRED_FIELD_MISSING", problems=(
    Problem("PID-3.4", "is empty", "101", "PID^1^3^1^4"),
    Problem("PID-8", "is 'X', not a code of table 0001", "103", "PID^1^8"),
))


def test_a_refusal_without_its_own_reason_says_every_problem():
    assert TWO_PROBLEMS.status is Status.REFUSED and not TWO_PROBLEMS.accepted
    assert TWO_PROBLEMS.reason == "PID-3.4: is empty; PID-8: is 'X', not a code of table 0001"
    assert Outcome.already_accepted("again").accepted and Outcome.accept().accepted


def test_an_ack_carries_one_err_segment_per_problem():
    segments = ack("AE", TWO_PROBLEMS, control_id="C9", ack_control_id="A9").strip("\r")
    errs = [s.split("|") for s in segments.split("\r") if s.startswith("ERR")]
    assert [(e[2], e[3].split("^")[0], e[4]) for e in errs] == [
        ("PID^1^3^1^4", "101", "E"), ("PID^1^8", "103", "E")]
    warned = Outcome.accept("enrolled", [Problem("PID-8", "differs", "103", "PID^1^8")])
    (err,) = [s for s in ack("AA", warned, control_id="C9", ack_control_id="A9").split("\r")
              if s.startswith("ERR")]
    assert err.split("|")[4] == "W"


def test_an_operation_outcome_has_one_issue_per_problem():
    refused = Outcome.refuse("FHIR", "FHIR_INVALID_RESOURCE", problems=(
        Problem("Condition.code", "no coding", "required"),
        Problem("", "the body is odd", "structure")))
    body = json.loads(operation_outcome(400, refused).body)
    assert body["issue"] == [
        {"severity": "error", "code": "required", "diagnostics": "no coding",
         "expression": ["Condition.code"]},
        {"severity": "error", "code": "structure", "diagnostics": "the body is odd"}]
    repeat = json.loads(operation_outcome(200, Outcome.already_accepted("seen")).body)
    assert repeat["issue"] == [{"severity": "information", "code": "duplicate",
                                "diagnostics": "seen"}]


def test_a_result_entry_reads_back_as_the_same_answer():
    gatekept = Outcome.refuse("R4", "OUT_OF_ORDER", "a second batch")
    entry = gatekept.as_result(refused_by="gatekeeper")
    assert entry == {"status": "refused", "refused_by": "gatekeeper", "rule": "R4",
                     "reason_code": "OUT_OF_ORDER", "reason": "a second batch"}
    assert Outcome.from_result(entry) == gatekept
    assert Outcome.accept().as_result(refused_by="gatekeeper") == {"status": "accepted"}
    pending = Outcome.pending("no verdict yet")
    assert Outcome.from_result(pending.as_result(refused_by="gatekeeper")) == pending
