"""The push recap, statuses, JSON objects and exit codes; the fleet flags of the push parser."""

from __future__ import annotations

import pytest

from agent.cli import build_parser
from agent.config.schema import config_from_dict
from agent.core.errors import ConfigError, UsageError
from agent.net.http import HTTPClient, RequestError
from agent.tools.push import no_targets_message
from agent.tools.push_output import (
    PushOutcome,
    Recap,
    exit_code,
    format_outcome,
    outcome_json,
    outcome_status,
)
from agent.tools.push_targets import select_targets

CHANGED = PushOutcome("c", has_result=True, changed_ids=("a",))
REMOVED = PushOutcome("r", has_result=True, removed_ids=("z",))
UNCHANGED = PushOutcome("u", has_result=True)
FAILED = PushOutcome("f", error="boom", has_result=True, changed_ids=("a",))
UNREACHABLE = PushOutcome("x", error="timed out after 2m", unreachable=True)
SKIPPED = PushOutcome("s", error="not pushed", skipped=True)


def test_each_outcome_has_one_status() -> None:
    statuses = [
        outcome_status(o) for o in (CHANGED, REMOVED, UNCHANGED, FAILED, UNREACHABLE, SKIPPED)
    ]
    assert statuses == ["changed", "changed", "unchanged", "failed", "unreachable", "skipped"]


def test_recap_line_counts_like_ansible() -> None:
    recap = Recap([CHANGED, REMOVED, UNCHANGED, FAILED, UNREACHABLE])
    assert recap.line() == "5 targets: 2 changed, 1 unchanged, 1 failed, 1 unreachable"
    assert Recap([UNCHANGED]).line() == "1 target: 0 changed, 1 unchanged, 0 failed, 0 unreachable"


def test_recap_names_skipped_targets_only_when_there_are_some() -> None:
    recap = Recap([FAILED, SKIPPED, SKIPPED])
    assert recap.line() == "3 targets: 0 changed, 0 unchanged, 1 failed, 0 unreachable, 2 skipped"
    assert recap.as_json() == {
        "recap": {
            "targets": 3,
            "changed": 0,
            "unchanged": 0,
            "failed": 1,
            "unreachable": 0,
            "skipped": 2,
        }
    }


@pytest.mark.parametrize(
    ("outcomes", "detailed", "code"),
    [
        ((UNCHANGED,), False, 0),
        ((UNCHANGED,), True, 0),
        ((CHANGED, UNCHANGED), False, 0),
        ((CHANGED, UNCHANGED), True, 2),
        ((CHANGED, FAILED), True, 1),
        ((CHANGED, UNREACHABLE), True, 1),
        ((UNREACHABLE,), False, 1),
    ],
)
def test_exit_code(outcomes: tuple[PushOutcome, ...], detailed: bool, code: int) -> None:
    assert exit_code(Recap(outcomes), detailed=detailed) == code


def test_unreachable_and_skipped_blocks_say_so() -> None:
    text = format_outcome(UNREACHABLE, check=False, command_mode=False, color=False)
    assert text == "x:\n    UNREACHABLE: timed out after 2m"
    skipped = format_outcome(SKIPPED, check=False, command_mode=False, color=True)
    assert skipped == "s:\n    \033[33mSKIPPED: not pushed\033[0m"


def test_outcome_json_keeps_the_result_key_names() -> None:
    assert outcome_json(FAILED, check=True) == {
        "target": "f",
        "status": "failed",
        "check": True,
        "err": "boom",
        "changedIDs": ["a"],
        "changedOutputs": [],
        "removedIDs": [],
    }


def test_push_parser_reads_the_fleet_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["push", "--timeout", "30s", "-j", "3", "--serial", "2", "--detailed-exitcode", "core"]
    )
    assert (args.timeout, args.forks, args.serial, args.detailed_exitcode) == ("30s", 3, 2, True)
    assert parser.parse_args(["push", "--forks", "5", "core"]).forks == 5
    defaults = parser.parse_args(["push", "core"])
    assert (defaults.timeout, defaults.forks, defaults.serial) == (None, None, None)


@pytest.mark.parametrize("flag", ["--forks", "-j", "--serial"])
def test_fleet_counts_must_be_positive(flag: str) -> None:
    with pytest.raises(UsageError, match="expected a whole number of at least 1, got '0'"):
        build_parser().parse_args(["push", flag, "0", "core"])


def test_push_timeout_defaults_to_two_minutes() -> None:
    assert config_from_dict({}).build.push_timeout == 120.0
    assert config_from_dict({"build": {"pushTimeout": "30s"}}).build.push_timeout == 30.0


def test_no_targets_for_a_filter_names_the_targets_it_could_match() -> None:
    config = config_from_dict(
        {"targets": {"web1": {"sourcePatterns": {"core": ""}}, "db": {"sourcePatterns": {}}}}
    )
    message = no_targets_message(config, "core", "p.jsonnet", "^zz")
    assert message == (
        "push: expected a target for 'core' matching -n '^zz', got none (targets for 'core': web1)"
    )


def test_no_targets_snippet_for_a_command_leaves_the_pattern_to_the_command_line() -> None:
    message = no_targets_message(config_from_dict({}), "core", "echo hi", None)
    assert '"sourcePatterns": {"core": ""}' in message
    assert "an empty sourcePatterns value pushes the pattern or command given" in message
    assert message.endswith("or push to one host: agent push -h HOST core echo hi")


def test_a_target_hostname_with_a_scheme_is_a_config_error_naming_the_fix() -> None:
    config = config_from_dict(
        {"targets": {"web1": {"hostname": "http://127.0.0.1", "sourcePatterns": {"core": ""}}}}
    )
    with pytest.raises(ConfigError, match=r"targets\.web1\.hostname: .*insecure: true"):
        select_targets(config, "core")


def test_an_unparsable_url_is_a_request_error_not_a_crash() -> None:
    with pytest.raises(RequestError, match="expected a valid http"):
        HTTPClient().request("https://[http://127.0.0.1]:1/x", max_bytes=10, timeout=1)
