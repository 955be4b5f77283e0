"""The daemon's interval jobs (:class:`agent.daemon.schedule.IntervalJobs`), on a real event loop.

The behaviours APScheduler gave before: a job runs every interval, never overlaps itself, skips
(coalesces) the slots a slow run missed, reports its next run, and stops when removed.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from agent.daemon.schedule import IntervalJobs


def test_a_slow_job_never_overlaps_and_skips_the_slots_it_missed() -> None:
    running, most, starts = 0, 0, []

    async def tick(name: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        starts.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.25)  # five slots of 0.05 s
        running -= 1

    async def go() -> None:
        jobs = IntervalJobs()
        jobs.add("a", 0.05, tick)
        while len(starts) < 3:
            await asyncio.sleep(0.01)
        jobs.shutdown()

    asyncio.run(go())
    assert most == 1
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= 0.25 for g in gaps)  # after the slow run, not once per missed slot


def test_next_run_is_one_interval_ahead_and_removal_stops_the_job() -> None:
    ticks: list[str] = []

    async def tick(name: str) -> None:
        ticks.append(name)

    async def go() -> tuple[float | None, float | None, int]:
        jobs = IntervalJobs()
        before = time.time()
        jobs.add("a", 3600, tick)
        await asyncio.sleep(0)
        ahead = jobs.next_run("a")
        jobs.remove("a")
        await asyncio.sleep(0)
        return (ahead - before if ahead is not None else None), jobs.next_run("a"), len(ticks)

    ahead, after, count = asyncio.run(go())
    assert ahead is not None and 3590 < ahead <= 3601
    assert after is None
    assert count == 0


def test_a_crashing_job_keeps_its_schedule() -> None:
    calls = 0

    async def tick(name: str) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    async def go() -> None:
        jobs = IntervalJobs()
        jobs.add("a", 0.01, tick)
        while calls < 3:
            await asyncio.sleep(0.01)
        jobs.shutdown()

    asyncio.run(go())
    assert calls >= 3
