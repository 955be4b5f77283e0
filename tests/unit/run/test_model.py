"""Command model: parsing, flattening, validation and the exec override chain."""

from __future__ import annotations

import pytest

from agent.core.errors import CommandError
from agent.run.model import (
    DEFAULT_EXEC,
    Command,
    Exec,
    commands_from_json,
    commands_to_json,
    parse_commands,
    resolve_target,
)


def errors_of(value: object) -> str:
    with pytest.raises(CommandError) as info:
        parse_commands(value, where="run")
    return info.value.message


# -- parsing and flattening ---------------------------------------------------------------------


def test_nested_lists_flatten_depth_first() -> None:
    cmds = parse_commands([{"id": "1"}, [{"id": "2"}, [{"id": "3"}]], {"id": "4"}], where="run")
    assert [c.id for c in cmds] == ["1", "2", "3", "4"]


def test_on_fields_accept_a_string_or_a_list() -> None:
    cmds = parse_commands(
        [{"id": "a", "onChange": "b", "onFail": ["b", "etcha:x"]}, {"id": "b"}], where="run"
    )
    assert cmds[0].on_change == ("b",)
    assert cmds[0].on_fail == ("b", "etcha:x")
    assert cmds[0].on_remove == ()


def test_all_fields_parse() -> None:
    (c,) = parse_commands(
        [
            {
                "id": "a",
                "always": True,
                "change": "ch",
                "changeIgnore": True,
                "check": "ck",
                "envPrefix": "A_1",
                "exec": {"command": "/bin/sh -c", "timeout": "2s"},
                "remove": "rm",
                "removeAfter": True,
                "stdin": "in",
            }
        ],
        where="run",
    )
    assert c == Command(
        id="a",
        always=True,
        change="ch",
        change_ignore=True,
        check="ck",
        env_prefix="A_1",
        exec=Exec(command="/bin/sh -c", timeout="2s"),
        remove="rm",
        remove_after=True,
        stdin="in",
    )


def test_group_children_parse_recursively() -> None:
    (g,) = parse_commands([{"id": "g", "commands": [{"id": "a"}, [{"id": "b"}]]}], where="run")
    assert g.is_group
    assert [c.id for c in g.commands] == ["a", "b"]


def test_none_gives_empty_list() -> None:
    assert parse_commands(None, where="run") == ()


def test_commands_from_json_rejects_invalid_json() -> None:
    with pytest.raises(CommandError, match="invalid JSON"):
        commands_from_json("[{", where="run")


def test_commands_to_json_round_trips() -> None:
    src = [
        {
            "id": "a",
            "check": "c",
            "change": "x",
            "envPrefix": "",
            "stdin": "",
            "onChange": ["b"],
            "exec": {"env": {"K": "V"}},
        },
        {
            "id": "b",
            "envPrefix": "",
            "stdin": "",
            "commands": [{"id": "c", "envPrefix": "", "stdin": ""}],
        },
    ]
    cmds = parse_commands(src, where="run")
    assert commands_to_json(cmds) == src
    assert parse_commands(commands_to_json(cmds), where="run") == cmds


# -- validation ---------------------------------------------------------------------------------


def test_etcha_good_case_is_valid() -> None:
    parse_commands(
        [
            {
                "id": "a",
                "envPrefix": "_A",
                "onFail": ["etcha:fail"],
                "onChange": ["b", "etcha:change"],
            },
            {"id": "b"},
        ],
        where="run",
    )


def test_missing_id_is_an_error_naming_the_position() -> None:
    assert errors_of([{"id": "a"}, {"change": "x"}]) == (
        "error validating commands in run: command #2: id is a required property for a command"
    )


def test_self_target_is_an_error() -> None:
    assert errors_of([{"id": "a", "onChange": "a"}]) == (
        "error validating commands in run: command a: onChange target a cannot target the "
        "command itself"
    )


def test_regex_matching_only_self_is_a_self_target() -> None:
    assert "onFail target a.* cannot target the command itself" in errors_of(
        [{"id": "ab", "onFail": "a.*"}]
    )


