"""Which scripts and execs qualify for running a helper in-process (agent.run.inprocess)."""

from __future__ import annotations

import sys

import pytest

from agent.run.inprocess import exec_allows, helper_argv, simple_words
from agent.run.model import DEFAULT_EXEC, Exec
from agent.run.selfexec import agent_command


@pytest.mark.parametrize(
    ("script", "words"),
    [
        (
            "agent file check -p '0644' -- '/tmp/a b' -",
            ["agent", "file", "check", "-p", "0644", "--", "/tmp/a b", "-"],
        ),
        ("agent file remove -- '/x' ''\n", ["agent", "file", "remove", "--", "/x", ""]),
        (
            "agent line change -- '/f' '^a$|b' 'x=$1;`y`'",
            ["agent", "line", "change", "--", "/f", "^a$|b", "x=$1;`y`"],
        ),
        ("agent line change -- /f 'a\nb' c", ["agent", "line", "change", "--", "/f", "a\nb", "c"]),
        ('agent dir check "/tmp/d"', ["agent", "dir", "check", "/tmp/d"]),
    ],
)
def test_simple_words_splits_one_plain_command(script: str, words: list[str]) -> None:
    assert simple_words(script) == words


@pytest.mark.parametrize(
    "script",
    [
        "agent file check /a | cat",
        "agent file check /a && true",
        "agent file check /a; true",
        "agent file check /a\nagent file check /b",
        "agent file check $HOME/a",
        "agent file check ${X}",
        'agent file check "$HOME"',
        'agent file check "`id`"',
        "agent file check /a > /tmp/out",
        "agent file check /a < /tmp/in",
        "agent file check $(echo /a)",
        "agent file check `echo /a`",
        "agent file check /a*",
        "agent file check ~/a",
        "agent file check /a # comment",
        "agent file check {a,b}",
        "agent file check /a &",
        "agent file check \\$x",
        "X=1 agent file check /a",
        "agent file check 'unterminated",
        "",
        "   \n",
    ],
)
def test_simple_words_refuses_anything_a_shell_would_interpret(script: str) -> None:
    words = simple_words(script)
    # "X=1 agent ..." splits, but its first word is not the agent, so it never qualifies.
    assert words is None or words[0] != "agent"


@pytest.mark.parametrize(
    "ex",
    [
        DEFAULT_EXEC,
        Exec(command="/bin/sh -c"),
        Exec(command="bash -e -u -o pipefail -c"),
        Exec(command="/usr/bin/bash -c", env_inherit=False),
    ],
)
def test_the_default_kind_of_exec_allows_in_process(ex: Exec) -> None:
    assert exec_allows(ex)


@pytest.mark.parametrize(
    "ex",
    [
        DEFAULT_EXEC.override(Exec(user="nobody")),
        DEFAULT_EXEC.override(Exec(group="nogroup")),
        DEFAULT_EXEC.override(Exec(container_image="alpine")),
        DEFAULT_EXEC.override(Exec(work_dir="/nonexistent-workdir")),
        Exec(command="/usr/bin/bash -x -c"),
        Exec(command="/usr/bin/zsh -c"),
        Exec(command="/usr/bin/bash"),
        Exec(command="python3 -c"),
        Exec(command=""),
        Exec(command=None),
    ],
)
def test_user_group_container_workdir_or_custom_command_disqualify(ex: Exec) -> None:
    assert not exec_allows(ex)
    assert helper_argv(ex, "agent file check /a", etcha=True) is None


@pytest.mark.parametrize(
    "argv0", ["/opt/agent/bin/agent", "/usr/lib/agent/__main__.py", "/usr/bin/pytest"]
)
def test_helper_argv_strips_the_bare_name_and_the_own_executable(
    argv0: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0])
    own = agent_command()
    for program in {"agent", own}:
        script = f"{program} file check -- '/a'"
        assert helper_argv(DEFAULT_EXEC, script, etcha=False) == ["file", "check", "--", "/a"]
    assert helper_argv(DEFAULT_EXEC, "/elsewhere/agent file check /a", etcha=False) is None


def test_etcha_counts_only_when_allowed() -> None:
    script = "etcha file check -- '/a'"
    assert helper_argv(DEFAULT_EXEC, script, etcha=False) is None
    assert helper_argv(DEFAULT_EXEC, script, etcha=True) == ["file", "check", "--", "/a"]


@pytest.mark.parametrize(
    "script", ["agent version", "agent local x.jsonnet", "agentx file check /a", "agent", "cat /a"]
)
def test_other_commands_are_not_helper_invocations(script: str) -> None:
    assert helper_argv(DEFAULT_EXEC, script, etcha=True) is None
