"""``agent.run.lazyloop``: a coroutine runs without an event loop until it awaits NEED_LOOP."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from agent.core.errors import AgentError
from agent.run.engine import Mode, run_commands
from agent.run.lazyloop import NEED_LOOP, drive
from agent.run.model import DEFAULT_EXEC, parse_commands


def test_a_coroutine_that_never_needs_a_loop_runs_without_asyncio() -> None:
    code = (
        "import sys\n"
        "from agent.run.lazyloop import drive\n"
        "async def f():\n"
        "    return 42\n"
        "print(drive(f()), 'asyncio' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["42", "False"]


def test_after_need_loop_the_same_coroutine_continues_under_asyncio() -> None:
    seen: list[str] = []

    async def f() -> int:
        seen.append("before")
        await NEED_LOOP
        seen.append("after")
        await asyncio.sleep(0)
        try:
            await asyncio.wait_for(asyncio.sleep(5), 0.01)
        except TimeoutError:
            return 7
        return 0

    assert drive(f()) == 7
    assert seen == ["before", "after"]


def test_an_exception_after_need_loop_propagates() -> None:
    async def f() -> None:
        await NEED_LOOP
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        drive(f())


def test_waiting_on_the_loop_before_need_loop_is_refused() -> None:
    async def f() -> None:
        await asyncio.sleep(0)

    with pytest.raises(AgentError, match="before asking for one"):
        drive(f())


def test_need_loop_inside_a_running_loop_does_nothing() -> None:
    async def f() -> str:
        await NEED_LOOP
        await asyncio.sleep(0)
        return "ok"

    assert asyncio.run(f()) == "ok"


def test_engine_driven_lazily_matches_the_engine_under_asyncio() -> None:
    """Spawned commands (persistent shell and a custom exec), a failed check, a timeout kill."""
    spec = [
        {"id": "a", "check": "echo out-a; false", "change": "echo changed-a"},
        {"id": "b", "check": "true", "change": "echo never"},
        {"id": "c", "check": "false", "change": "echo custom", "exec": {"command": "sh -c"}},
        {"id": "d", "check": "false", "change": "sleep 5", "exec": {"timeout": "200ms"}},
    ]
    outcomes = []
    for runner in (drive, asyncio.run):
        cmds = parse_commands(spec, where="test")
        outcome = runner(run_commands(cmds, exec=DEFAULT_EXEC, mode=Mode.CHANGE))
        outcomes.append(
            (
                [
                    (o.id, o.changed, o.change_fail, o.check_out, o.change_out)
                    for o in outcome.outputs
                ],
                str(outcome.error),
            )
        )
    assert outcomes[0] == outcomes[1]
    assert "timed out" in outcomes[0][1]


def test_engine_runs_bash_commands_in_the_persistent_shell_without_asyncio() -> None:
    code = (
        "import sys\n"
        "from agent.run.engine import Mode, run_commands\n"
        "from agent.run.lazyloop import drive\n"
        "from agent.run.model import DEFAULT_EXEC, parse_commands\n"
        "cmds = parse_commands([{'id': f'c{i}', 'check': 'echo $$ $BASHPID', 'change': 'true'}"
        " for i in range(3)], where='t')\n"
        "out = drive(run_commands(cmds, exec=DEFAULT_EXEC, mode=Mode.CHANGE))\n"
        "assert out.error is None, out.error\n"
        "pairs = [o.check_out.split() for o in out.outputs]\n"
        "print(len({p[0] for p in pairs}), len({p[1] for p in pairs}), 'asyncio' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "3", "False"]  # one runner, three jobs, no asyncio