def test_on_change_target_before_the_command_is_an_error() -> None:
    assert errors_of([{"id": "b"}, {"id": "a", "onChange": "b"}]) == (
        "error validating commands in run: command a: onChange target b must come after a, "
        "got b before it"
    )


def test_on_fail_target_before_the_command_is_an_error() -> None:
    assert "command a: onFail target b must come after a, got b before it" in errors_of(
        [{"id": "b"}, {"id": "a", "onFail": "b"}]
    )


def test_on_remove_target_after_the_command_is_an_error() -> None:
    assert errors_of([{"id": "a", "onRemove": "b"}, {"id": "b"}]) == (
        "error validating commands in run: command a: onRemove target b must come before a, "
        "got b after it"
    )


def test_on_remove_target_before_the_command_is_valid() -> None:
    parse_commands([{"id": "b"}, {"id": "a", "onRemove": "b"}], where="run")


def test_target_matching_nothing_is_an_error() -> None:
    assert errors_of([{"id": "a", "onChange": "zz"}]) == (
        "error validating commands in run: command a: onChange target zz does not match any "
        "command id in this list"
    )


@pytest.mark.parametrize("key", ["onChange", "onFail", "onRemove"])
def test_unknown_target_suggests_the_closest_ids(key: str) -> None:
    cmds: list[object] = [{"id": "restart-nginx"}, {"id": "a", key: "restart-ngix"}]
    if key != "onRemove":
        cmds.reverse()
    assert errors_of(cmds).endswith(
        f"command a: {key} target restart-ngix does not match any command id in this list "
        '(did you mean "restart-nginx"?)'
    )


def test_unknown_target_without_a_close_id_has_no_suggestion() -> None:
    assert "did you mean" not in errors_of([{"id": "a", "onChange": "zz"}, {"id": "restart"}])


def test_regex_target_must_fully_match() -> None:
    # "b" is not an id, and as a regex it must match a whole id: "bc" does not count.
    assert "onChange target b does not match any command id" in errors_of(
        [{"id": "a", "onChange": "b"}, {"id": "bc"}]
    )
    parse_commands([{"id": "a", "onChange": "b."}, {"id": "bc"}], where="run")


def test_invalid_regex_is_an_error() -> None:
    assert "command a: onChange target [ is not a valid regular expression: " in errors_of(
        [{"id": "a", "onChange": "["}]
    )


def test_env_prefix_starting_with_a_number_is_an_error() -> None:
    assert errors_of([{"id": "a", "envPrefix": "1A"}]) == (
        "error validating commands in run: command a: invalid environment prefix: 1A: "
        "must not start with a number"
    )


def test_env_prefix_with_other_characters_is_an_error() -> None:
    assert errors_of([{"id": "a", "envPrefix": "a-b"}]) == (
        "error validating commands in run: command a: invalid environment prefix: a-b: "
        "must only contain letters, underscores, and numbers"
    )


def test_event_with_empty_name_is_an_error() -> None:
    assert errors_of([{"id": "a", "onChange": "etcha:"}]) == (
        "error validating commands in run: command a: onChange event 'etcha:' has an empty "
        "name, expected etcha:<name>"
    )


def test_unknown_field_is_an_error_naming_it() -> None:
    assert errors_of([{"id": "a", "chnage": "x"}]) == (
        "error validating commands in run: command a: unknown field 'chnage'"
    )


def test_wrong_field_type_is_an_error() -> None:
    assert "command a: field always: expected a bool, got a string" in errors_of(
        [{"id": "a", "always": "yes"}]
    )


def test_non_object_entry_is_an_error() -> None:
    assert "command #1: expected an object, got a string" in errors_of(["a"])


def test_problems_are_collected() -> None:
    msg = errors_of([{"id": "a", "onChange": "zz"}, {"change": "x"}, {"id": "c", "envPrefix": "9"}])
    assert msg.count("; ") == 2
    assert "command a: onChange target zz" in msg
    assert "command #2: id is a required property" in msg
    assert "command c: invalid environment prefix: 9" in msg


