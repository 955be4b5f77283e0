"""Events between sources (SPEC 12) and the daemon's system events (reference etcha-run.md §5).

Responsibility: after a source run, hand each event it emitted (``etcha:<name>`` in onChange,
onRemove or onFail) to the sources that receive it, and fire the daemon's own ``pull`` and
``push`` events. :class:`Events` implements :class:`EventDispatcher`; :func:`run_direct` is also
how webhooks run a pattern. Both see the daemon only through
:class:`agent.daemon.sources.SourceView` (config, stored patterns and tokens, metrics, and the
``tracked``/``stop`` callbacks).

Dispatch rules:

- Events are taken **in emission order** (SPEC 12; Etcha sorts them by name). An event is sent
  only when the sender's ``eventsSend`` regexp is set and matches its name (``re.search``,
  unanchored: ``.*`` allows all, ``[^b]`` allows ``a`` but not ``b``).
- Receivers are the sources whose ``eventsReceive`` lists the name, **alphabetically**, each run
  **once per firing output**, and **never the sender itself**.
- A receiver runs its stored pattern (last accepted token, else static commands) **directly**:
  change mode, no diff, checkOnly and triggerOnly ignored, exec = config exec ⊕ source exec ⊕
  pattern runExec (the stored pattern's ``run_exec``), ParentID = the receiver's name. Its env:
  ``ETCHA_EVENT_ID`` (the firing command's id), ``ETCHA_EVENT_NAME``, ``ETCHA_EVENT_OUTPUT`` (the
  firing command's trimmed change output; remove output for onRemove events),
  ``ETCHA_EVENT_PUBLIC_KEY`` (the configured id of the key that verified the sender's token,
  ``""`` for static commands or verify commands), ``ETCHA_EVENT_SRC`` (the pusher's address for
  push runs, else ``""``), ``ETCHA_SOURCE_NAME`` (the receiver) and ``ETCHA_SOURCE_TRIGGER=event``.
- **No cascades**: events emitted by handler runs (and by webhook runs) are discarded.
- Handler failures are logged; dispatch goes on. Each handler run counts once in
  ``etcha_sources_total{trigger="event"}``.

System events:

- ``stdout``/``stderr``: the engine prints the output when the event is emitted; it is otherwise
  an ordinary event.
- ``exit``: when a sender whose ``eventsSend`` allows ``exit`` emits it, its receivers run, then
  the daemon stops cleanly (the sender's state was saved before dispatch; in-flight runs finish).
  A receiver with ``eventsReceiveExit`` also stops the daemon after it ran.
- ``pull``: fired by the daemon after every pull attempt of a source with ``pullPaths`` (errors
  included). ``ETCHA_EVENT_ID`` is the source name and ``ETCHA_EVENT_OUTPUT`` the pull result,
  ``fetched``, ``not_modified`` or ``error`` (the ``agent_pull_total`` result label).
- ``push``: fired by the daemon after a pushed token that verified has run (failed runs
  included; check-mode pushes, which must change nothing, and refused pushes do not fire it).
  ``ETCHA_EVENT_ID`` is the source name and ``ETCHA_EVENT_OUTPUT`` the Result as compact JSON
  (the push client's answer, e.g. ``{"changedIDs":["a"],...,"err":""}``).
- ``pull``, ``push`` and ``shell`` are **reserved**: only the daemon fires them; a pattern that
  emits them is ignored (logged), so a pattern cannot impersonate the daemon. ``shell`` is
  fired by :mod:`agent.daemon.shell` when a session opens (``ETCHA_EVENT_ID`` the source,
  ``ETCHA_EVENT_OUTPUT`` ``opened``, ``ETCHA_EVENT_PUBLIC_KEY`` the key id, ``ETCHA_EVENT_SRC``
  the client address).
- ``webhookBody``/``webhookContentType`` are read by :mod:`agent.daemon.webhooks`; ``jwt``,
  ``buildManifest`` and ``runVar_*`` belong to build and verify.

System events are not subject to the sender's ``eventsSend`` (the daemon sends them), but they
follow the same receiver rules (alphabetical, never to the source they are about).

Invariants: an :class:`Events` holds no state; everything comes from the view passed in.
Handler runs take no source lock (the sender's lock is held during dispatch, so locking receivers
could deadlock two sources that receive each other's events).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Protocol

from agent.core.errors import AgentError
from agent.daemon.sources import SourceView, StoredPattern
from agent.run.engine import Mode, Output, RunOutcome, run_commands

logger = logging.getLogger(__name__)

#: Events only the daemon fires; patterns that emit them are ignored.
RESERVED_EVENTS = frozenset({"pull", "push", "shell"})
#: The event that stops the daemon after its receivers ran.
EXIT_EVENT = "exit"


class EventDispatcher(Protocol):
    """Dispatches a run's events to receiving sources (:class:`Events`)."""

    async def dispatch(
        self,
        view: SourceView,
        source: str,
        outcome: RunOutcome,
        *,
        public_key: str = "",
        remote_addr: str = "",
    ) -> bool:
        """Run receivers for ``outcome``'s events; return the Result ``exit`` flag."""
        ...

    async def fire(
        self,
        view: SourceView,
        source: str,
        name: str,
        output: str,
        *,
        public_key: str = "",
        remote_addr: str = "",
    ) -> bool:
        """Fire a system event (``pull``, ``push``) about ``source``; return the exit flag."""
        ...


