"""The printed report of a Result (issue 15 point 1): verbose outputs, failures as failures."""

from __future__ import annotations

from agent.run.result import Result
from agent.tools.report import result_lines

#: A daemon's answer to a push whose second command failed.
ANSWER = {
    "changedIDs": ["a", "b"],
    "changedOutputs": ["made a", "b went wrong"],
    "err": "error changing id b: error running commands: exit status 1: b went wrong",
    "exit": False,
    "failedIDs": ["b"],
    "failedOutputs": ["b went wrong"],
    "removedIDs": ["old"],
    "removedOutputs": ["gone"],
}


def test_a_failed_change_is_listed_as_failed_with_its_output_never_as_changed() -> None:
    lines = result_lines(Result.from_json(ANSWER))
    assert lines == [
        "ERROR: error changing id b: error running commands: exit status 1: b went wrong",
        "Changed 1: a",
        "Removed 1: old",
        "Failed 1: b",
        "b (change):",
        "    b went wrong",
    ]


def test_verbose_prints_each_output_under_its_id_for_push_v() -> None:
    lines = result_lines(Result.from_json(ANSWER), verbose=True)
    assert lines[1:] == [
        "Changed 1: a",
        "a (change):",
        "    made a",
        "Removed 1: old",
        "old (remove):",
        "    gone",
        "Failed 1: b",
        "b (change):",
        "    b went wrong",
    ]


def test_an_etcha_answer_without_failed_keys_reads_as_before() -> None:
    etcha = {k: v for k, v in ANSWER.items() if not k.startswith("failed")}
    lines = result_lines(Result.from_json(etcha))
    assert lines[1:] == ["Changed 2: a, b", "Removed 1: old"]
