"""The fully typed config: commands and exec objects are parsed into the run model at load.

Unknown keys anywhere (inside commands, groups and exec objects too) are config errors naming the
full path, with the closest known key as a hint; the typed values are what consumers get, and
``to_dict`` still prints the JSON as written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import REPO

from agent.config.execs import config_exec, source_exec
from agent.config.schema import config_from_dict, load_config
from agent.core.errors import ConfigError
from agent.run.model import DEFAULT_EXEC, Command, Exec, parse_commands


def config_error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    return err.value


# ---------------------------------------------------------------------------- unknown keys


def test_unknown_key_in_a_source_command_names_its_full_path() -> None:
    err = config_error({"sources": {"web": {"commands": [{"id": "a", "bogusKey": 1}]}}})
    assert str(err) == 'unknown config key "sources.web.commands[0].bogusKey" in config'


def test_unknown_key_in_a_source_exec_names_its_full_path() -> None:
    err = config_error({"sources": {"web": {"exec": {"nope": 1}}}})
    assert str(err) == 'unknown config key "sources.web.exec.nope" in config'


def test_unknown_exec_key_close_to_a_known_one_suggests_it() -> None:
    err = config_error({"sources": {"web": {"exec": {"comand": "sh -c"}}}})
    assert str(err) == 'unknown config key "sources.web.exec.comand" in config'
    assert err.hint == 'did you mean "command"?'


def test_unknown_key_in_a_nested_group_names_the_path_and_suggests() -> None:
    group = {"id": "g", "commands": [{"id": "a"}, {"id": "b", "chek": "true"}]}
    err = config_error({"sources": {"web": {"commands": [group]}}})
    assert str(err) == 'unknown config key "sources.web.commands[0].commands[1].chek" in config'
    assert err.hint == 'did you mean "check"?'


def test_unknown_key_in_a_command_exec_inside_a_nested_list_names_the_path() -> None:
    cmds = [[{"id": "a"}], [{"id": "b", "exec": {"usr": "x"}}]]
    err = config_error({"sources": {"web": {"commands": cmds}}})
    assert str(err) == 'unknown config key "sources.web.commands[1][0].exec.usr" in config'
    assert err.hint == 'did you mean "user"?'


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"exec": {"usr": "x"}}, "exec.usr"),
        ({"run": {"verifyExec": {"usr": "x"}}}, "run.verifyExec.usr"),
        ({"run": {"verifyCommands": [{"id": "a", "chnage": "x"}]}}, "run.verifyCommands[0].chnage"),
        ({"build": {"signingExec": {"usr": "x"}}}, "build.signingExec.usr"),
        (
            {"build": {"signingCommands": [{"id": "a", "chnage": "x"}]}},
            "build.signingCommands[0].chnage",
        ),
        ({"sources": {"w": {"verifyExec": {"usr": "x"}}}}, "sources.w.verifyExec.usr"),
        (
            {"sources": {"w": {"verifyCommands": [{"id": "a", "chnage": "x"}]}}},
            "sources.w.verifyCommands[0].chnage",
        ),
        ({"sources": {"w": {"shell": {"usr": "x"}}}}, "sources.w.shell.usr"),
        ({"lint": {"linters": {"sc": {"usr": "x"}}}}, "lint.linters.sc.usr"),
    ],
)
def test_every_command_and_exec_field_rejects_unknown_keys(data: dict[str, Any], path: str) -> None:
    err = config_error(data)
    assert str(err) == f'unknown config key "{path}" in config'
    assert err.hint in ('did you mean "user"?', 'did you mean "change"?')


def test_unknown_command_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.jsonnet"
    path.write_text("{sources: {web: {commands: [{id: 'a', chek: 'true'}]}}}")
    with pytest.raises(ConfigError) as err:
        load_config(path=None, environ={}, cwd=tmp_path)
    assert str(err.value) == f'unknown config key "sources.web.commands[0].chek" in {path}'


def test_unknown_exec_key_in_an_override_names_the_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(path=None, overrides=['sources_web_exec={"nope": 1}'], environ={}, cwd=tmp_path)
    assert str(err.value) == (
        'unknown config key "sources.web.exec.nope" in override -x sources_web_exec'
    )


def test_cli_prints_the_full_path_and_the_suggestion(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text(
        json.dumps({"sources": {"web": {"commands": [{"id": "a", "exec": {"comand": "sh"}}]}}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "show-config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert 'sources.web.commands[0].exec.comand" in ' in proc.stderr
    assert 'did you mean "command"?' in proc.stderr


# --------------------------------------------------------------------- values at load time


def test_wrong_exec_value_names_the_exec_key() -> None:
    err = config_error({"sources": {"w": {"exec": {"user": 1}}}})
    assert (
        str(err) == 'config key "sources.w.exec.user" in config: expected a string, got an integer'
    )


def test_bad_exec_timeout_is_a_config_error_at_load() -> None:
    err = config_error({"run": {"verifyExec": {"timeout": "soon"}}})
    assert str(err).startswith('config key "run.verifyExec.timeout" in config: expected a duration')


def test_invalid_command_list_is_a_config_error_at_load() -> None:
    err = config_error({"sources": {"w": {"commands": [{"id": "a", "onChange": ["zz"]}]}}})
    assert str(err) == (
        'config key "sources.w.commands" in config: error validating commands: command a: '
        "onChange target zz does not match any command id in this list"
    )


# ------------------------------------------------------------------------- typed consumers


def test_every_command_and_exec_field_holds_run_model_values() -> None:
    cmd = {"id": "a", "change": "true"}
    c = config_from_dict(
        {
            "build": {"signingCommands": [cmd], "signingExec": {"user": "s"}},
            "run": {"verifyCommands": [cmd], "verifyExec": {"user": "v"}},
            "sources": {
                "w": {
                    "commands": [[cmd]],
                    "exec": {"user": "w"},
                    "verifyCommands": [cmd],
                    "verifyExec": {"sudo": True},
                }
            },
        }
    )
    typed = (Command(id="a", change="true"),)
    assert c.build.signing_commands == typed and c.build.signing_exec == Exec(user="s")
    assert c.run.verify_commands == typed and c.run.verify_exec == Exec(user="v")
    src = c.sources["w"]
    assert src.commands == typed and src.verify_commands == typed
    assert src.exec == Exec(user="w") and src.verify_exec == Exec(sudo=True)
    assert c.exec == DEFAULT_EXEC
    assert c.lint.linter_execs == {
        "shellcheck": Exec(command="shellcheck -s bash -e 2016 -e 2154 -")
    }


def test_source_exec_overrides_the_typed_config_exec() -> None:
    c = config_from_dict({"exec": {"user": "a"}, "sources": {"w": {"exec": {"env": {"X": "1"}}}}})
    assert config_exec(c) is c.exec
    assert source_exec(c, "w") == DEFAULT_EXEC.override(Exec(user="a"), Exec(env={"X": "1"}))
    assert source_exec(c, "other") is c.exec


def test_run_model_accepts_already_parsed_values() -> None:
    c = config_from_dict({"sources": {"w": {"commands": [{"id": "a"}], "exec": {"user": "u"}}}})
    src = c.sources["w"]
    assert parse_commands(list(src.commands), where="sources.w.commands") == src.commands
    assert parse_commands(src.commands, where="sources.w.commands") is src.commands
    assert Exec.from_dict(src.exec, where="sources.w.exec") is src.exec


def test_to_dict_prints_commands_and_execs_as_written_and_loads_back_equal() -> None:
    data = {
        "exec": {"env": {"A": "1"}},
        "run": {"verifyCommands": [[{"id": "v", "check": "x"}]]},
        "sources": {"w": {"commands": [{"id": "a", "always": False}], "shell": {"user": "x"}}},
    }
    c = config_from_dict(data)
    out = c.to_dict()
    assert out["run"]["verifyCommands"] == [[{"id": "v", "check": "x"}]]
    assert out["sources"]["w"]["commands"] == [{"id": "a", "always": False}]
    assert out["sources"]["w"]["shell"] == {"user": "x"}
    assert out["exec"]["env"] == {"A": "1"}
    assert config_from_dict(out) == c
    assert config_from_dict(out).to_dict() == out
