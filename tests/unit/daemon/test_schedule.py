"""The daemon's interval jobs (:class:`agent.daemon.schedule.Jobs`) on a real event loop.

One APScheduler job per source ``runFrequency``: it runs every interval, never overlaps itself,
reports its next run, follows a reload, and the scheduler is not created while no source has a
``runFrequency`` (the daemon then never imports APScheduler: tests/integration/
test_daemon_imports.py checks a real process).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from agent.config.schema import Config, config_from_dict
from agent.daemon.schedule import Jobs


def _config(**freqs: str) -> Config:
    sources = {name: {"runFrequency": freq} if freq else {} for name, freq in freqs.items()}
    return config_from_dict({"sources": sources})


def test_no_run_frequency_creates_no_scheduler() -> None:
    async def noop(name: str) -> None:
        return None

    async def go() -> bool:
        jobs = Jobs()
        jobs.sync(_config(web=""), ["web"], noop)
        return jobs.loaded

    assert asyncio.run(go()) is False


def test_job_runs_every_interval_and_a_slow_run_never_overlaps() -> None:
    running, most, starts = 0, 0, []

    async def tick(name: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        starts.append(name)
        await asyncio.sleep(1.5)  # longer than the 1 s interval
        running -= 1

    async def go() -> None:
        jobs = Jobs()
        jobs.sync(_config(web="1s"), ["web"], tick)
        deadline = time.monotonic() + 10
        while len(starts) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        jobs.shutdown()

    asyncio.run(go())
    assert starts[:2] == ["web", "web"]
    assert most == 1


def test_next_run_follows_a_reload_and_a_removed_source() -> None:
    async def noop(name: str) -> None:
        return None

    async def go() -> tuple[float | None, float | None, float | None]:
        jobs = Jobs()
        before = time.time()
        jobs.sync(_config(web="1h", db="5m"), ["web", "db"], noop)
        hour = jobs.next_run("web")
        jobs.sync(_config(web="2h"), ["web"], noop)  # SIGHUP: web's frequency changed, db gone
        two = jobs.next_run("web")
        gone = jobs.next_run("db")
        jobs.shutdown()
        return (
            hour - before if hour is not None else None,
            two - before if two is not None else None,
            gone,
        )

    hour, two, gone = asyncio.run(go())
    assert hour is not None and 3590 < hour <= 3601
    assert two is not None and 7190 < two <= 7201
    assert gone is None


_FRESH = """
import asyncio, sys, time
from agent.config.schema import config_from_dict
from agent.daemon.schedule import Jobs

async def go():
    ticks = []
    async def tick(name):
        ticks.append(name)
    jobs = Jobs()
    jobs.sync(config_from_dict({"sources": {"web": {"runFrequency": "1s"}}}), ["web"], tick)
    deadline = time.monotonic() + 10
    while not ticks and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    jobs.shutdown()
    return ticks

ticks = asyncio.run(go())
loaded = sorted(m for m in ("importlib.metadata", "email", "zipfile") if m in sys.modules)
import importlib.metadata
print(ticks, loaded, hasattr(importlib.metadata, "distribution"))
"""


def test_scheduler_runs_without_importlib_metadata_which_stays_importable() -> None:
    """In a fresh process (pytest itself loads importlib.metadata): the job runs, APScheduler
    was imported without ``importlib.metadata`` (and its email/zipfile), and a later import of
    ``importlib.metadata`` gets the real module."""
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "['web'] [] True"


_STAND_IN_FAILS = """
import sys
from agent.daemon import schedule

def refuse(self, name):
    raise AttributeError(f"the stand-in has no {name}")

schedule._NoMetadata.version = refuse  # an APScheduler asking for more than the stand-in answers
scheduler, interval = schedule.import_scheduler()
print(scheduler.__name__, interval.__name__, type(sys.modules["importlib.metadata"]).__name__)
import apscheduler
print(apscheduler.__version__ != "3.5.0")
"""


def test_an_apscheduler_the_stand_in_cannot_satisfy_is_imported_with_the_real_metadata() -> None:
    """When the import under the stand-in fails, APScheduler is imported again plainly: the
    scheduler classes come back, the real ``importlib.metadata`` is loaded and APScheduler read
    its true version from it."""
    proc = subprocess.run(
        [sys.executable, "-c", _STAND_IN_FAILS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["AsyncIOScheduler IntervalTrigger module", "True"]
