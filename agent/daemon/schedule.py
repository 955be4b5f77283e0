"""Timing of `agent run`: the periodic jobs (one APScheduler interval job per source
``runFrequency``), the randomized start delay and the systemd watchdog.

APScheduler (with tzlocal) costs about 1.5 MiB of resident memory, so :class:`Jobs` imports it
only when a source has a ``runFrequency`` (issue 14: heavy parts only when configured); a daemon
that only takes pushes never loads it. It is imported without ``importlib.metadata``
(:func:`import_scheduler`), which would cost another 1.5 MiB for nothing the daemon uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
import types
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from agent.core.durations import format_duration_short
from agent.daemon import sdnotify

if TYPE_CHECKING:
    from agent.config.schema import Config

logger = logging.getLogger(__name__)

Tick = Callable[[str], Awaitable[None]]


class Jobs:
    """The daemon's interval jobs: ``tick(name)`` every ``runFrequency`` of each source.

    Runs never overlap and the slots a slow run missed are skipped (APScheduler's
    ``coalesce=True, max_instances=1``). The scheduler is created, on the running loop, the
    first time a source needs a job.
    """

    def __init__(self) -> None:
        self._scheduler: Any = None
        self._interval: Any = None

    @property
    def loaded(self) -> bool:
        """Whether the scheduler (and so APScheduler) was created."""
        return self._scheduler is not None

    def sync(self, config: Config, names: Sequence[str], tick: Tick) -> None:
        """Make the jobs match the sources' ``runFrequency`` (start-up and SIGHUP).

        Jobs whose source is gone or whose frequency changed are removed; missing ones are added.

        Args:
            config: the current config.
            names: the source names.
            tick: runs one source (the job function).
        """
        wanted: dict[str, float] = {}
        for name in names:
            freq = float(config.sources[name].run_frequency or 0)
            if freq > 0:
                wanted[f"source:{name}"] = freq
        if not wanted and self._scheduler is None:
            return
        scheduler = self._start()
        for job in scheduler.get_jobs():
            if job.id not in wanted or job.trigger.interval.total_seconds() != wanted[job.id]:
                job.remove()
        existing = {job.id for job in scheduler.get_jobs()}
        for job_id, freq in sorted(wanted.items()):
            if job_id in existing:
                continue
            name = job_id.removeprefix("source:")
            scheduler.add_job(
                tick,
                self._interval(seconds=freq),
                args=[name],
                id=job_id,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(1, int(freq)),
            )
            logger.info("Source %s: running every %s", name, format_duration_short(freq))

    def next_run(self, name: str) -> float | None:
        """When ``name`` next runs (Unix time), or None when it is not scheduled."""
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job(f"source:{name}")
        when = getattr(job, "next_run_time", None)
        return float(when.timestamp()) if when is not None else None

    def shutdown(self) -> None:
        """Stop every job (a run in progress finishes; the daemon drains it)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def _start(self) -> Any:
        if self._scheduler is None:
            scheduler_class, self._interval = import_scheduler()
            self._scheduler = scheduler_class(event_loop=asyncio.get_running_loop())
            self._scheduler.start()
        return self._scheduler


class _NoMetadata(types.ModuleType):
    """Stands for ``importlib.metadata`` while APScheduler 3 is imported (:func:`import_scheduler`).

    APScheduler asks it two things at import: its own version (``apscheduler.__version__``,
    which nothing reads; without metadata APScheduler's fallback applies) and the entry points
    behind the string aliases of triggers, executors and job stores (``"interval"``...). The
    daemon passes those as objects (:class:`~apscheduler.triggers.interval.IntervalTrigger`, the
    asyncio scheduler's default executor and memory job store), so no alias is ever looked up.
    The real module (with email, zipfile, csv and a scan of every installed distribution) costs
    about 1.5 MiB of resident memory.
    """

    class PackageNotFoundError(ModuleNotFoundError):
        """What ``version`` raises: no metadata is looked up."""

    def __init__(self) -> None:
        super().__init__("importlib.metadata")

    def version(self, name: str) -> str:
        raise self.PackageNotFoundError(name)

    def entry_points(self, **_selection: Any) -> tuple[()]:
        return ()


def import_scheduler() -> tuple[Any, Any]:
    """APScheduler's ``AsyncIOScheduler`` and ``IntervalTrigger`` classes, imported with
    :class:`_NoMetadata` standing for ``importlib.metadata`` (unless the real one is loaded
    already). Afterwards ``importlib.metadata`` imports the real module again. An APScheduler
    that needs more of ``importlib.metadata`` than the stand-in answers is imported again with the
    real module, so the trick can only ever cost memory, never the scheduler."""
    stub = None
    if "apscheduler" not in sys.modules and "importlib.metadata" not in sys.modules:
        stub = sys.modules["importlib.metadata"] = _NoMetadata()
    try:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger
    except Exception:
        if stub is None:
            raise
        # An APScheduler that asks the stand-in for more than it answers: forget the half-made
        # import and import it plainly (it costs the memory, never the scheduler).
        logger.debug("APScheduler needs importlib.metadata; importing it with the real module")
        for name in [m for m in sys.modules if m == "apscheduler" or m.startswith("apscheduler.")]:
            del sys.modules[name]
        if sys.modules.get("importlib.metadata") is stub:
            del sys.modules["importlib.metadata"]
        stub = None
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger
    finally:
        if stub is not None and sys.modules.get("importlib.metadata") is stub:
            del sys.modules["importlib.metadata"]
    return AsyncIOScheduler, IntervalTrigger


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


__all__ = ["Jobs", "import_scheduler", "start_delay", "watchdog"]
