"""The run engine's hooks: protocols for the type checker only.

The engine calls two optional hooks: a :class:`CommandObserver` (the daemon's metrics) and an
:class:`InProcess` runner (built-in helpers inside the agent, :mod:`agent.run.inprocess`). They are
structural types, so no code needs them at run time; import them under ``TYPE_CHECKING``, which
keeps ``typing`` off the start-up of ``agent local`` (issue 14).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from agent.run.shell import ShellResult

__all__ = ["CommandObserver", "InProcess"]


class CommandObserver(Protocol):
    """Metrics hook, called like Etcha's ``etcha_commands_total`` counter is incremented."""

    def command_done(self, *, id: str, parent_id: str, mode: str, error: bool) -> None:
        """One step of one command: ``mode`` is check/change/remove; on check, error = drift."""


class InProcess(Protocol):
    """Runs a helper invocation inside the agent, or declines."""

    @property
    def etcha(self) -> bool:
        """Whether ``etcha <verb> ...`` counts as a helper invocation too."""

    def try_run(
        self, argv: Sequence[str], env: Mapping[str, str], stdin: str
    ) -> ShellResult | None:
        """Run ``argv`` (``[verb, args...]``, program name removed) with the command's ``env``
        (what the child would get) and ``stdin`` text; ``None`` to decline (run in a shell)."""
