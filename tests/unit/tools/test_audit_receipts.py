"""Receipts on the push Result: auditSeq/auditHash survive the JSON round trip, Etcha's Result
without them still parses, and `agent push -v` prints them."""

from __future__ import annotations

from agent.run.result import Result
from agent.tools.push_output import PushOutcome, format_outcome

HASH = "ab" * 32


def test_the_receipt_survives_the_json_round_trip() -> None:
    result = Result(changed_ids=("a",), changed_outputs=("x",), audit_seq=7, audit_hash=HASH)
    doc = result.to_json()
    assert (doc["auditSeq"], doc["auditHash"]) == (7, HASH)
    assert Result.from_json(doc) == result


def test_a_result_without_a_receipt_has_no_receipt_keys() -> None:
    doc = Result(err="x").to_json()
    assert "auditSeq" not in doc and "auditHash" not in doc
    assert Result.from_json({"err": "", "auditSeq": True}).audit_seq == 0


def test_push_verbose_prints_the_receipt() -> None:
    result = Result(changed_ids=("a",), changed_outputs=("x",), audit_seq=7, audit_hash=HASH)
    outcome = PushOutcome("web1", changed_ids=("a",), has_result=True, result=result)
    verbose = format_outcome(outcome, check=False, command_mode=False, color=False, verbose=True)
    assert f"    Audit receipt: 7:{HASH}" in verbose.splitlines()
    quiet = format_outcome(outcome, check=False, command_mode=False, color=False)
    assert "Audit receipt" not in quiet
