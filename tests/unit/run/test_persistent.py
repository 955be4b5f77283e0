"""The persistent shell runner: same results as spawning bash, one fork per script (issue 14)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import run_agent, write_json

from agent.config.schema import config_from_dict
from agent.core.errors import CommandError
from agent.run import shell
from agent.run.engine import Mode, run_commands
from agent.run.model import DEFAULT_EXEC, Exec, parse_commands
from agent.run.persistent import (
    MAX_STDIN,
    PersistentShell,
    RunnerDied,
    Shells,
    _fill,
    plan_job,
)
from agent.run.planner import bash_word
from agent.run.shell import ShellResult

Run = tuple[Exec, str, dict[str, str], str]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


async def both(runs: list[Run]) -> list[tuple[ShellResult, ShellResult]]:
    """Each run in one persistent shell (in order, sharing it) and spawned."""
    shells = Shells(start_after=0)
    out = []
    try:
        for ex, script, env, stdin in runs:
            a = await shells.run(ex, script, env=env, stdin=stdin)
            assert a is not None, f"not run by the persistent shell: {script!r}"
            b = await shell.run(ex, script, env=env, stdin=stdin)
            out.append((a, b))
    finally:
        await shells.aclose()
    return out


def both_sync(runs: list[Run]) -> list[tuple[ShellResult, ShellResult]]:
    """:func:`both` with the runner driven without an event loop (``Shells.run_sync``)."""
    shells = Shells(start_after=0)
    out = []
    try:
        for ex, script, env, stdin in runs:
            a = shells.run_sync(ex, script, env=env, stdin=stdin)
            assert a is not None, f"not run by the persistent shell: {script!r}"
            b = asyncio.run(shell.run(ex, script, env=env, stdin=stdin))
            out.append((a, b))
    finally:
        shells.close()
    return out


# -- property: the runner behaves as `bash -e -o pipefail -c` --------------------------------

_WORD = st.text(st.sampled_from("abc xyz_-.:'\"\\$`*\n"), max_size=8)
#: Scripts that show the shell's state: run in order in one runner, each must match a spawn.
PROBES = [
    "echo $- $0 $# $LINENO $BASH_SUBSHELL",
    "g() { echo g; }; alias ll='echo alias'; trap 'echo trapped' EXIT; export LEAK=1; cd /",
    "type g 2>&1 || true; alias; trap -p; echo ${LEAK-none}; shopt | md5sum; set -o | md5sum",
    "pwd; echo $PWD $OLDPWD $SHLVL; declare -p OLDPWD PWD SHLVL 2>&1 || true",
    "export -p | grep -v ' _=' | md5sum; env | grep -v '^_=' | sort | md5sum",
    "umask; ls /proc/self/fd | wc -l; ls /proc/$BASHPID/fd | wc -l",
    "grep -E 'Sig(Ign|Blk)' /proc/self/status; (grep -E 'SigIgn' /proc/self/status) & wait",
    'cat; read -r line || true; echo "[$line]"',
    'declare -F; set -u; echo "${UNSET_X-unset}"; echo $BASH_EXECUTION_STRING',
    "nosuchcommand_agent",
    "return 2",
    "exec echo replaced",
    "echo out; echo err >&2; exit 7",
    "head -c 200000 /dev/zero | tr '\\0' a; echo",
]
_STATEMENTS = st.one_of(
    st.sampled_from(
        [
            "true",
            "false",
            "false | true",
            "true | false",
            "! false",
            "false || echo or",
            "false && echo and",
            "if false; then echo then; fi",
            "f() { false; echo in-f; }; f",
            "set +e",
            "set -u",
            'echo "${UNSET_X-unset}"',
            "cd .. && pwd",
            "cat",
            "x=$(false); echo sub",
            "sleep 0 & wait",
            "echo err >&2",
            *PROBES,
        ]
    ),
    st.integers(0, 125).map(lambda n: f"exit {n}"),
    st.integers(0, 125).map(lambda n: f"(exit {n})"),
    _WORD.map(lambda w: f"printf '%s\\n' {shlex_quote(w)}"),
    st.sampled_from(["V0", "V1", "V2"]).map(lambda v: f'printf "<%s>" "${{{v}-}}"'),
)


def shlex_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


_SCRIPTS = st.lists(_STATEMENTS, min_size=1, max_size=6).flatmap(
    lambda parts: st.sampled_from(["\n", "; "]).map(lambda sep: sep.join(parts))
)
_ENVS = st.dictionaries(
    st.sampled_from(["V0", "V1", "V2"]),
    st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=10),
    max_size=3,
)
_EXECS_LIST = [
    DEFAULT_EXEC,
    Exec(command="bash -c", env_inherit=False),
    Exec(command="/usr/bin/bash -e -u -c", env_inherit=True),
    Exec(command="/usr/bin/bash -o pipefail -c", env_inherit=False, env={"V2": "exec"}),
]
_EXECS = st.sampled_from(_EXECS_LIST)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    runs=st.lists(
        st.tuples(_EXECS, _SCRIPTS, _ENVS, st.sampled_from(["", "in\n", "a\nb"])),
        min_size=1,
        max_size=3,
    ),
    sub=st.sampled_from(["", "sub"]),
)
def test_runner_matches_spawned_bash(
    runs: list[Run], sub: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.getbasetemp() / "persistent" / sub
    work.mkdir(parents=True, exist_ok=True)
    runs = [(Exec.override(ex, Exec(work_dir=str(work))), s, e, i) for ex, s, e, i in runs]
    for a, b in asyncio.run(both(runs)):
        assert (a.exit_code, a.output, a.timed_out) == (b.exit_code, b.output, b.timed_out)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    runs=st.lists(
        st.tuples(_EXECS, _SCRIPTS, _ENVS, st.sampled_from(["", "in\n"])), min_size=1, max_size=3
    )
)
def test_runner_without_an_event_loop_matches_spawned_bash(
    runs: list[Run], tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.getbasetemp() / "persistent-sync"
    work.mkdir(parents=True, exist_ok=True)
    runs = [(Exec.override(ex, Exec(work_dir=str(work))), s, e, i) for ex, s, e, i in runs]
    for a, b in both_sync(runs):
        assert (a.exit_code, a.output, a.timed_out) == (b.exit_code, b.output, b.timed_out)


@pytest.mark.parametrize("sync", [False, True], ids=["asyncio", "no-loop"])
@pytest.mark.parametrize("ex", _EXECS_LIST)
def test_runner_matches_spawned_bash_on_state_probes(ex: Exec, sync: bool, tmp_path: Path) -> None:
    ex = Exec.override(ex, Exec(work_dir=str(tmp_path)))
    env = {"V0": "a b", "V1": "x\ny"}
    runs = [(ex, probe, env, "in\nput") for probe in PROBES]
    pairs = both_sync(runs) if sync else asyncio.run(both(runs))
    for probe, (a, b) in zip(PROBES, pairs, strict=True):
        assert (a.exit_code, a.output) == (b.exit_code, b.output), probe


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(
            st.one_of(
                st.characters(min_codepoint=1).filter(lambda c: not "\ud800" <= c <= "\udfff"),
                st.sampled_from(["\udc80", "\udcfe", "\n", "'", "\\", "~", "$"]),
            )
        ),
        max_size=8,
    )
)
def test_quoted_underscore_gives_bash_the_same_value(values: list[str]) -> None:
    # What the runner's job does with field 3 (``: <quoted>``), for many values at once.
    script = "".join(f": {bash_word(v)}\nprintf '%s\\0' \"$_\"\n" for v in values)
    assert all("\n" not in bash_word(v) for v in values)  # the script's eval stays on line 1
    proc = subprocess.run(["bash", "-c", script], capture_output=True, check=True)
    got = proc.stdout.split(b"\0")[:-1]
    assert got == [v.encode("utf-8", "surrogateescape") for v in values]


# -- fallback and switch ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "ex",
    [
        Exec(command="/bin/sh -c"),
        Exec(command="bash -x -c"),
        Exec(command="python3 -c"),
        Exec(command=""),
        Exec(command="bash -c", user="nobody"),
        Exec(command="bash -c", group="nogroup"),
        Exec(command="bash -c", container_image="alpine"),
        Exec(command="bash -c", work_dir="/nonexistent/agent"),
        Exec(command="bash -c", env={"BASH_ENV": "/tmp/x"}),
        Exec(command="bash -c", env={"BASH_FUNC_f%%": "() { :; }"}),
        Exec(command="bash -c", env={"SHELLOPTS": "xtrace"}),
        Exec(command="bash -c", env={"A-B": "1"}),
        Exec(command="bash -c", env={"__agent_a": "1"}),
    ],
)
def test_exec_that_is_not_the_default_is_spawned(ex: Exec) -> None:
    assert plan_job(ex, "true") is None


def test_default_exec_is_planned_for_the_runner() -> None:
    job = plan_job(DEFAULT_EXEC, "true", env={"A": "1"}, stdin="x")
    assert job is not None
    assert (job.options, job.stdin) == ("-e -o pipefail", b"x")
    assert job.exports["A"] == "1"


def test_large_stdin_and_output_match_a_spawned_command() -> None:
    text = "line\n" * (MAX_STDIN // 5)
    ((a, b),) = asyncio.run(
        both([(DEFAULT_EXEC, "wc -c; cat /dev/zero | head -c 300000", {}, text)])
    )
    assert (a.exit_code, a.output) == (b.exit_code, b.output)
    assert a.output.startswith(f"{len(text)}\n")


def test_stdin_larger_than_a_pipe_is_spawned() -> None:
    assert plan_job(DEFAULT_EXEC, "cat", stdin="x" * (MAX_STDIN + 1)) is None


def pid_pairs(persistent: bool, n: int = 3) -> list[list[str]]:
    """``[$$, $BASHPID]`` of the checks of ``n`` commands run by the engine."""
    cmds = parse_commands(
        [{"id": f"c{i}", "check": "echo $$ $BASHPID", "change": "true"} for i in range(n)],
        where="test",
    )
    outcome = asyncio.run(
        run_commands(cmds, exec=DEFAULT_EXEC, mode=Mode.CHANGE, persistent_shell=persistent)
    )
    assert outcome.error is None
    return [o.check_out.split() for o in outcome.outputs]


def test_engine_runs_default_exec_commands_in_one_persistent_shell() -> None:
    pairs = pid_pairs(True)
    assert len({runner for runner, _ in pairs}) == 1  # one runner ($$) ...
    assert all(runner != job for runner, job in pairs)  # ... forks each script
    assert len({job for _, job in pairs}) == 3


def test_engine_spawns_the_only_command_of_a_run() -> None:
    ((runner, job),) = pid_pairs(True, 1)
    assert runner == job


def test_persistent_shell_off_spawns_every_command() -> None:
    assert all(a == b for a, b in pid_pairs(False))


def test_config_switch_defaults_on_and_turns_off() -> None:
    assert config_from_dict({}, cwd=Path("/tmp"), origin="t").run.persistent_shell is True
    off = config_from_dict({"run": {"persistentShell": False}}, cwd=Path("/tmp"), origin="t")
    assert off.run.persistent_shell is False


# -- timeouts, truncation, concurrency --------------------------------------------------------


def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


def test_timeout_without_an_event_loop_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    ex = Exec.override(DEFAULT_EXEC, Exec(timeout="300ms"))
    shells = Shells(start_after=0)
    try:
        res = shells.run_sync(ex, f"sleep 30 & echo $! > {pidfile}; sleep 30")
    finally:
        shells.close()
    assert res is not None and res.timed_out and not res.ok
    assert wait_gone(int(pidfile.read_text()))


class Interrupted(Exception):
    pass


def test_exception_while_waiting_without_a_loop_kills_the_job_and_propagates(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "pid"

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    shells = Shells(start_after=0)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Interrupted):
            shells.run_sync(DEFAULT_EXEC, f"sleep 30 & echo $! > {pidfile}; sleep 30")
        res = shells.run_sync(DEFAULT_EXEC, "echo next")  # the runner is still usable
        assert res is not None and res.output == "next\n"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        shells.close()
    assert wait_gone(int(pidfile.read_text()))


def test_one_runner_serves_jobs_without_a_loop_then_under_asyncio() -> None:
    shells = Shells(start_after=0)
    first = shells.run_sync(DEFAULT_EXEC, "echo $$")
    assert first is not None

    async def go() -> ShellResult | None:
        try:
            return await shells.run(DEFAULT_EXEC, "echo $$")
        finally:
            await shells.aclose()

    second = asyncio.run(go())
    assert second is not None and second.output == first.output  # the same runner ($$)
    assert not alive(int(first.output))


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    ex = Exec.override(DEFAULT_EXEC, Exec(timeout="300ms"))
    script = f"sleep 30 & echo $! > {pidfile}; sleep 30"

    async def go() -> ShellResult | None:
        shells = Shells(start_after=0)
        try:
            return await shells.run(ex, script)
        finally:
            await shells.aclose()

    res = asyncio.run(go())
    assert res is not None and res.timed_out and not res.ok
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(grandchild)


def test_output_is_truncated_like_a_spawned_command() -> None:
    async def go() -> tuple[ShellResult | None, ShellResult]:
        job = plan_job(DEFAULT_EXEC, "printf '%0100d' 0")
        assert job is not None
        sh = PersistentShell(job.program, job.argv0)
        try:
            a = await sh.run(job, max_output=10)
        finally:
            await sh.aclose()
        b = await shell.run(DEFAULT_EXEC, "printf '%0100d' 0", max_output=10)
        return a, b

    a, b = asyncio.run(go())
    assert a is not None and a.truncated
    assert (a.output, a.truncated) == (b.output, b.truncated)


def test_concurrent_runs_and_jobs_get_their_own_results() -> None:
    async def one(shells: Shells, i: int) -> str:
        res = await shells.run(DEFAULT_EXEC, f"sleep 0.0{i % 3}; echo $N", env={"N": str(i)})
        assert res is not None
        return res.output

    async def go() -> list[str]:
        runs = [Shells(start_after=0) for _ in range(3)]
        try:
            return await asyncio.gather(*(one(runs[i % 3], i) for i in range(12)))
        finally:
            for s in runs:
                await s.aclose()

    assert asyncio.run(go()) == [f"{i}\n" for i in range(12)]


# -- the runner dies ---------------------------------------------------------------------------


def test_runner_killed_before_the_job_started_is_restarted_and_runs_it_once(
    tmp_path: Path,
) -> None:
    count = tmp_path / "count"
    script = f"echo x >> {count}"

    async def go() -> tuple[ShellResult | None, int, int]:
        shells = Shells(start_after=0)
        try:
            await shells.run(DEFAULT_EXEC, "true")
            (first,) = shells.pids()
            os.kill(first, signal.SIGSTOP)  # the job waits in the pipe, unread
            task = asyncio.ensure_future(shells.run(DEFAULT_EXEC, script))
            await asyncio.sleep(0.1)
            os.kill(first, signal.SIGKILL)
            res = await task
            (second,) = shells.pids()
            return res, first, second
        finally:
            await shells.aclose()

    res, first, second = asyncio.run(go())
    assert res is not None and res.ok
    assert first != second
    assert count.read_text() == "x\n"


def test_runner_killed_while_the_job_runs_fails_it_and_does_not_rerun_it(tmp_path: Path) -> None:
    count = tmp_path / "count"
    pidfile = tmp_path / "pid"
    # $$ is the runner itself: the script kills it after starting a background child.
    script = f"echo x >> {count}; sleep 30 & echo $! > {pidfile}; kill -9 $$; wait"

    async def go() -> None:
        shells = Shells(start_after=0)
        try:
            with pytest.raises(CommandError, match="exited while the command ran"):
                await shells.run(DEFAULT_EXEC, script)
            res = await shells.run(DEFAULT_EXEC, "echo next")  # a new runner
            assert res is not None and res.output == "next\n"
        finally:
            await shells.aclose()

    asyncio.run(go())
    assert count.read_text() == "x\n"
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(grandchild)


def test_runner_death_is_reported_to_the_job_in_flight() -> None:
    async def go() -> None:
        job = plan_job(DEFAULT_EXEC, "kill -9 $$; sleep 5")
        assert job is not None
        sh = PersistentShell(job.program, job.argv0)
        try:
            with pytest.raises(RunnerDied) as info:
                await sh.run(job)
            assert info.value.started
        finally:
            await sh.aclose()

    asyncio.run(go())


def test_set_up_failure_before_the_script_returns_none(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    job = plan_job(Exec.override(DEFAULT_EXEC, Exec(work_dir=str(work))), "echo ran")
    assert job is not None
    work.rmdir()

    async def go() -> ShellResult | None:
        sh = PersistentShell(job.program, job.argv0)
        try:
            return await sh.run(job)
        finally:
            await sh.aclose()

    assert asyncio.run(go()) is None


def test_closing_reaps_the_runner() -> None:
    async def go() -> int:
        shells = Shells(start_after=0)
        await shells.run(DEFAULT_EXEC, "true")
        (pid,) = shells.pids()
        await shells.aclose()
        return pid

    assert not alive(asyncio.run(go()))


@pytest.mark.parametrize("enabled", [True, False])
def test_agent_local_honours_the_persistent_shell_switch(tmp_path: Path, enabled: bool) -> None:
    pids = tmp_path / "pids"
    cmds = ", ".join(
        f"{{id: 'c{i}', check: 'echo $$ $BASHPID >> {pids}', change: 'true'}}" for i in range(3)
    )
    (tmp_path / "p.jsonnet").write_text(f"{{run: [{cmds}]}}\n")
    config = write_json(tmp_path / "c.json", {"run": {"persistentShell": enabled}})
    proc = run_agent("-c", str(config), "local", str(tmp_path / "p.jsonnet"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pairs = [line.split() for line in pids.read_text().splitlines()]
    assert len(pairs) == 3
    if enabled:
        assert len({runner for runner, _ in pairs}) == 1
        assert all(runner != job for runner, job in pairs)
    else:
        assert all(runner == job for runner, job in pairs)


def test_concurrent_engine_runs_keep_their_own_environment() -> None:
    async def one(i: int) -> list[str]:
        cmds = parse_commands(
            [{"id": f"c{j}", "check": "echo $RUN", "change": "true"} for j in range(4)],
            where="test",
        )
        outcome = await run_commands(cmds, exec=DEFAULT_EXEC, mode=Mode.CHANGE, env={"RUN": str(i)})
        assert outcome.error is None
        return [o.check_out for o in outcome.outputs]

    async def go() -> list[list[str]]:
        return await asyncio.gather(*(one(i) for i in range(4)))

    assert asyncio.run(go()) == [[str(i)] * 4 for i in range(4)]


def test_stdin_that_does_not_fit_the_pipe_is_refused_without_blocking() -> None:
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
        assert _fill(w, b"x" * 10000) is False
        assert _fill(w, b"") is True
    finally:
        os.close(r)
        os.close(w)