def event_output(out: Output) -> str:
    """The text an event carries: the firing command's change output (remove output on removal).

    Args:
        out: the firing output.

    Returns:
        The trimmed output.
    """
    if out.removed and not out.changed:
        return out.remove_out
    return out.change_out


def receivers_for(view: SourceView, event: str, sender: str) -> list[str]:
    """The sources that receive ``event``, alphabetically, without ``sender``.

    Args:
        view: the daemon's source view (its current config).
        event: the event name.
        sender: the source the event came from (never receives it).

    Returns:
        The receiving source names.
    """
    sources = view.config.sources
    return sorted(n for n, s in sources.items() if event in s.events_receive and n != sender)


async def run_direct(
    view: SourceView,
    source: str,
    pattern: StoredPattern,
    env: Mapping[str, str],
    *,
    trigger: str,
    public_key: str = "",
    remote_addr: str = "",
) -> RunOutcome:
    """Run a stored pattern's run list directly (events and webhooks): change mode, no diff.

    Counts one ``etcha_sources_total`` step (and the commands) when the daemon has metrics.

    Args:
        view: the daemon's source view.
        source: the source whose pattern runs (its ParentID).
        pattern: the stored pattern.
        env: the initial ``ETCHA_*`` variables.
        trigger: ``event`` or ``webhook`` (metrics label).
        public_key: metrics label: the key id behind the run.
        remote_addr: metrics label: the client address.

    Returns:
        The outcome; a failed command is its ``error``.

    Raises:
        AgentError: the run could not start at all (logged by callers).
    """
    metrics = view.metrics
    observer = metrics.command_observer(source, public_key=public_key, remote_addr=remote_addr)
    if observer is None:
        observer = view.observer
    error = True
    try:
        outcome = await run_commands(
            pattern.run,
            exec=pattern.run_exec,
            mode=Mode.CHANGE,
            env=env,
            parent_id=source,
            observer=observer,
            persistent_shell=view.config.run.persistent_shell,
        )
        error = outcome.error is not None
        if not error:
            metrics.set_source_commands(
                source,
                trigger,
                changed=sum(1 for o in outcome.outputs if o.changed),
                removed=0,
                public_key=public_key,
                remote_addr=remote_addr,
            )
        return outcome
    finally:
        metrics.source_run(source, trigger, error, public_key, remote_addr)


