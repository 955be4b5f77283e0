"""The persistent shell does not outlive its run: an idle daemon holds no bash (issue 14, 5).

A diff-run (what the daemon's runner calls per source run) starts its runner for its commands and
ends it when it returns; the next run starts a new one transparently.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.run.engine import diff_run
from agent.run.model import DEFAULT_EXEC, parse_commands


def runner_pids(log: Path) -> set[int]:
    return {int(p) for p in log.read_text().split()}


def gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists()


def test_the_runner_stops_when_the_run_ends_and_the_next_run_starts_another(
    tmp_path: Path,
) -> None:
    log = tmp_path / "pids"
    log.touch()
    # ``$$`` in a job names the runner (docs/patterns.md); each check records it and passes.
    cmds = parse_commands(
        [{"id": f"c{i}", "check": f"echo $$ >> {log}", "change": "false"} for i in range(3)],
        where="test",
    )

    async def run() -> set[int]:
        before = runner_pids(log)
        outcome = await diff_run(
            cmds, None, exec=DEFAULT_EXEC, check=False, no_remove=False, source="s"
        )
        assert outcome.error is None
        return runner_pids(log) - before

    first = asyncio.run(run())
    assert len(first) == 1  # the three checks ran in one persistent shell
    assert all(gone(pid) for pid in first)  # ... which ended (and was reaped) with the run
    second = asyncio.run(run())
    assert len(second) == 1 and second != first
    assert all(gone(pid) for pid in second)
    assert len(log.read_text().split()) == 6  # every check ran exactly once per run
