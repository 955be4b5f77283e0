"""Command engine: real bash processes, files as witnesses of what ran and what it saw."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from agent.core.errors import CommandError
from agent.run.engine import Mode, Output, Result, RunOutcome, diff_run, run_commands
from agent.run.model import DEFAULT_EXEC, Exec, parse_commands

EX = DEFAULT_EXEC


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, bool]] = []

    def command_done(self, *, id: str, parent_id: str, mode: str, error: bool) -> None:
        self.calls.append((id, parent_id, mode, error))


def run(value: Any, mode: Mode = Mode.CHANGE, **kw: Any) -> RunOutcome:
    cmds = parse_commands(value, where="test")
    kw.setdefault("exec", EX)
    return asyncio.run(run_commands(cmds, mode=mode, **kw))


def env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def by_id(outcome: RunOutcome) -> dict[str, Output]:
    return {o.id: o for o in outcome.outputs}


# -- when things run ----------------------------------------------------------------------------


def test_change_skipped_when_check_passes(tmp_path: Path) -> None:
    out = run([{"id": "a", "check": "true", "change": f"touch {tmp_path}/x"}])
    assert out.error is None
    assert not (tmp_path / "x").exists()
    (o,) = out.outputs
    assert o.checked and not o.check_fail_change and not o.changed


def test_change_runs_when_check_fails(tmp_path: Path) -> None:
    out = run([{"id": "a", "check": "echo nope; false", "change": f"touch {tmp_path}/x; echo ok"}])
    assert (tmp_path / "x").exists()
    (o,) = out.outputs
    assert o.checked and o.check_fail_change and o.changed
    assert o.check_out == "nope"
    assert o.change_out == "ok"


def test_command_without_check_always_or_trigger_does_not_run(tmp_path: Path) -> None:
    out = run(
        [
            {"id": "a", "change": f"touch {tmp_path}/x"},
            {"id": "b", "always": True, "change": f"env > {tmp_path}/env"},
        ]
    )
    assert not (tmp_path / "x").exists()
    assert out.outputs[0] == Output(id="a")
    assert env_file(tmp_path / "env")["_CHECK"] == "1"  # b's own; a set it to 0 before


def test_always_skips_the_check(tmp_path: Path) -> None:
    out = run(
        [
            {
                "id": "a",
                "always": True,
                "check": f"touch {tmp_path}/checked",
                "change": f"touch {tmp_path}/changed",
            }
        ]
    )
    assert not (tmp_path / "checked").exists()
    assert (tmp_path / "changed").exists()
    (o,) = out.outputs
    assert not o.checked and o.check_fail_change and o.changed


def test_triggered_command_skips_its_check(tmp_path: Path) -> None:
    out = run(
        [
            {"id": "a", "check": "false", "change": "true", "onChange": "b"},
            {"id": "b", "check": f"touch {tmp_path}/checked", "change": f"touch {tmp_path}/b"},
        ]
    )
    assert not (tmp_path / "checked").exists()
    assert (tmp_path / "b").exists()
    assert by_id(out)["b"].changed and not by_id(out)["b"].checked


def test_on_change_does_not_fire_when_nothing_changed(tmp_path: Path) -> None:
    run(
        [
            {"id": "a", "check": "true", "change": "true", "onChange": "b"},
            {"id": "b", "change": f"touch {tmp_path}/b"},
        ]
    )
    assert not (tmp_path / "b").exists()


def test_regex_targets_fully_match_ids(tmp_path: Path) -> None:
    out = run(
        [
            {"id": "a", "always": True, "change": "true", "onChange": r"b\d"},
            {"id": "b1", "change": "true"},
            {"id": "b2", "change": "true"},
            {"id": "b22", "change": "true"},
        ]
    )
    assert [o.id for o in out.outputs if o.changed] == ["a", "b1", "b2"]


def test_triggers_are_reset_between_runs(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    cmds = parse_commands(
        [
            {"id": "a", "check": f"test -e {flag}", "change": f"touch {flag}", "onChange": "b"},
            {"id": "b", "change": f"echo x >> {tmp_path}/b"},
        ],
        where="test",
    )
    asyncio.run(run_commands(cmds, exec=EX, mode=Mode.CHANGE))
    second = asyncio.run(run_commands(cmds, exec=EX, mode=Mode.CHANGE))
    assert (tmp_path / "b").read_text() == "x\n"
    assert not any(o.changed for o in second.outputs)


def test_stdin_goes_to_check_and_change(tmp_path: Path) -> None:
    run(
        [
            {
                "id": "a",
                "stdin": "payload",
                "check": f"cat > {tmp_path}/check; false",
                "change": f"cat > {tmp_path}/change",
            }
        ]
    )
    assert (tmp_path / "check").read_text() == "payload"
    assert (tmp_path / "change").read_text() == "payload"


def test_stdin_reaches_commands_run_after_a_failure(tmp_path: Path) -> None:
    out = run(
        [
            {"id": "a", "always": True, "change": "exit 1", "onFail": ["c"]},
            {"id": "b", "always": True, "stdin": "to-b", "change": f"cat > {tmp_path}/b"},
            {"id": "c", "stdin": "to-c", "change": f"cat > {tmp_path}/c"},
        ]
    )
    assert out.error is not None
    assert (tmp_path / "b").read_text() == "to-b"
    assert (tmp_path / "c").read_text() == "to-c"


def test_failure_stops_the_list(tmp_path: Path) -> None:
    out = run(
        [
            {"id": "a", "check": "false", "change": "echo boom; exit 3"},
            {"id": "b", "check": "false", "change": f"touch {tmp_path}/b"},
        ],
        parent_id="src",
    )
    assert out.error is not None
    assert (
        out.error.message
        == "error changing id src > a: error running commands: exit status 3: boom"
    )
    assert not (tmp_path / "b").exists()
    assert by_id(out)["a"].change_fail


def test_error_with_empty_output_keeps_trailing_separator() -> None:
    out = run([{"id": "a", "always": True, "change": "exit 1"}])
    assert out.error is not None
    assert out.error.message == "error changing id a: error running commands: exit status 1: "


def test_timeout_fails_the_command_naming_the_setting() -> None:
    out = run(
        [{"id": "a", "always": True, "change": "echo started; sleep 30"}],
        exec=EX.override(Exec(timeout="300ms")),
    )
    assert out.error is not None
    assert out.error.message == "error changing id a: timed out after 300ms (exec.timeout): started"


def test_command_exec_overrides_the_list_exec(tmp_path: Path) -> None:
    out = run([{"id": "a", "always": True, "change": "echo $0", "exec": {"command": "/bin/sh -c"}}])
    assert out.outputs[0].change_out == "/bin/sh"


def test_command_exec_ignored_when_list_exec_disallows_override() -> None:
    base = EX.override(Exec(allow_override=False))
    out = run(
        [{"id": "a", "always": True, "change": "echo $0", "exec": {"command": "/bin/sh -c"}}],
        exec=base,
    )
    assert out.outputs[0].change_out == "/usr/bin/bash"


def test_exec_env_merges_and_accumulated_vars_win(tmp_path: Path) -> None:
    base = EX.override(Exec(env={"BASE": "b", "_CHECK": "exec"}))
    run(
        [
            {"id": "a", "check": "true"},
            {
                "id": "b",
                "always": True,
                "change": f"env > {tmp_path}/env",
                "exec": {"env": {"CMD": "c"}},
            },
        ],
        exec=base,
    )
    env = env_file(tmp_path / "env")
    assert env["BASE"] == "b"
    assert env["CMD"] == "c"
    assert env["_CHECK"] == "1"
    assert base.env == {"BASE": "b", "_CHECK": "exec"}


# -- environment --------------------------------------------------------------------------------


def test_env_seen_by_second_and_third_commands(tmp_path: Path) -> None:
    run(
        [
            {
                "id": "one",
                "envPrefix": "one",
                "check": "echo checkout; exit 1",
                "change": f"env > {tmp_path}/one_change; echo changed",
            },
            {
                "id": "two",
                "check": f"env > {tmp_path}/two_check; echo two; exit 1",
                "change": f"env > {tmp_path}/two_change; echo two changed",
            },
            {"id": "three", "always": True, "change": f"env > {tmp_path}/three"},
        ],
        env={"ETCHA_SOURCE_NAME": "src"},
    )
    one_change = env_file(tmp_path / "one_change")
    assert one_change["one"] == "checkout"
    assert one_change["one_CHECK"] == "1"
    assert one_change["one_CHECK_OUT"] == "checkout"
    assert "one_CHANGE" not in one_change

    two_check = env_file(tmp_path / "two_check")
    assert {k: two_check[k] for k in two_check if k.startswith(("one", "_CH", "ETCHA_"))} == {
        "ETCHA_SOURCE_NAME": "src",
        "one": "checkout",
        "one_CHECK": "1",
        "one_CHECK_OUT": "checkout",
        "one_CHANGE": "0",
        "one_CHANGE_OUT": "changed",
    }
    two_change = env_file(tmp_path / "two_change")
    assert two_change["_CHECK"] == "1"
    assert two_change["_CHECK_OUT"] == "two"
    assert "_CHANGE" not in two_change

    three = env_file(tmp_path / "three")
    assert three["_CHANGE"] == "0"
    assert three["_CHANGE_OUT"] == "two changed"
    assert three["_CHECK"] == "1"
    assert three["one_CHANGE_OUT"] == "changed"
    assert three["ETCHA_SOURCE_NAME"] == "src"


def test_passing_check_sets_prefix_vars(tmp_path: Path) -> None:
    run(
        [
            {"id": "a", "envPrefix": "a", "check": "echo '  out  '"},
            {"id": "b", "always": True, "change": f"env > {tmp_path}/env"},
        ]
    )
    env = env_file(tmp_path / "env")
    assert (env["a"], env["a_CHECK"], env["a_CHECK_OUT"]) == ("out", "0", "out")


def test_failed_change_sets_change_vars_for_on_fail_runs(tmp_path: Path) -> None:
    run(
        [
            {"id": "a", "check": "false", "change": "echo bad; exit 1", "onFail": "b"},
            {"id": "b", "change": f"env > {tmp_path}/env"},
        ]
    )
    env = env_file(tmp_path / "env")
    assert (env["_CHANGE"], env["_CHANGE_OUT"]) == ("1", "bad")


def test_remove_vars_are_set(tmp_path: Path) -> None:
    run(
        [
            {"id": "b", "always": True, "remove": f"env > {tmp_path}/env"},
            {"id": "a", "envPrefix": "p", "check": "true", "remove": "echo gone"},
        ],
        Mode.REMOVE,
    )
    env = env_file(tmp_path / "env")
    assert (env["p_REMOVE"], env["p_REMOVE_OUT"], env["p_CHECK"]) == ("0", "gone", "1")


def test_caller_env_is_copied_not_modified(tmp_path: Path) -> None:
    env = {"ETCHA_EVENT_NAME": "e"}
    run([{"id": "a", "always": True, "change": f"env > {tmp_path}/env"}], env=env)
    assert env == {"ETCHA_EVENT_NAME": "e"}
    assert env_file(tmp_path / "env")["ETCHA_EVENT_NAME"] == "e"


# -- remove mode and check mode -----------------------------------------------------------------


def test_remove_mode_runs_in_reverse_and_removes_when_check_succeeds(tmp_path: Path) -> None:
    log = tmp_path / "log"
    out = run(
        [
            {"id": "a", "check": "true", "remove": f"echo a >> {log}"},
            {"id": "b", "check": "false", "remove": f"echo b >> {log}"},
            {"id": "c", "always": True, "remove": f"echo c >> {log}"},
            {"id": "d", "remove": f"echo d >> {log}"},
            {"id": "e", "check": "true", "remove": f"echo e >> {log}"},
        ],
        Mode.REMOVE,
    )
    assert log.read_text().split() == ["e", "c", "a"]
    assert [o.id for o in out.outputs] == ["e", "d", "c", "b", "a"]
    assert by_id(out)["a"].removed and by_id(out)["a"].check_fail_remove
    assert not by_id(out)["b"].removed


def test_on_remove_triggers_earlier_commands(tmp_path: Path) -> None:
    log = tmp_path / "log"
    run(
        [
            {"id": "a", "check": f"touch {tmp_path}/checked", "remove": f"echo a >> {log}"},
            {"id": "b", "check": "true", "remove": f"echo b >> {log}", "onRemove": "a"},
        ],
        Mode.REMOVE,
    )
    assert log.read_text().split() == ["b", "a"]
    assert not (tmp_path / "checked").exists()


def test_check_mode_runs_only_checks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.run.engine")
    out = run(
        [
            {
                "id": "a",
                "check": f"touch {tmp_path}/checked; false",
                "change": f"touch {tmp_path}/x",
                "onChange": "b",
            },
            {"id": "b", "change": f"touch {tmp_path}/y"},
            {"id": "c", "always": True, "change": f"touch {tmp_path}/z"},
        ],
        Mode.CHECK,
    )
    assert (tmp_path / "checked").exists()
    assert not any((tmp_path / n).exists() for n in "xyz")
    assert by_id(out)["a"].check_fail_change and not by_id(out)["a"].changed
    assert by_id(out)["c"].check_fail_change
    assert "Checked a [" in caplog.text
    assert "Would always change c" in caplog.text


def test_remove_check_mode_only_checks(tmp_path: Path) -> None:
    out = run(
        [{"id": "a", "check": "true", "remove": f"touch {tmp_path}/x"}],
        Mode.REMOVE,
        check_only=True,
    )
    assert not (tmp_path / "x").exists()
    assert out.outputs[0].check_fail_remove and not out.outputs[0].removed


# -- onFail -------------------------------------------------------------------------------------


def test_on_fail_runs_targets_and_always_without_checks(tmp_path: Path) -> None:
    out = run(
        [
            {
                "id": "a",
                "check": "false",
                "change": "echo boom; exit 2",
                "onFail": ["c", "etcha:fail"],
            },
            {"id": "b", "check": "false", "change": f"touch {tmp_path}/b"},
            {
                "id": "c",
                "check": f"touch {tmp_path}/c_checked",
                "change": f"touch {tmp_path}/c",
                "stdin": "x",
            },
            {"id": "d", "always": True, "change": f"touch {tmp_path}/d"},
        ]
    )
    assert out.error is not None
    assert out.error.message == "error changing id a: error running commands: exit status 2: boom"
    assert not (tmp_path / "b").exists()
    assert (tmp_path / "c").exists() and (tmp_path / "d").exists()
    assert not (tmp_path / "c_checked").exists()
    assert [o.id for o in out.outputs] == ["a", "c", "d"]
    assert by_id(out)["a"].events == ("fail",)
    assert [n for n, _ in out.events()] == ["fail"]
    assert Result.from_outcome(out, check=False).changed_ids == ("a", "c", "d")


def test_on_fail_does_not_fire_on_success(tmp_path: Path) -> None:
    out = run(
        [
            {"id": "a", "check": "false", "change": "true", "onFail": ["b", "etcha:fail"]},
            {"id": "b", "change": f"touch {tmp_path}/b"},
        ]
    )
    assert out.error is None
    assert not (tmp_path / "b").exists()
    assert out.events() == []


def test_on_fail_does_not_fire_on_check_failure_in_check_mode(tmp_path: Path) -> None:
    run(
        [
            {"id": "a", "check": "false", "change": "false", "onFail": "b"},
            {"id": "b", "change": f"touch {tmp_path}/b"},
        ],
        Mode.CHECK,
    )
    assert not (tmp_path / "b").exists()


# -- groups, parents, filters -------------------------------------------------------------------


def test_group_fires_on_change_when_a_child_changed(tmp_path: Path) -> None:
    out = run(
        [
            {
                "id": "g",
                "commands": [
                    {"id": "a", "check": "true", "change": "echo a"},
                    {"id": "b", "check": "false", "change": "echo b"},
                ],
                "onChange": ["x", "etcha:grp"],
            },
            {"id": "x", "change": f"touch {tmp_path}/x"},
        ]
    )
    assert (tmp_path / "x").exists()
    ((name, fired),) = out.events()
    assert (name, fired.id, fired.change_out) == ("grp", "g", "b")


def test_group_does_not_fire_when_no_child_changed(tmp_path: Path) -> None:
    run(
        [
            {"id": "g", "commands": [{"id": "a", "check": "true", "change": "x"}], "onChange": "x"},
            {"id": "x", "change": f"touch {tmp_path}/x"},
        ]
    )
    assert not (tmp_path / "x").exists()


def test_group_fires_on_remove_when_a_child_was_removed(tmp_path: Path) -> None:
    log = tmp_path / "log"
    run(
        [
            {"id": "x", "remove": f"echo x >> {log}"},
            {
                "id": "g",
                "commands": [{"id": "a", "check": "true", "remove": f"echo a >> {log}"}],
                "onRemove": "x",
            },
        ],
        Mode.REMOVE,
    )
    assert log.read_text().split() == ["a", "x"]


def test_sibling_groups_get_their_own_parent_ids() -> None:
    cmds = [
        {"id": "g1", "commands": [{"id": "a", "always": True, "change": "true"}]},
        {"id": "g2", "commands": [{"id": "b", "always": True, "change": "true"}]},
        {"id": "x", "always": True, "change": "true"},
    ]
    assert [(o.id, o.parent_id) for o in run(cmds).outputs] == [("a", "g1"), ("b", "g2"), ("x", "")]
    assert [(o.id, o.parent_id) for o in run(cmds, parent_id="src").outputs] == [
        ("a", "src > g1"),
        ("b", "src > g2"),
        ("x", "src"),
    ]


def test_nested_group_error_names_the_parent_chain() -> None:
    out = run(
        [
            {
                "id": "g",
                "commands": [
                    {"id": "h", "commands": [{"id": "a", "always": True, "change": "exit 4"}]}
                ],
            }
        ],
        parent_id="src",
    )
    assert out.error is not None
    assert out.error.message.startswith("error changing id src > g > h > a: error running commands")


def test_parent_id_filter_skips_leaves_whose_parent_does_not_match(tmp_path: Path) -> None:
    cmds = [
        {"id": "g1", "commands": [{"id": "a", "always": True, "change": f"touch {tmp_path}/a"}]},
        {"id": "g2", "commands": [{"id": "b", "always": True, "change": f"touch {tmp_path}/b"}]},
        {"id": "x", "always": True, "change": f"touch {tmp_path}/x"},
    ]
    out = run(cmds, parent_id="src", parent_id_filter=re.compile("g2"))
    assert [o.id for o in out.outputs] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    # An empty filter disables filtering.
    assert len(run(cmds, parent_id_filter=re.compile("")).outputs) == 3


# -- events, logs, observer ---------------------------------------------------------------------


def test_events_are_reported_in_emission_order() -> None:
    out = run(
        [
            {"id": "a", "always": True, "change": "echo A", "onChange": ["etcha:z", "etcha:y"]},
            {"id": "b", "always": True, "change": "echo B", "onChange": "etcha:a"},
        ]
    )
    assert [(n, o.id, o.change_out) for n, o in out.events()] == [
        ("z", "a", "A"),
        ("y", "a", "A"),
        ("a", "b", "B"),
    ]


def test_stdout_and_stderr_events_print_trimmed_output(capsys: pytest.CaptureFixture[str]) -> None:
    run(
        [
            {
                "id": "a",
                "always": True,
                "change": "echo '  hi  '",
                "onChange": ["etcha:stdout", "etcha:stderr"],
            },
        ]
    )
    captured = capsys.readouterr()
    assert captured.out == "hi\n"
    assert captured.err == "hi\n"


def test_each_action_logs_one_past_tense_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.run.engine")
    run(
        [
            {"id": "a", "check": "false", "change": "true", "onChange": "b"},
            {"id": "b", "change": "true"},
            {"id": "c", "always": True, "change": "true"},
            {"id": "z", "check": "true", "change": "false"},
        ],
        parent_id="src",
    )
    run(
        [
            {"id": "d", "check": "true", "remove": "true"},
            {"id": "e", "always": True, "remove": "true"},
        ],
        Mode.REMOVE,
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.run.engine"]
    pattern = r" \[\d+(ms|\.\d+s|s)\]$"
    expected = [
        "Changed src > a",
        "Triggered src > b via a",
        "Always changed src > c",
        "Always removed e",
        "Removed d",
    ]
    assert len(lines) == len(expected)
    for line, want in zip(lines, expected, strict=True):
        assert re.fullmatch(re.escape(want) + pattern, line), line


def test_passing_checks_log_at_debug_as_etcha(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.run.engine")
    run([{"id": "z", "check": "true", "change": "false"}], parent_id="src")
    records = [r for r in caplog.records if r.name == "agent.run.engine"]
    assert [(r.levelno, r.getMessage().split(" [")[0]) for r in records] == [
        (logging.DEBUG, "Checked src > z")
    ]


def test_each_step_output_is_logged_at_debug_under_its_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.run.output")
    run([{"id": "a", "check": "echo looked; false", "change": "echo did"}], parent_id="src")
    records = [r for r in caplog.records if r.name == "agent.run.output"]
    assert [r.levelno for r in records] == [logging.DEBUG, logging.DEBUG]
    assert [r.getMessage() for r in records] == [
        "Output of src > a (check):\n    looked",
        "Output of src > a (change):\n    did",
    ]


def test_observer_sees_check_and_action_steps() -> None:
    rec = Recorder()
    run(
        [
            {"id": "skip", "change": "true"},
            {"id": "ok", "check": "true", "change": "true"},
            {"id": "drift", "check": "false", "change": "true"},
            {"id": "bad", "check": "false", "change": "false"},
        ],
        parent_id="src",
        observer=rec,
    )
    assert rec.calls == [
        ("skip", "src", "check", False),
        ("ok", "src", "check", False),
        ("drift", "src", "check", True),
        ("drift", "src", "change", False),
        ("bad", "src", "check", True),
        ("bad", "src", "change", True),
    ]


def test_observer_sees_remove_mode() -> None:
    rec = Recorder()
    run([{"id": "a", "check": "true", "remove": "true"}], Mode.REMOVE, observer=rec)
    assert rec.calls == [("a", "", "check", True), ("a", "", "remove", False)]


# -- diff_run -----------------------------------------------------------------------------------


def drun(new: Any, old: Any | None, **kw: Any) -> RunOutcome:
    kw.setdefault("check", False)
    kw.setdefault("no_remove", False)
    kw.setdefault("source", "src")
    kw.setdefault("exec", EX)
    old_cmds = parse_commands(old, where="old") if old is not None else None
    return asyncio.run(diff_run(parse_commands(new, where="new"), old_cmds, **kw))


def test_diff_run_phases_remove_before_new_then_remove_after(tmp_path: Path) -> None:
    log = tmp_path / "log"
    old = [
        {"id": "gone1", "check": "true", "remove": f"echo gone1 >> {log}"},
        {"id": "gone2", "check": "true", "remove": f"echo gone2 >> {log}"},
        {"id": "late", "check": "true", "remove": f"echo late >> {log}", "removeAfter": True},
        {"id": "keep", "check": "true", "change": "old", "remove": f"echo keep >> {log}"},
        {"id": "moved", "check": "true", "change": "v1", "remove": f"echo moved-old >> {log}"},
    ]
    new = [
        {"id": "keep", "check": "true", "change": "old", "remove": "x"},
        {"id": "moved", "check": "false", "change": f"echo moved-new >> {log}"},
    ]
    out = drun(new, old)
    assert out.error is None
    assert log.read_text().split() == ["moved-old", "gone2", "gone1", "moved-new", "late"]
    res = Result.from_outcome(out, check=False)
    assert res.removed_ids == ("moved", "gone2", "gone1", "late")
    assert res.changed_ids == ("moved",)
    assert all(o.parent_id == "src" for o in out.outputs)


def test_diff_run_dropped_command_without_check_is_removed(tmp_path: Path) -> None:
    out = drun([{"id": "n", "check": "true"}], [{"id": "o", "remove": f"touch {tmp_path}/o"}])
    assert (tmp_path / "o").exists()
    assert Result.from_outcome(out, check=False).removed_ids == ("o",)


def test_diff_run_dropped_command_whose_check_fails_is_not_removed(tmp_path: Path) -> None:
    drun(
        [{"id": "n", "check": "true"}],
        [{"id": "o", "check": "false", "remove": f"touch {tmp_path}/o"}],
    )
    assert not (tmp_path / "o").exists()


def test_diff_run_no_remove_skips_removals(tmp_path: Path) -> None:
    drun(
        [{"id": "n", "check": "true"}],
        [{"id": "o", "remove": f"touch {tmp_path}/o"}],
        no_remove=True,
    )
    assert not (tmp_path / "o").exists()


def test_diff_run_with_nothing_to_do_runs_nothing(tmp_path: Path) -> None:
    out = drun([{"id": "n", "change": f"touch {tmp_path}/n"}], None)
    assert out == RunOutcome()


def test_diff_run_looks_into_groups_for_work(tmp_path: Path) -> None:
    out = drun(
        [{"id": "g", "commands": [{"id": "a", "always": True, "change": f"touch {tmp_path}/a"}]}],
        None,
    )
    assert (tmp_path / "a").exists()
    assert out.outputs[0].parent_id == "src > g"


def test_diff_run_shares_env_across_phases(tmp_path: Path) -> None:
    drun(
        [{"id": "n", "always": True, "change": f"env > {tmp_path}/env"}],
        [{"id": "o", "envPrefix": "old", "check": "echo here", "remove": "echo removed"}],
        env={"ETCHA_SOURCE_TRIGGER": "push"},
    )
    env = env_file(tmp_path / "env")
    assert env["old_REMOVE_OUT"] == "removed"
    assert env["old"] == "here"
    assert env["ETCHA_SOURCE_TRIGGER"] == "push"


def test_diff_run_check_mode_runs_no_scripts(tmp_path: Path) -> None:
    out = drun(
        [{"id": "n", "check": "false", "change": f"touch {tmp_path}/n"}],
        [
            {"id": "o", "remove": f"touch {tmp_path}/o"},
            {"id": "p", "check": "true", "remove": f"touch {tmp_path}/p"},
        ],
        check=True,
    )
    assert list(tmp_path.iterdir()) == []
    res = Result.from_outcome(out, check=True)
    assert res.changed_ids == ("n",)
    assert res.removed_ids == ("p", "o")
    assert res.changed_outputs == () and res.removed_outputs == ()


def test_diff_run_error_stops_later_phases(tmp_path: Path) -> None:
    out = drun(
        [{"id": "n", "always": True, "change": f"touch {tmp_path}/n"}],
        [{"id": "o", "remove": "echo no; exit 1"}],
    )
    assert out.error is not None
    assert (
        out.error.message == "error removing id src > o: error running commands: exit status 1: no"
    )
    assert not (tmp_path / "n").exists()


def test_diff_run_filter_applies(tmp_path: Path) -> None:
    out = drun(
        [
            {"id": "g", "commands": [{"id": "a", "always": True, "change": "true"}]},
            {"id": "b", "always": True, "change": "true"},
        ],
        None,
        parent_id_filter=re.compile(r"> g$"),
    )
    assert [o.id for o in out.outputs] == ["a"]


# -- Result -------------------------------------------------------------------------------------


def test_result_is_filled_even_when_the_run_failed() -> None:
    out = run(
        [
            {"id": "a", "always": True, "change": "echo A"},
            {"id": "b", "always": True, "change": "echo B; exit 1"},
        ]
    )
    res = Result.from_outcome(out, check=False)
    assert res.changed_ids == ("a", "b")
    assert res.changed_outputs == ("A", "B")
    assert res.err == "error changing id b: error running commands: exit status 1: B"


def test_result_lists_a_failed_change_under_new_failed_keys_and_keeps_etchas() -> None:
    out = run(
        [
            {"id": "a", "always": True, "change": "echo A"},
            {"id": "b", "always": True, "change": "echo B; exit 1"},
        ]
    )
    doc = Result.from_outcome(out, check=False).to_json()
    assert doc["changedIDs"] == ["a", "b"]  # Etcha's key, as Etcha fills it
    assert doc["failedIDs"] == ["b"]
    assert doc["failedOutputs"] == ["B"]
    assert Result.from_json(doc).failed_ids == ("b",)


def test_result_json_uses_null_for_empty_lists() -> None:
    assert Result().to_json() == {
        "changedIDs": None,
        "changedOutputs": None,
        "err": "",
        "exit": False,
        "failedIDs": None,
        "failedOutputs": None,
        "removedIDs": None,
        "removedOutputs": None,
    }


def test_result_json_round_trips() -> None:
    res = Result(("a",), ("out",), "boom", True, ("b", "c"), ("x", "y"), ("a",), ("out",))
    assert res.to_json()["removedIDs"] == ["b", "c"]
    assert Result.from_json(res.to_json()) == res
    assert Result.from_json(None) == Result()


def test_result_from_json_rejects_wrong_types() -> None:
    with pytest.raises(CommandError, match="changedIDs"):
        Result.from_json({"changedIDs": "a"})