class Events:
    """The daemon's event dispatcher (see the module docstring for the rules)."""

    async def dispatch(
        self,
        view: SourceView,
        source: str,
        outcome: RunOutcome,
        *,
        public_key: str = "",
        remote_addr: str = "",
    ) -> bool:
        """Send the events of a source run to their receivers.

        Args:
            view: the daemon's source view.
            source: the sender.
            outcome: the sender's run.
            public_key: the id of the key that verified the sender's token.
            remote_addr: the pusher's address (push runs).

        Returns:
            Whether the daemon is to exit (``exit`` sent, or an ``eventsReceiveExit`` receiver
            ran); the daemon has then been asked to stop.
        """
        src = view.config.sources.get(source)
        emitted = outcome.events()
        if src is None or not emitted:
            return False
        allowed = re.compile(src.events_send) if src.events_send else None
        exit_ = False
        for name, out in emitted:
            if name in RESERVED_EVENTS:
                logger.warning(
                    "Source %s emitted reserved event %s; only the daemon fires it", source, name
                )
                continue
            if allowed is None or allowed.search(name) is None:
                logger.debug("Skipping firing event %s, not allowed for source %s", name, source)
                continue
            if await self._deliver(
                view,
                source,
                name,
                event_id=out.id,
                output=event_output(out),
                public_key=public_key,
                remote_addr=remote_addr,
            ):
                exit_ = True
            if name == EXIT_EVENT:
                exit_ = True
        if exit_:
            logger.info("Source %s: exit requested by an event; stopping", source)
            view.stop()
        return exit_

    async def fire(
        self,
        view: SourceView,
        source: str,
        name: str,
        output: str,
        *,
        public_key: str = "",
        remote_addr: str = "",
    ) -> bool:
        """Fire a system event (``pull``, ``push``) about ``source``.

        Args:
            view: the daemon's source view.
            source: the source the event is about (``ETCHA_EVENT_ID``; it does not receive it).
            name: the event name.
            output: ``ETCHA_EVENT_OUTPUT``.
            public_key: ``ETCHA_EVENT_PUBLIC_KEY``.
            remote_addr: ``ETCHA_EVENT_SRC``.

        Returns:
            Whether an ``eventsReceiveExit`` receiver ran (the daemon has been asked to stop).
        """
        exit_ = await self._deliver(
            view,
            source,
            name,
            event_id=source,
            output=output,
            public_key=public_key,
            remote_addr=remote_addr,
        )
        if exit_:
            logger.info("Event %s from %s: a receiver requested exit; stopping", name, source)
            view.stop()
        return exit_

    async def _deliver(
        self,
        view: SourceView,
        sender: str,
        name: str,
        *,
        event_id: str,
        output: str,
        public_key: str,
        remote_addr: str,
    ) -> bool:
        exit_ = False
        for receiver in receivers_for(view, name, sender):
            logger.info("Running source %s for event %s from ID %s", receiver, name, event_id)
            if view.config.sources[receiver].events_receive_exit:
                exit_ = True
            pattern = await view.admitted_pattern(receiver)
            if pattern is None or not pattern.run:
                logger.info(
                    "No pattern with runnable commands for source %s to handle event %s",
                    receiver,
                    name,
                )
                continue
            env = {
                "ETCHA_EVENT_ID": event_id,
                "ETCHA_EVENT_NAME": name,
                "ETCHA_EVENT_OUTPUT": output,
                "ETCHA_EVENT_PUBLIC_KEY": public_key,
                "ETCHA_EVENT_SRC": remote_addr,
                "ETCHA_SOURCE_NAME": receiver,
                "ETCHA_SOURCE_TRIGGER": "event",
            }
            try:
                outcome = await run_direct(
                    view,
                    receiver,
                    pattern,
                    env,
                    trigger="event",
                    public_key=public_key,
                    remote_addr=remote_addr,
                )
            except AgentError as exc:
                logger.error("Source %s: handling event %s failed: %s", receiver, name, exc)
                continue
            if outcome.error is not None:
                logger.error(
                    "Source %s: handling event %s failed: %s", receiver, name, outcome.error
                )
            # Events emitted by handler runs are discarded: no cascades (SPEC 12).
        return exit_


__all__ = [
    "EXIT_EVENT",
    "RESERVED_EVENTS",
    "EventDispatcher",
    "Events",
    "event_output",
    "receivers_for",
    "run_direct",
]
