"""Per-source runtime state of `agent run` (:class:`SourceTable`) and the narrow view of it that
events and webhooks get (:class:`SourceView`).

A source's runtime holds the token it last admitted (an :class:`~agent.trust.gate.AdmittedToken`),
the pattern it runs now, its static fallback pattern, the pull validators, the rollback mark
(in its :class:`~agent.daemon.state.SourceMeta`) and two locks:

- ``lock``: runs of one source queue on it (not taken with ``runMulti``);
- ``save_lock``: serialises the mark computation and the state writes, also with ``runMulti``.

Invariants: all mutable daemon state about sources lives in one :class:`SourceTable`; nothing
here verifies, renders or runs anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from agent.daemon.state import SourceMeta
from agent.daemon.telemetry import DaemonMetrics

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.daemon.status import LastRun, Refusal
    from agent.run.hooks import CommandObserver
    from agent.run.model import Command, Exec
    from agent.trust.gate import AdmittedToken

T = TypeVar("T")

#: The id of the one command an ad-hoc push carries (``agent push src 'cmd'`` and Etcha's client).
ADHOC_COMMAND_ID = "etcha push"


@dataclass(frozen=True, slots=True)
class StoredPattern:
    """The pattern a source last accepted (or its static commands).

    Attributes:
        run: the run commands.
        run_exec: the resolved exec (config ⊕ source ⊕ pattern runExec).
        origin: ``static``, ``cached``, ``push`` or ``pull`` (for logs).
    """

    run: tuple[Command, ...]
    run_exec: Exec
    origin: str


@dataclass(frozen=True, slots=True)
class Pulled:
    """The last token a pull admitted, with the validators that came with it."""

    token: AdmittedToken
    etag: str
    last_modified: str


class SourceRuntime:
    """Mutable per-source state, owned by one :class:`SourceTable`."""

    __slots__ = (
        "last_refusal",
        "last_run",
        "lock",
        "meta",
        "name",
        "pattern",
        "pulled",
        "save_lock",
        "stale",
        "static",
        "token",
    )

    def __init__(self, name: str, meta: SourceMeta | None = None) -> None:
        self.name = name
        self.lock = asyncio.Lock()
        #: Serialises mark computation and state writes, also with ``runMulti``.
        self.save_lock = asyncio.Lock()
        self.token: AdmittedToken | None = None
        self.meta = meta or SourceMeta()
        self.pattern: StoredPattern | None = None
        #: The source's config commands, the pattern it falls back to when a token is withdrawn.
        self.static: StoredPattern | None = None
        self.pulled: Pulled | None = None
        #: Whether the token in hand was over ``maxTokenAge`` at the last pull (freeze warning).
        self.stale = False
        #: The last finished run and the last refused token (``GET /etcha/v1/system/status``).
        self.last_run: LastRun | None = None
        self.last_refusal: Refusal | None = None

    def withdraw(self, token: AdmittedToken) -> None:
        """Drop ``token`` (when it is still the one in hand): fall back to the static pattern."""
        if self.token is token:
            self.token = None
            self.pattern = self.static
            self.pulled = None


class SourceTable:
    """The runtime of every configured source, by name."""

    def __init__(self, names: Iterator[str] | list[str] | tuple[str, ...] = ()) -> None:
        self._sources = {name: SourceRuntime(name) for name in names}

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def __getitem__(self, name: str) -> SourceRuntime:
        return self._sources[name]

    def __len__(self) -> int:
        return len(self._sources)

    def get(self, name: str) -> SourceRuntime | None:
        """The runtime of ``name``, or ``None``."""
        return self._sources.get(name)

    @property
    def names(self) -> list[str]:
        """Source names, sorted."""
        return sorted(self._sources)

    def add(self, name: str) -> SourceRuntime:
        """Add a source (SIGHUP)."""
        runtime = SourceRuntime(name)
        self._sources[name] = runtime
        return runtime

    def remove(self, name: str) -> None:
        """Forget a source (SIGHUP)."""
        del self._sources[name]

    def mark(self, name: str) -> int | None:
        """The source's rollback mark (the trust gate reads it)."""
        runtime = self._sources.get(name)
        return runtime.meta.high_water_iat if runtime is not None else None

    def pattern(self, name: str) -> StoredPattern | None:
        """The pattern a source would run now."""
        runtime = self._sources.get(name)
        return runtime.pattern if runtime else None

    def token(self, name: str) -> AdmittedToken | None:
        """The token a source last admitted (restored, pushed or pulled)."""
        runtime = self._sources.get(name)
        return runtime.token if runtime else None

    def key_id(self, name: str, token: AdmittedToken | None = None) -> str:
        """The key id behind a run (the stored token's when ``token`` is ``None``)."""
        if token is None:
            token = self.token(name)
        return token.key_id if token is not None else ""


class SourceView(Protocol):
    """What events and webhooks see of the daemon: the config, stored patterns and tokens (both
    re-admitted on demand), the metrics, and two callbacks (track a run, stop the daemon)."""

    @property
    def config(self) -> Config:
        """The current config."""
        ...

    @property
    def metrics(self) -> DaemonMetrics:
        """The daemon's metrics (a no-op when none are attached)."""
        ...

    @property
    def observer(self) -> CommandObserver | None:
        """The default command observer."""
        ...

    def stored_token(self, source: str) -> AdmittedToken | None:
        """The token a source last admitted."""
        ...

    async def admitted_pattern(self, source: str) -> StoredPattern | None:
        """The stored pattern, after the stored token was re-admitted (``None``: withdrawn)."""
        ...

    async def tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` as a task that shutdown waits for."""
        ...

    def stop(self) -> None:
        """Ask the daemon to shut down."""
        ...


def is_adhoc(commands: tuple[Command, ...]) -> bool:
    """Whether a rendered pattern is an ad-hoc command line (SPEC 30): exactly one command,
    with the id ``etcha push`` and no sub-commands. Such a pattern runs once: it is not diffed,
    stored, re-run on ticks, and it does not move the rollback mark."""
    return len(commands) == 1 and commands[0].id == ADHOC_COMMAND_ID and not commands[0].commands


__all__ = [
    "ADHOC_COMMAND_ID",
    "Pulled",
    "SourceRuntime",
    "SourceTable",
    "SourceView",
    "StoredPattern",
    "is_adhoc",
]
