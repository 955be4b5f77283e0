"""`agent test`: Etcha's five-run idempotency logic, pattern discovery, and the CLI."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from support import run_agent

from agent.core.errors import SourceError
from agent.run.model import DEFAULT_EXEC, parse_commands
from agent.tools.testmode import (
    MSG_CHANGE_ERRORS,
    MSG_CHECK_AFTER_CHANGE,
    MSG_CHECK_AFTER_REMOVE,
    MSG_CHECK_NOT_FAILED,
    MSG_REMOVE_ERRORS,
    IdempotencyReport,
    check_idempotency,
    count_commands,
    find_pattern_files,
    format_failures,
)


def idem(cmds: Sequence[Mapping[str, object]], flt: str | None = None) -> dict[str, list[str]]:
    parsed = parse_commands(cmds, where="test")
    return asyncio.run(
        check_idempotency(
            parsed, exec=DEFAULT_EXEC, parent_id_filter=re.compile(flt) if flt else None
        )
    )


def marker(tmp: Path, name: str) -> dict[str, object]:
    p = tmp / name
    return {
        "id": name,
        "check": f"test -e '{p}'",
        "change": f"touch '{p}'",
        "remove": f"rm -f '{p}'",
    }


# -- the five runs -------------------------------------------------------------------------------


def test_idempotent_commands_have_no_failures_and_leave_nothing_behind(tmp_path: Path) -> None:
    assert idem([marker(tmp_path, "a"), marker(tmp_path, "b")]) == {}
    assert list(tmp_path.iterdir()) == []


def test_change_that_does_not_fix_the_check_is_reported(tmp_path: Path) -> None:
    cmd = {"id": "x", "check": "false", "change": "true", "remove": "true"}
    # The check never passes: C = {x}; phase 2 fails; remove never runs (check fails = absent).
    assert idem([cmd]) == {"x": [MSG_CHECK_AFTER_CHANGE]}


def test_failing_change_reports_change_errors_then_the_failed_check(tmp_path: Path) -> None:
    cmd = {"id": "x", "check": f"test -e '{tmp_path}/m'", "change": "exit 3", "remove": "true"}
    assert idem([cmd]) == {"x": [MSG_CHANGE_ERRORS, MSG_CHECK_AFTER_CHANGE]}


def test_remove_that_leaves_the_thing_reports_both_remove_phases(tmp_path: Path) -> None:
    p = tmp_path / "m"
    cmd = {"id": "x", "check": f"test -e '{p}'", "change": f"touch '{p}'", "remove": "true"}
    assert idem([cmd]) == {"x": [MSG_CHECK_AFTER_REMOVE, MSG_CHECK_NOT_FAILED]}


def test_failing_remove_reports_remove_errors(tmp_path: Path) -> None:
    p = tmp_path / "m"
    cmd = {"id": "x", "check": f"test -e '{p}'", "change": f"touch '{p}'", "remove": "exit 4"}
    assert idem([cmd]) == {"x": [MSG_REMOVE_ERRORS, MSG_CHECK_AFTER_REMOVE, MSG_CHECK_NOT_FAILED]}


def test_commands_without_a_check_are_never_judged(tmp_path: Path) -> None:
    cmds = [{"id": "always", "always": True, "change": "true", "remove": "true"}]
    assert idem(cmds) == {}


def test_messages_are_keyed_by_command_id_per_command(tmp_path: Path) -> None:
    good = marker(tmp_path, "good")
    bad = {"id": "bad", "check": "false", "change": "true"}
    assert idem([good, bad]) == {"bad": [MSG_CHECK_AFTER_CHANGE]}


def test_filter_matches_parent_ids_so_top_level_leaves_are_skipped(tmp_path: Path) -> None:
    broken_top = {"id": "top", "check": "false", "change": "true"}
    group = {
        "id": "g",
        "commands": [{"id": "child", "check": "false", "change": "true"}],
    }
    assert idem([broken_top, group], flt="^g$") == {"child": [MSG_CHECK_AFTER_CHANGE]}
    assert idem([broken_top, group]) == {
        "top": [MSG_CHECK_AFTER_CHANGE],
        "child": [MSG_CHECK_AFTER_CHANGE],
    }


def test_count_commands_counts_group_children() -> None:
    cmds = parse_commands(
        [{"id": "a"}, {"id": "g", "commands": [{"id": "b"}, {"id": "c"}]}], where="t"
    )
    assert count_commands(cmds) == 3


def test_failure_listing_is_sorted_with_indented_messages() -> None:
    lines = format_failures({"b.jsonnet:y": ["m1"], "a.jsonnet:x": ["m2", "m3"]})
    assert lines == ["a.jsonnet:x:", "    m2", "    m3", "b.jsonnet:y:", "    m1"]
    assert IdempotencyReport(files=("a",), commands=2).summary() == (
        "Tested 2 commands in 1 pattern: no failures"
    )


# -- discovery -----------------------------------------------------------------------------------


def test_directories_are_walked_recursively_for_jsonnet_only(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    for rel in ("b.jsonnet", "a.jsonnet", "lib.libsonnet", "sub/deep/c.jsonnet", "x.json"):
        (tmp_path / rel).write_text("{}")
    found = [p.relative_to(tmp_path).as_posix() for p in find_pattern_files(tmp_path)]
    assert found == ["a.jsonnet", "b.jsonnet", "sub/deep/c.jsonnet"]


def test_a_file_argument_is_tested_as_is(tmp_path: Path) -> None:
    f = tmp_path / "one.jsonnet"
    f.write_text("{}")
    assert find_pattern_files(f) == [f]


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="error opening path"):
        find_pattern_files(tmp_path / "nope")


# -- CLI -----------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def good_pattern(tmp: Path, name: str) -> str:
    m = tmp / "state" / name
    return json.dumps(
        {
            "run": [
                {
                    "id": f"good {name}",
                    "check": f"test -e '{m}'",
                    "change": f"mkdir -p '{m.parent}' && touch '{m}'",
                    "remove": f"rm -f '{m}'",
                }
            ]
        }
    )


BROKEN = json.dumps({"run": [{"id": "broken", "check": "false", "change": "true"}]})


def test_cli_lists_failures_as_file_and_id_and_exits_1(tmp_path: Path) -> None:
    write(tmp_path / "patterns" / "good.jsonnet", good_pattern(tmp_path, "g"))
    write(tmp_path / "patterns" / "sub" / "bad.jsonnet", BROKEN)
    res = run_agent("test", "patterns", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert "patterns/sub/bad.jsonnet:broken:\n    check still failed after change\n" in res.stdout
    assert "good.jsonnet" not in res.stdout
    assert "Tested 2 commands in 2 patterns: 1 failure" in res.stdout
    assert "test failure" in res.stderr


def test_cli_succeeds_with_a_summary_when_patterns_are_idempotent(tmp_path: Path) -> None:
    write(tmp_path / "p" / "a.jsonnet", good_pattern(tmp_path, "a"))
    write(tmp_path / "p" / "b.jsonnet", good_pattern(tmp_path, "b"))
    res = run_agent("test", "p", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "Tested 2 commands in 2 patterns: no failures"
    assert not (tmp_path / "state" / "a").exists()  # the remove phase ran


def test_cli_tests_build_commands_only_with_b(tmp_path: Path) -> None:
    pattern = json.loads(good_pattern(tmp_path, "r"))
    pattern["build"] = [{"id": "broken build", "check": "false", "change": "true"}]
    write(tmp_path / "p.jsonnet", json.dumps(pattern))
    res = run_agent("test", "p.jsonnet", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Tested 1 command in 1 pattern" in res.stdout
    res = run_agent("test", "-b", "p.jsonnet", cwd=tmp_path)
    assert res.returncode == 1
    assert "p.jsonnet:broken build:\n    check still failed after change" in res.stdout


def test_cli_filter_selects_children_of_matching_groups(tmp_path: Path) -> None:
    pattern = {
        "run": [
            {"id": "top", "check": "false", "change": "true"},
            {"id": "g", "commands": [{"id": "inner", "check": "false", "change": "true"}]},
        ]
    }
    write(tmp_path / "p.jsonnet", json.dumps(pattern))
    res = run_agent("test", "-f", "^g$", "p.jsonnet", cwd=tmp_path)
    assert res.returncode == 1
    assert "p.jsonnet:inner:" in res.stdout
    assert "p.jsonnet:top:" not in res.stdout


def test_cli_renders_with_source_test_and_vars_test_true(tmp_path: Path) -> None:
    text = """
    local cfg = std.native('getConfig')();
    {run: [{id: 'src=%s test=%s' % [cfg.vars.source, cfg.vars.test], check: 'false',
            change: 'true'}]}
    """
    write(tmp_path / "v.jsonnet", text)
    res = run_agent("test", "v.jsonnet", cwd=tmp_path)
    assert "v.jsonnet:src=test test=true:" in res.stdout


def test_cli_missing_path_is_an_error(tmp_path: Path) -> None:
    res = run_agent("test", "nope", cwd=tmp_path)
    assert res.returncode == 1
    assert "error opening path nope" in res.stderr


def test_cli_render_error_aborts_naming_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "p" / "bad.jsonnet", "{\n  run: [\n    error 'boom',\n  ],\n}\n")
    res = run_agent("test", "p", cwd=tmp_path)
    assert res.returncode == 1
    assert re.search(r"bad\.jsonnet:3", res.stderr), res.stderr
    assert "boom" in res.stderr


def test_cli_logging_is_silenced_unless_debug(tmp_path: Path) -> None:
    write(tmp_path / "p.jsonnet", good_pattern(tmp_path, "l"))
    quiet = run_agent("test", "--in-place", "p.jsonnet", cwd=tmp_path)  # no root warning
    assert quiet.returncode == 0
    assert "Changed" not in quiet.stderr and quiet.stderr.strip() == ""
    loud = run_agent("-l", "debug", "test", "p.jsonnet", cwd=tmp_path)
    assert loud.returncode == 0
    assert "Changed good l" in loud.stderr


def test_cli_applies_the_exec_of_source_test(tmp_path: Path) -> None:
    write(
        tmp_path / "agent.jsonnet",
        json.dumps({"sources": {"test": {"exec": {"env": {"MARK": "yes"}}}}}),
    )
    m = tmp_path / "m"
    cmd = {
        "id": "needs env",
        "check": f'test "$MARK" = yes && test -e {m}',
        "change": f'test "$MARK" = yes && touch {m}',
        "remove": f"rm {m}",
    }
    write(tmp_path / "p.jsonnet", json.dumps({"run": [cmd]}))
    res = run_agent("test", "p.jsonnet", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Tested 1 command in 1 pattern: no failures" in res.stdout


def test_cli_gives_each_pattern_a_private_test_dir_and_removes_it(tmp_path: Path) -> None:
    log = tmp_path / "log"
    pattern = f"""
    local d = std.native('getConfig')().vars.testDir;
    local log = {json.dumps(str(log))};
    {{run: [{{
      id: 'x',
      check: 'test -e %s/made' % d,
      change: 'touch %s/made && stat -c %%a %s >> %s && echo %s >> %s' % [d, d, log, d, log],
      remove: 'rm %s/made' % d,
    }}]}}
    """
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.jsonnet").write_text(pattern)
    (tmp_path / "p" / "b.jsonnet").write_text(pattern)
    res = run_agent("test", "p", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Tested 2 commands in 2 patterns: no failures" in res.stdout
    lines = log.read_text().split()
    assert lines[0] == lines[2] == "700"
    first, second = Path(lines[1]), Path(lines[3])
    assert first != second and first.is_absolute() and first.name.startswith("agent-test-")
    assert not first.exists() and not second.exists()
