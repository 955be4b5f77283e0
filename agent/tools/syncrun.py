"""Finishing the async build and signing steps from synchronous code (issue 14, contract 4).

:func:`agent.tools.build.collect_build` and :func:`agent.tools.build.sign_claims` are coroutines
because build commands and ``build.signingCommands`` run through the asyncio engine. When a step
runs no command it never waits on anything, so :func:`finish` drives it to the end without an
event loop (``coroutine.send``), and ``agent push``/``agent build`` never import asyncio for it.
Only a step that runs commands gets a loop (``asyncio.run``, imported then).
"""

from __future__ import annotations

from collections.abc import Coroutine

from agent.core.errors import AgentError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from agent.config.schema import Config
    from agent.pattern.load import LoadedPattern

    T = TypeVar("T")


def finish(coro: Coroutine[Any, Any, T], *, needs_loop: bool) -> T:
    """Run ``coro`` to its end and return its value (its exception propagates).

    Args:
        coro: the step (not yet started).
        needs_loop: whether the step runs commands (then it runs under ``asyncio.run``).

    Raises:
        AgentError: ``needs_loop`` was false but the step waited (a caller's mistake; the step
            is closed, nothing it started keeps running).
    """
    if needs_loop:
        import asyncio

        return asyncio.run(coro)
    try:
        coro.send(None)
    except StopIteration as stop:
        value: T = stop.value
        return value
    coro.close()
    raise AgentError("internal error: a build step that runs no command waited on the event loop")


def build_runs_commands(loaded: LoadedPattern) -> bool:
    """Whether :func:`~agent.tools.build.collect_build` runs commands for ``loaded``."""
    return bool(loaded.pattern.build)


def signing_runs_commands(config: Config) -> bool:
    """Whether :func:`~agent.tools.build.sign_claims` runs ``build.signingCommands``."""
    return bool(config.build.signing_commands)


__all__ = ["build_runs_commands", "finish", "signing_runs_commands"]
