"""Benchmark: engine overhead over the raw process-spawn floor.

A 100-command list runs through :func:`agent.run.engine.run_commands` and is compared with the same
``bash -c`` scripts spawned one after another through :func:`agent.run.shell.run` with no engine
logic (the floor).

- ``noop``: every check passes (100 spawns).
- ``change``: every check fails and every change runs (200 spawns).

Each side runs ``ROUNDS`` times, interleaved; the median is reported. Target: agent/floor <= 1.30.
Usage: ``python bench/commands.py [rounds]``. Exit code 1 when a case misses the target.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from agent.run import shell
from agent.run.engine import Mode, run_commands
from agent.run.model import DEFAULT_EXEC, Command

N = 100
ROUNDS = 7
TARGET = 1.30


def commands(kind: str) -> tuple[Command, ...]:
    if kind == "noop":
        return tuple(
            Command(id=f"cmd{i}", check=f"test -d /tmp # {i}", change="true") for i in range(N)
        )
    return tuple(
        Command(id=f"cmd{i}", check=f"test -d /nonexistent-{i}", change=f"true # {i}")
        for i in range(N)
    )


async def agent_run(cmds: tuple[Command, ...]) -> float:
    start = time.perf_counter()
    out = await run_commands(cmds, exec=DEFAULT_EXEC, mode=Mode.CHANGE, parent_id="bench")
    elapsed = time.perf_counter() - start
    if out.error is not None:
        raise SystemExit(f"bench run failed: {out.error}")
    return elapsed


async def floor_run(cmds: tuple[Command, ...], kind: str) -> float:
    start = time.perf_counter()
    for c in cmds:
        await shell.run(DEFAULT_EXEC, c.check)
        if kind == "change":
            await shell.run(DEFAULT_EXEC, c.change)
    return time.perf_counter() - start


async def case(kind: str, rounds: int) -> bool:
    cmds = commands(kind)
    await agent_run(cmds)  # warm-up
    await floor_run(cmds, kind)
    agent_t: list[float] = []
    floor_t: list[float] = []
    for _ in range(rounds):
        agent_t.append(await agent_run(cmds))
        floor_t.append(await floor_run(cmds, kind))
    a = statistics.median(agent_t)
    f = statistics.median(floor_t)
    ratio = a / f
    ok = ratio <= TARGET
    overhead = (a - f) / N * 1000
    print(
        f"{kind}: agent {a * 1000:.0f}ms, floor {f * 1000:.0f}ms, ratio {ratio:.2f} "
        f"(target <= {TARGET:.2f}) {'PASS' if ok else 'FAIL'}, "
        f"overhead {overhead:.2f} ms/command"
    )
    return ok


async def main(rounds: int) -> int:
    ok = True
    for kind in ("noop", "change"):
        ok = await case(kind, rounds) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)))
