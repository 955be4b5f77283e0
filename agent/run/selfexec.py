"""The agent's own executable, for the standard library's helper commands (issue 15, point 7).

The library's file, dir, copy, line and symlink functions run ``<vars.agentBin> file check ...``.
``agent run``, ``local`` and ``test`` pass :func:`agent_command` as the default ``vars.agentBin``
(a config or source var still wins), and :func:`agent_dir` is put first on the ``PATH`` of every
command the agent runs (:func:`agent.run.shell.process_env`), so a daemon started as
``/opt/agent/bin/agent run`` works without ``agent`` on ``PATH``.

How the executable is found, from ``sys.argv[0]`` of this process:

- a console script (``/opt/agent/bin/agent``, ``./agent``): its absolute path;
- ``python -m agent`` (``argv[0]`` is ``.../agent/__main__.py``): ``<sys.executable> -m agent``,
  and the interpreter's directory;
- anything else (an embedding program, a test runner): ``agent`` and no directory, as before.

Both are computed on each call (no module state); they only read ``sys.argv`` and the file system.
"""

from __future__ import annotations

import os
import shlex
import sys

__all__ = ["DEFAULT_AGENT_BIN", "agent_command", "agent_dir"]

#: The library's fallback when nothing better is known: ``agent`` from ``PATH``.
DEFAULT_AGENT_BIN = "agent"


def _argv0() -> str:
    return sys.argv[0] if sys.argv and sys.argv[0] else ""


def _is_module_run(argv0: str) -> bool:
    return os.path.basename(argv0) == "__main__.py" and (
        os.path.basename(os.path.dirname(argv0)) == "agent"
    )


def _is_agent_script(argv0: str) -> bool:
    return os.path.basename(argv0) == "agent" and os.path.isfile(argv0)


def agent_command() -> str:
    """The shell words that run this agent (used unquoted by the library, so quoted here)."""
    argv0 = _argv0()
    if _is_module_run(argv0):
        return f"{shlex.quote(sys.executable)} -m agent"
    if _is_agent_script(argv0):
        return shlex.quote(os.path.abspath(argv0))
    return DEFAULT_AGENT_BIN


def agent_dir() -> str | None:
    """The directory of this agent's executable (``None`` when it is not known)."""
    argv0 = _argv0()
    if _is_module_run(argv0):
        return os.path.dirname(sys.executable) or None
    if _is_agent_script(argv0):
        return os.path.dirname(os.path.abspath(argv0))
    return None
