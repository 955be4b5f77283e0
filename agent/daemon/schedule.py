"""Timing of `agent run`: the periodic jobs (one interval job per source ``runFrequency``), the
randomized start delay and the systemd watchdog.

The interval jobs are plain asyncio tasks (:class:`IntervalJobs`), not APScheduler: the daemon
needs only "every N seconds, coalesced, one run at a time", and APScheduler (with tzlocal and
multiprocessing) cost about 2-4 MiB of resident memory in every daemon with a ``runFrequency``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.core.durations import format_duration_short
from agent.daemon import sdnotify

if TYPE_CHECKING:
    from agent.config.schema import Config

logger = logging.getLogger(__name__)

Tick = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class _Job:
    interval: float
    task: asyncio.Task[None] | None = None
    next_run: float | None = field(default=None)


class IntervalJobs:
    """One job per source: ``tick(name)`` every ``interval`` seconds on the running loop.

    The first run is one interval after the job is added. Runs never overlap: a run that takes
    longer than the interval delays the next one to the next slot in the future, and missed
    slots are not run (coalesced), as APScheduler's ``coalesce=True, max_instances=1`` did.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}

    def names(self) -> list[str]:
        """The scheduled source names."""
        return sorted(self._jobs)

    def interval(self, name: str) -> float | None:
        """The interval of ``name``'s job (None: not scheduled)."""
        job = self._jobs.get(name)
        return job.interval if job is not None else None

    def add(self, name: str, interval: float, tick: Tick) -> None:
        """Schedule ``tick(name)`` every ``interval`` seconds (replaces an existing job)."""
        self.remove(name)
        job = _Job(interval)
        job.task = asyncio.get_running_loop().create_task(self._every(name, job, tick))
        self._jobs[name] = job

    def remove(self, name: str) -> None:
        """Unschedule ``name`` (a run in progress is cancelled)."""
        job = self._jobs.pop(name, None)
        if job is not None and job.task is not None:
            job.task.cancel()

    def next_run(self, name: str) -> float | None:
        """When ``name`` next runs (Unix time), or None when it is not scheduled."""
        job = self._jobs.get(name)
        return job.next_run if job is not None else None

    def shutdown(self) -> None:
        """Cancel every job."""
        for name in list(self._jobs):
            self.remove(name)

    @staticmethod
    async def _every(name: str, job: _Job, tick: Tick) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        slot = 1
        while True:
            due = start + slot * job.interval
            job.next_run = time.time() + max(0.0, due - loop.time())
            await asyncio.sleep(max(0.0, due - loop.time()))
            job.next_run = None
            try:
                await tick(name)
            except Exception:  # the tick logs its own failures; never let one end the job
                logger.exception("Source %s: scheduled run crashed", name)
            slot = max(slot + 1, int((loop.time() - start) // job.interval) + 1)


def sync_jobs(
    scheduler: IntervalJobs,
    config: Config,
    names: Sequence[str],
    tick: Tick,
) -> None:
    """Make the jobs match the sources' ``runFrequency`` (start-up and SIGHUP).

    Jobs whose source is gone or whose frequency changed are removed; missing ones are added.

    Args:
        scheduler: the daemon's :class:`IntervalJobs`.
        config: the current config.
        names: the source names.
        tick: runs one source (the job function).
    """
    wanted: dict[str, float] = {}
    for name in names:
        freq = float(config.sources[name].run_frequency or 0)
        if freq > 0:
            wanted[name] = freq
    for name in scheduler.names():
        if wanted.get(name) != scheduler.interval(name):
            scheduler.remove(name)
    for name, freq in sorted(wanted.items()):
        if scheduler.interval(name) is None:
            scheduler.add(name, freq, tick)
            logger.info("Source %s: running every %s", name, format_duration_short(freq))


async def start_delay(config: Config, stop_event: asyncio.Event | None) -> None:
    """Sleep a random ``0..run.randomizedStartDelaySec`` seconds (cut short by a stop)."""
    delay = float(config.run.randomized_start_delay_sec or 0)
    if delay <= 0:
        return
    seconds = secrets.randbelow(int(delay * 1000)) / 1000
    logger.info("Waiting %.1fs (run.randomizedStartDelaySec) before starting sources", seconds)
    if stop_event is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop_event.wait(), seconds)


async def watchdog() -> None:
    """Send systemd ``WATCHDOG=1`` at the interval systemd asked for (forever)."""
    interval = sdnotify.watchdog_interval()
    if interval is None:
        return
    while True:
        sdnotify.watchdog()
        await asyncio.sleep(interval)


def next_run(scheduler: IntervalJobs | None, name: str) -> float | None:
    """When the scheduler next runs ``name`` (Unix time), or None when it is not scheduled."""
    return scheduler.next_run(name) if scheduler is not None else None


__all__ = ["IntervalJobs", "next_run", "start_delay", "sync_jobs", "watchdog"]
