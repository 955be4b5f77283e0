"""Process spawning: argv, env, stdin, output, user/group, timeouts, containers, ${VAR}."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent.core.errors import CommandError
from agent.run.model import DEFAULT_EXEC, Exec
from agent.run.shell import ShellResult, build_argv, capped_output, expand_vars, process_env, run

SH = Exec(allow_override=True, command="/bin/sh -c", env_inherit=True)


def go(ex: Exec, script: str, **kw: object) -> ShellResult:
    return asyncio.run(run(ex, script, **kw))  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


# -- argv ---------------------------------------------------------------------------------------


def test_command_is_shlex_split_and_script_is_the_last_argument() -> None:
    ex = Exec(command='a long command "hello world"')
    assert build_argv(ex, "script x") == ["a", "long", "command", "hello world", "script x"]


def test_empty_script_adds_no_argument() -> None:
    assert build_argv(Exec(command="prog -x"), "") == ["prog", "-x"]


def test_empty_command_splits_the_script() -> None:
    assert build_argv(Exec(command=""), "ls -la 'a b'") == ["ls", "-la", "a b"]


def test_unbalanced_quote_is_an_error() -> None:
    with pytest.raises(CommandError, match="error parsing exec command"):
        build_argv(Exec(command='a "b'), "x")


def test_nothing_to_run_is_an_error() -> None:
    with pytest.raises(CommandError, match="nothing to run"):
        build_argv(Exec(command=""), "  ")


def test_container_argv_has_every_option_in_order() -> None:
    ex = Exec(
        command='a long command "hello world"',
        container_entrypoint="d",
        container_image="e",
        container_network="net",
        container_privileged=True,
        container_pull="always",
        container_user="f",
        container_volumes=("volume", "v2"),
        container_work_dir="work2",
        env={"hello": "world"},
    )
    argv = build_argv(ex, "script", env={"hello": "world", "a": "1"}, runtime="docker")
    assert argv == [
        "docker", "run", "-i", "--rm",
        "-e", "a=1", "-e", "hello=world",
        "--entrypoint", "d",
        "--network", "net",
        "--privileged",
        "--pull", "always",
        "-u", "f",
        "-v", "volume", "-v", "v2",
        "-w", "work2",
        "e",
        "a", "long", "command", "hello world", "script",
    ]  # fmt: skip


def test_container_without_runtime_is_an_error() -> None:
    with pytest.raises(CommandError, match="no container runtime found"):
        build_argv(Exec(command="sh -c", container_image="alpine"), "true", runtime=None)


def test_sudo_wraps_when_not_root_only() -> None:
    ex = Exec(command="/bin/sh -c", sudo=True)
    assert build_argv(ex, "id", is_root=False) == ["sudo", "-E", "/bin/sh", "-c", "id"]
    assert build_argv(ex, "id", is_root=True) == ["/bin/sh", "-c", "id"]


@pytest.mark.skipif(
    subprocess.run(
        ["docker", "info"] if shutil.which("docker") else ["podman", "info"],
        capture_output=True,
        check=False,
    ).returncode
    != 0
    if shutil.which("docker") or shutil.which("podman")
    else True,
    reason="no working container runtime here (docker/podman missing or its daemon is not running)",
)
def test_container_runs_script_in_image() -> None:  # pragma: no cover - needs a runtime
    res = go(Exec(command="/bin/sh -c", container_image="alpine"), "echo hi")
    assert res.output.strip() == "hi"


# -- running ------------------------------------------------------------------------------------


def test_output_combines_stdout_and_stderr_and_keeps_exit_code() -> None:
    res = go(SH, "echo out; echo err >&2; exit 3")
    assert res.exit_code == 3
    assert not res.ok
    assert res.output == "out\nerr\n"
    assert not res.timed_out


def test_default_exec_runs_bash_with_pipefail() -> None:
    res = go(DEFAULT_EXEC, "false | true; echo unreachable")
    assert res.exit_code == 1
    assert "unreachable" not in res.output


def test_stdin_text_is_fed_to_the_process() -> None:
    assert go(SH, "cat", stdin="hello\nworld").output == "hello\nworld"


def test_without_stdin_the_process_reads_dev_null() -> None:
    res = go(SH, "cat; readlink /proc/self/fd/0")
    assert res.ok
    assert res.output.strip() == "/dev/null"


def test_env_inherit_merges_agent_env_exec_env_and_command_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARENT_TEST_INHERITED", "parent")
    monkeypatch.setenv("PARENT_TEST_OVER", "parent")
    ex = SH.override(Exec(env={"PARENT_TEST_OVER": "exec", "EXEC_ONLY": "e", "BOTH": "exec"}))
    res = go(ex, "env", env={"BOTH": "cmd"})
    lines = set(res.output.splitlines())
    assert {
        "PARENT_TEST_INHERITED=parent",
        "PARENT_TEST_OVER=exec",
        "EXEC_ONLY=e",
        "BOTH=cmd",
    } <= lines


def test_env_not_inherited_has_only_exec_env_command_env_and_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_TEST_INHERITED", "parent")
    ex = Exec(command="/usr/bin/env", env_inherit=False, env={"A": "1"})
    res = go(ex, "", env={"B": "2"})
    names = {line.split("=", 1)[0] for line in res.output.splitlines()}
    assert names == {"A", "B", "PATH"}


def test_process_env_returns_a_fresh_copy() -> None:
    ex = Exec(env={"A": "1"}, env_inherit=False)
    env = {"B": "2"}
    first = process_env(ex, env)
    first["C"] = "3"
    assert process_env(ex, env) == {"A": "1", "B": "2", "PATH": os.environ["PATH"]}
    assert env == {"B": "2"}
    assert ex.env == {"A": "1"}


def test_work_dir_is_the_cwd(tmp_path: Path) -> None:
    res = go(SH.override(Exec(work_dir=str(tmp_path))), "pwd")
    assert res.output.strip() == str(tmp_path)


def test_a_missing_work_dir_is_named_not_the_program(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(CommandError) as info:
        go(SH.override(Exec(work_dir=str(missing))), "true")
    assert f"workDir {missing}: expected a directory, got nothing there" in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_and_group_switch_when_root() -> None:
    res = go(SH.override(Exec(user="nobody", group="65534", work_dir="/")), "id -u; id -g")
    assert res.output.split() == ["65534", "65534"]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_only_user_keeps_the_current_group() -> None:
    res = go(SH.override(Exec(user="65534", work_dir="/")), "id -u; id -g")
    assert res.output.split() == ["65534", str(os.getgid())]


def test_unknown_user_is_an_error() -> None:
    with pytest.raises(CommandError, match="error looking up user: no-such-user-x"):
        go(SH.override(Exec(user="no-such-user-x")), "true")


def test_unknown_group_is_an_error() -> None:
    with pytest.raises(CommandError, match="error looking up group: no-such-group-x"):
        go(SH.override(Exec(group="no-such-group-x")), "true")


def test_missing_program_is_an_error() -> None:
    with pytest.raises(CommandError, match="error running commands: /nonexistent/prog"):
        go(Exec(command="/nonexistent/prog"), "x")


def test_output_is_capped_and_truncation_is_noted() -> None:
    res = go(SH, "head -c 5000 /dev/zero | tr '\\0' a", max_output=1000)
    assert res.truncated
    assert res.output.startswith("a" * 1000 + "\n[output truncated: 4000 bytes over")


def test_capped_output_keeps_the_cap_and_notes_what_was_dropped() -> None:
    """One rule for spawned, persistent-shell and in-process output (the in-process helper
    passes all it wrote; a reader passes what it kept)."""
    assert capped_output(b"abcdef", 6, 4) == (
        "abcd\n[output truncated: 2 bytes over the 4-byte limit]",
        True,
    )
    assert capped_output(bytearray(b"ab"), 9, 2) == (
        "ab\n[output truncated: 7 bytes over the 2-byte limit]",
        True,
    )
    assert capped_output(b"ab\xff", 3, 4) == ("ab\ufffd", False)


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    res = go(
        SH.override(Exec(timeout="300ms")),
        f"sleep 30 & echo $! > {pidfile}; wait",
    )
    elapsed = time.monotonic() - start
    assert res.timed_out
    assert not res.ok
    assert elapsed < 5
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(grandchild)


def test_process_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    res = go(SH.override(Exec(timeout="200ms")), "trap '' TERM; sleep 30")
    assert res.timed_out
    assert res.duration < 5


def test_background_child_holding_output_does_not_hang(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    res = go(SH, f"sleep 30 & echo $! > {pidfile}; echo done")
    try:
        assert res.ok
        assert res.output.strip() == "done"
        assert time.monotonic() - start < 5
    finally:
        os.kill(int(pidfile.read_text()), 9)


def test_no_timeout_when_unset() -> None:
    res = go(SH, "sleep 0.3; echo ok")
    assert res.ok
    assert res.duration >= 0.3


# -- ${VAR} -------------------------------------------------------------------------------------


def test_expand_vars_braced_form_only_and_unknown_left() -> None:
    assert expand_vars("${A}-$A-${B}-${A", {"A": "x"}) == "x-$A-${B}-${A"


def test_vars_expand_per_argument_without_a_shell() -> None:
    res = go(Exec(command="", env={"GREETING": "hello world"}), "printf %s| ${GREETING} ${NOPE}")
    assert res.output == "hello world|${NOPE}|"


def test_vars_expand_in_scripts_for_non_shell_interpreters() -> None:
    res = go(
        Exec(command="/usr/bin/env python3 -c", env_inherit=True),
        'print("${MSG}")',
        env={"MSG": "hi"},
    )
    assert res.output.strip() == "hi"


def test_shell_scripts_see_vars_as_data_not_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    res = go(SH, 'echo "${X}"', env={"X": f"$(touch {marker})"})
    assert res.output.strip() == f"$(touch {marker})"
    assert not marker.exists()


def test_agent_settings_are_not_inherited_by_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_build_signingKey", "ed25519private:secret")
    monkeypatch.setenv("KEEP_ME", "yes")
    env = process_env(DEFAULT_EXEC, {"AGENT_explicit": "given"})
    assert "AGENT_build_signingKey" not in env
    assert env["KEEP_ME"] == "yes"
    assert env["AGENT_explicit"] == "given"  # what a caller passes on purpose still arrives