def test_group_children_are_validated_on_their_own() -> None:
    # b targets c, which is outside b's group: that is an error inside the group.
    msg = errors_of([{"id": "g", "commands": [{"id": "b", "onChange": "c"}]}, {"id": "c"}])
    assert msg == (
        "error validating commands in run: command g > b: onChange target c does not match any "
        "command id in this list"
    )


def test_group_may_target_its_siblings() -> None:
    parse_commands(
        [{"id": "g", "commands": [{"id": "a"}], "onChange": "c"}, {"id": "c"}], where="run"
    )


def test_invalid_exec_in_a_command_is_reported() -> None:
    assert "command a: unknown exec field 'comand'" in errors_of(
        [{"id": "a", "exec": {"comand": "x"}}]
    )


def test_resolve_target_prefers_exact_ids() -> None:
    assert resolve_target("a.b", ["a.b", "axb"]) == [0]
    assert resolve_target("a.b", ["aab", "axb", "axbc"]) == [0, 1]


# -- Exec ---------------------------------------------------------------------------------------


def test_default_exec_follows_etcha_code() -> None:
    assert DEFAULT_EXEC.to_dict() == {
        "allowOverride": True,
        "command": "/usr/bin/bash -e -o pipefail -c",
        "envInherit": True,
    }


def test_exec_from_dict_to_dict_round_trip() -> None:
    d = {
        "allowOverride": True,
        "command": "c",
        "containerEntrypoint": "e",
        "containerImage": "i",
        "containerNetwork": "n",
        "containerPrivileged": False,
        "containerPull": "always",
        "containerUser": "u",
        "containerVolumes": ["a:b"],
        "containerWorkDir": "/w",
        "env": {"A": "1"},
        "envInherit": False,
        "group": "g",
        "sudo": True,
        "timeout": "1m",
        "user": "u",
        "workDir": "/tmp",
    }
    ex = Exec.from_dict(d, where="config exec")
    assert ex.to_dict() == d
    assert ex.timeout_seconds == 60.0


def test_exec_unknown_field_is_an_error_naming_it() -> None:
    with pytest.raises(CommandError, match=r"config exec: unknown exec field 'comand'"):
        Exec.from_dict({"comand": "x"}, where="config exec")


def test_exec_wrong_type_is_an_error() -> None:
    with pytest.raises(CommandError, match="exec field sudo: expected a bool, got a string"):
        Exec.from_dict({"sudo": "yes"}, where="x")


def test_exec_invalid_timeout_is_an_error() -> None:
    with pytest.raises(CommandError, match="timeout"):
        Exec.from_dict({"timeout": "soon"}, where="x")


def test_override_without_overrides_is_identity() -> None:
    base = Exec(allow_override=True, command="a")
    assert base.override() is base
    assert base.override(None) is base


def test_override_is_ignored_when_base_disallows() -> None:
    base = Exec(allow_override=False, command="a")
    assert base.override(Exec(command="b")) is base
    unset = Exec(command="a")
    assert unset.override(Exec(command="b")) is unset


def test_override_replaces_set_fields_and_merges_env() -> None:
    base = Exec(allow_override=True, command="a", env={"X": "1", "Y": "1"}, env_inherit=True)
    out = base.override(Exec(command="b", env={"Y": "2", "Z": "2"}))
    assert out == Exec(
        allow_override=True, command="b", env={"X": "1", "Y": "2", "Z": "2"}, env_inherit=True
    )


def test_override_chain_stops_at_a_link_without_allow_override() -> None:
    base = Exec(allow_override=True, command="a")
    out = base.override(Exec(allow_override=False, command="b"), Exec(command="c"))
    assert out.command == "b"
    assert out.allow_override is False


def test_override_chain_continues_while_links_allow() -> None:
    base = Exec(allow_override=True, command="a")
    out = base.override(Exec(allow_override=True, command="b"), None, Exec(command="c"))
    assert out.command == "c"
    # A link that does not set allowOverride keeps the merged value (true) for the next one.
    assert base.override(Exec(command="b"), Exec(command="c")).command == "c"


def test_override_can_clear_a_field_by_setting_it() -> None:
    out = DEFAULT_EXEC.override(Exec(command=""))
    assert out.command == ""
    assert out.env_inherit is True
