"""The CLI edge: global flags, exit codes, one-line errors, lazy imports."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import run_agent

from agent import __version__
from agent.cli import REGISTRAR_VERBS, build_parser, verb_of

agent = run_agent


def test_version_via_console_script_and_module() -> None:
    script = Path(sys.executable).parent / "agent"
    out = subprocess.run([str(script), "version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"agent {__version__}"
    assert agent("version").stdout == out.stdout


@pytest.mark.parametrize("command", ["version", "jwt", "render"])
def test_light_commands_do_not_import_the_daemon_stack(command: str, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from agent.cli import main\n"
        f"args = {{'version': ['version'], 'jwt': ['jwt', 'missing.jwt'],"
        f" 'render': ['render', '{{run: [{{id: \"a\", always: true}}]}}']}}['{command}']\n"
        "main(args)\n"
        "heavy = [m for m in ('aiohttp', 'apscheduler', 'prometheus_client', 'shtab')"
        " if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert "HEAVY=\n" in res.stdout, res.stdout + res.stderr


def test_unknown_flag_is_a_usage_error() -> None:
    res = agent("-q", "version")
    assert res.returncode == 2 and "unrecognized arguments" in res.stderr


def test_failure_is_one_line_without_traceback(tmp_path: Path) -> None:
    res = agent("-c", str(tmp_path / "missing.jsonnet"), "show-config")
    assert res.returncode == 1
    assert len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith("ERROR: ") and "Traceback" not in res.stderr


def test_debug_level_shows_the_traceback(tmp_path: Path) -> None:
    res = agent("-l", "debug", "-c", str(tmp_path / "missing.jsonnet"), "show-config")
    assert res.returncode == 1
    assert "Traceback" in res.stderr


def _noisy(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return agent(*flags, "local", "{id: 'a', always: true, change: 'true'}", cwd=tmp_path)


def test_log_level_none_silences_action_logs(tmp_path: Path) -> None:
    assert "Always changed local > a" in _noisy(tmp_path).stderr
    quiet = _noisy(tmp_path, "-l", "none")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.strip() == "Changed 1: a"


def test_log_level_error_hides_info(tmp_path: Path) -> None:
    assert _noisy(tmp_path, "-l", "error").stderr == ""


def test_json_log_format(tmp_path: Path) -> None:
    res = _noisy(tmp_path, "-f", "json")
    line = json.loads(res.stderr.strip().splitlines()[-1])
    assert line["level"] == "info" and "Always changed local > a" in line["msg"]
    assert {"time", "logger"} <= set(line)


def _stderr_on_a_tty(tmp_path: Path, *flags: str, no_color_env: bool = False) -> str:
    """Run a failing `local` with stderr on a pseudo-terminal; return what it printed there."""
    import pty

    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_") and k != "NO_COLOR"}
    if no_color_env:
        env["NO_COLOR"] = "1"
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                *flags,
                "local",
                "{id: 'a', always: true, change: 'exit 1'}",
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=follower,
            env=env,
            timeout=60,
            check=False,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO once the terminal is drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return b"".join(chunks).decode()


def test_warnings_are_coloured_on_a_terminal_unless_no_color(tmp_path: Path) -> None:
    assert "\033[" in _stderr_on_a_tty(tmp_path)
    plain = _stderr_on_a_tty(tmp_path, "-n")
    assert "\033[" not in plain and "Failed changing local > a" in plain


def test_no_color_variable_turns_log_colours_off(tmp_path: Path) -> None:
    plain = _stderr_on_a_tty(tmp_path, no_color_env=True)
    assert "\033[" not in plain and "Failed changing local > a" in plain


def test_disable_external_natives_flag(tmp_path: Path) -> None:
    text = "{run: [{id: std.native('getFile')('http://127.0.0.1:9/x', 'fallback'), always: true}]}"
    res = agent("-d", "render", text, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["run"][0]["id"] == "fallback"
    res = agent("-d", "render", text.replace("'fallback'", "null"), cwd=tmp_path)
    assert res.returncode == 1 and "external native functions are disabled" in res.stderr


def test_gen_keys_alias(tmp_path: Path) -> None:
    res = agent("gen-keys", "named")
    doc = json.loads(res.stdout)
    assert doc["privateKey"].endswith(":named") and doc["publicKey"].endswith(":named")


def test_config_cli_section_applies_unless_a_flag_overrides(tmp_path: Path) -> None:
    (tmp_path / "agent.jsonnet").write_text("{cli: {logLevel: 'none'}}")
    quiet = _noisy(tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = _noisy(tmp_path, "-l", "info")
    assert "Always changed local > a" in loud.stderr


def test_config_cli_disable_external_native(tmp_path: Path) -> None:
    (tmp_path / "agent.jsonnet").write_text("{cli: {disableExternalNative: true}}")
    text = "{run: [{id: std.native('getFile')('http://127.0.0.1:9/x', null), always: true}]}"
    res = agent("render", text, cwd=tmp_path)
    assert res.returncode == 1 and "external native functions are disabled" in res.stderr


def test_error_line_follows_the_log_format_and_level(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.jsonnet")
    as_json = agent("-f", "json", "-c", missing, "show-config")
    assert as_json.returncode == 1
    record = json.loads(as_json.stderr)
    assert record["level"] == "error" and "missing.jsonnet" in record["msg"]
    silent = agent("-l", "none", "-c", missing, "show-config")
    assert silent.returncode == 1 and silent.stderr == ""


# ------------------------------------------------------------------- one verb's parser at start-up


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_parser_of_one_verb_is_the_full_parsers_for_that_verb() -> None:
    full = _verbs(build_parser())
    for verb, sub in full.items():
        only = _verbs(build_parser(verb))
        aliases = {name for name, p in full.items() if p is sub}
        assert set(only) == aliases, verb
        assert only[verb].format_help() == sub.format_help(), verb


def test_the_registrar_table_names_each_verb_with_the_module_that_adds_it() -> None:
    """A verb's parser comes from its listed module alone (a wrong entry would fall back to the
    full parser, with every verb), and every verb is listed."""
    for module, verbs in REGISTRAR_VERBS.items():
        registered: set[str] = set()
        for verb in verbs:
            registered |= set(_verbs(build_parser(verb)))
        assert registered == set(verbs), module
    assert {v for verbs in REGISTRAR_VERBS.values() for v in verbs} == set(_verbs(build_parser()))


def test_an_unknown_verb_falls_back_to_the_full_parser() -> None:
    assert _verbs(build_parser("no-such-verb")).keys() == _verbs(build_parser()).keys()


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["render", "x"], "render"),
        (["-c", "local", "-l", "error", "-x", "a=b", "-n", "-d", "render", "x"], "render"),
        (["-cconf.json", "-ljson", "local", "x"], "local"),
        (["-h", "render"], None),
        (["--version"], None),
        (["-nc", "local", "render"], None),  # combined flags: left to the full parser
        (["--", "render"], None),
        (["-c"], None),
        ([], None),
    ],
)
def test_verb_of_names_the_verb_only_after_plain_global_options(
    argv: list[str], verb: str | None
) -> None:
    assert verb_of(argv) == verb


def test_a_usage_error_in_a_verb_reads_as_with_the_full_parser() -> None:
    res = agent("render")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "usage error: agent render: the following arguments are required: jwt|pattern|jsonnet"
    )
