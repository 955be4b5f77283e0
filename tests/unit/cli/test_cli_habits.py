"""Everyday CLI habits: --version, bare `agent`, completion, help texts (issue 15, point 9)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import run_agent

from agent.cli import build_parser

#: Subcommands whose parsers live in files other branches own and still lack a description
#: (the lead adds them; remove the name here when it has one).
PENDING_DESCRIPTIONS: frozenset[str] = frozenset()


def _subparsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str | None, argparse.ArgumentParser]]:
    """Every (command path, help, parser) under ``parser``, aliases once."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help for a in action._choices_actions}
        seen: set[int] = set()
        for name, sub in action.choices.items():
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            yield (*path, name), helps.get(name), sub
            yield from _subparsers(sub, (*path, name))


def test_version_flag_prints_what_version_prints() -> None:
    flag, verb = run_agent("--version"), run_agent("version")
    assert (flag.returncode, verb.returncode) == (0, 0)
    assert flag.stdout == verb.stdout and flag.stdout.startswith("agent ")


def test_bare_agent_lists_the_commands_and_exits_0() -> None:
    res = run_agent()
    assert res.returncode == 0, res.stderr
    names = [path[0] for path, _, _ in _subparsers(build_parser())]
    assert names and all(f"    {name}" in res.stdout for name in names), res.stdout


def test_every_subcommand_has_a_help_and_a_description() -> None:
    missing = []
    for path, help_text, sub in _subparsers(build_parser()):
        name = " ".join(path)
        if not (help_text or "").strip():
            missing.append(f"{name}: help")
        if not (sub.description or "").strip() and name not in PENDING_DESCRIPTIONS:
            missing.append(f"{name}: description")
    assert not missing


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_names_the_subcommands(shell: str) -> None:
    res = run_agent("completion", shell)
    assert res.returncode == 0, res.stderr
    for name in ("generate-keys", "local", "push", "completion", "fingerprint"):
        assert name in res.stdout, f"{shell} script lacks {name}"


def _bash_complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` after sourcing ``script``."""
    line = " ".join(words)
    array = " ".join(f"'{w}'" for w in words)
    code = (
        f"source {script}\n"
        f"COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE='{line}'; COMP_POINT={len(line)}\n"
        '_shtab_agent; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(
        ["bash", "--norc", "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.split()


def test_bash_completion_completes_commands_and_choices(tmp_path: Path) -> None:
    script = tmp_path / "agent.bash"
    script.write_text(run_agent("completion", "bash").stdout)
    assert _bash_complete(script, "agent", "com") == ["compare", "completion"]
    assert _bash_complete(script, "agent", "completion", "") == ["bash", "zsh", "fish"]


def test_completion_of_an_unknown_shell_is_a_usage_error() -> None:
    res = run_agent("completion", "csh")
    assert res.returncode == 2 and "invalid choice" in res.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completion_completes_commands_and_choices(tmp_path: Path) -> None:
    script = tmp_path / "agent.fish"
    script.write_text(run_agent("completion", "fish").stdout)

    def offered(line: str) -> list[str]:
        code = f"source {script}; complete -C '{line}'"
        out = subprocess.run(
            ["fish", "--no-config", "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [row.split("\t", 1)[0] for row in out.stdout.splitlines()]

    assert offered("agent com") == ["compare", "completion"]
    assert offered("agent completion ") == ["bash", "zsh", "fish"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_script_parses(tmp_path: Path) -> None:
    script = tmp_path / "_agent"
    script.write_text(run_agent("completion", "zsh").stdout)
    res = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
