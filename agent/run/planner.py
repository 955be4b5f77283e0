"""Which scripts the persistent shell runs, and the exact environment it gives them (issue 14).

:class:`Planner` turns ``(exec, script, env, stdin)`` into a :class:`Job` for
:mod:`agent.run.persistent`, or ``None`` when the command must be spawned as before: an exec
that is not ``bash [-e|-u|-o pipefail]... -c`` (user, group, container, sudo when not root,
another program), an environment bash would treat specially at start-up, a missing working
directory, or stdin larger than a pipe holds. The job's exported variables are the ones a new
``bash`` would export: the command's environment (:func:`agent.run.shell.process_env`) with
``PWD``, ``SHLVL`` and ``OLDPWD`` computed as bash computes them at start-up.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from agent.core.records import Record
from agent.core.which import which
from agent.run.model import Exec
from agent.run.selfexec import agent_dir
from agent.run.shell import inherited_env, process_env

__all__ = ["MAX_STDIN", "PER_JOB", "Job", "Planner", "bash_word", "plan_job"]

#: Largest stdin text handed to the runner (it must fit the pipe buffer); more spawns.
MAX_STDIN = 60 * 1024
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Variables bash treats specially when it imports them at start-up: such an env spawns.
_SPECIAL = frozenset(
    {
        "ENV", "SHELLOPTS", "POSIXLY_CORRECT", "POSIX_PEDANTIC", "IFS", "EUID", "UID", "PPID",
        "GROUPS", "FUNCNAME", "RANDOM", "SRANDOM", "SECONDS", "LINENO", "HISTCMD", "DIRSTACK",
        "PIPESTATUS", "EPOCHREALTIME", "EPOCHSECONDS", "OPTIND", "OPTERR", "COMP_WORDBREAKS",
    }
)  # fmt: skip
_OPTS = frozenset({"-e", "-u", "-eu", "-ue"})


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Job(Record):
    """One script ready for the runner (built by :func:`plan_job`)."""

    program: str
    argv0: str
    options: str
    cwd: str
    script: str
    #: The exported environment (``NAME: VALUE``), as a new bash would have it.
    exports: Mapping[str, str]
    underscore: str
    stdin: bytes
    timeout: float


def _supported() -> bool:
    """Linux: ``/proc/<pid>/fd`` and memfds."""
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


def _shell_words(ex: Exec) -> tuple[str, str] | None:
    """``(argv0, options)`` when ``ex.command`` is ``bash [-e|-u|-o pipefail]... -c``."""
    try:
        words = shlex.split(ex.command or "")
    except ValueError:
        return None
    if len(words) < 2 or os.path.basename(words[0]) != "bash" or words[-1] != "-c":
        return None
    opts = words[1:-1]
    i = 0
    while i < len(opts):
        if opts[i] == "-o" and i + 1 < len(opts) and opts[i + 1] == "pipefail":
            i += 2
        elif opts[i] in _OPTS:
            i += 1
        else:
            return None
    return words[0], " ".join(opts)


def _shlvl(value: str | None) -> str | None:
    """SHLVL as bash computes it at start-up; ``None`` when bash would print a warning."""
    try:
        level = int(value.strip()) if value is not None else 0
    except ValueError:
        level = 0
    level = max(level + 1, 0)
    return None if level >= 1000 else str(level)


def _pwd(inherited: str, cwd: str) -> str:
    """PWD as bash sets it at start-up in ``cwd``: an absolute inherited PWD naming the same
    directory is kept (canonicalised), else the physical path."""
    if inherited.startswith("/"):
        with contextlib.suppress(OSError):
            if os.path.samefile(inherited, cwd):
                return os.path.normpath(inherited)
    return os.path.realpath(cwd)


#: Set up afresh in every job (bash computes them at start-up), never part of the runner's env.
PER_JOB = ("PWD", "SHLVL", "OLDPWD")


def _name_ok(name: str) -> bool:
    """Whether bash imports ``name`` from its environment as a plain exported variable (and
    the runner's own ``__agent_*`` names are not used)."""
    return (
        bool(_NAME.match(name))
        and not name.startswith(("BASH", "__agent_"))
        and name not in _SPECIAL
    )


class Planner:
    """Decides which scripts the runner takes (:meth:`plan`), with the lookups of one run
    cached: the agent's inherited environment and directory (a snapshot taken at the first plan),
    parsed exec commands, ``bash`` on ``PATH``, variable names and directories (``PWD``,
    ``OLDPWD``)."""

    def __init__(self) -> None:
        self._inherited: dict[str, str] | None = None
        #: :func:`agent.run.selfexec.agent_dir`, looked up at the first plan (it stats argv[0]).
        self._agent_dir: str | None = None
        self._words: dict[str, tuple[str, str] | None] = {}
        self._which: dict[tuple[str, str | None], str | None] = {}
        #: Names already found to be plain exported variables (:func:`_name_ok`).
        self._names: set[str] = set()
        self._pwds: dict[tuple[str, str], str] = {}
        self._dirs: dict[str, bool] = {}  # OLDPWD values: directories or not
        #: Working directories: absolute paths of ``workDir`` (``""``: the agent's), and the
        #: ones found to be directories (a directory found missing is looked up again).
        self._cwds: dict[str, str] = {}
        self._isdirs: set[str] = set()

    def plan(
        self, ex: Exec, script: str, *, env: Mapping[str, str] | None = None, stdin: str = ""
    ) -> Job | None:
        """The :class:`Job` for ``script`` under ``ex``, or ``None`` when it must be spawned.

        Only the default kind of exec qualifies: ``bash`` with no options but ``-e``, ``-u``
        and ``-o pipefail`` before ``-c``, no user, group, container or (non-root) sudo, an
        environment without variables bash imports specially (``BASH_*``, exported functions,
        ``SHELLOPTS``, ``IFS``...), an existing working directory, no NUL, and stdin that fits
        a pipe."""
        if ex.user or ex.group or ex.container_image or (ex.sudo and os.geteuid() != 0):
            return None
        command = ex.command or ""
        if command not in self._words:
            self._words[command] = _shell_words(ex) if _supported() else None
        words = self._words[command]
        if words is None or not script or "\0" in script:
            return None
        if self._inherited is None:
            self._inherited = inherited_env()
            self._agent_dir = agent_dir()
        child_env = process_env(ex, env, extra_path=self._agent_dir, inherited=self._inherited)
        key = (words[0], child_env.get("PATH"))
        if key not in self._which:
            self._which[key] = which(words[0], path=key[1])
        program = self._which[key]
        cwd = self._cwd(ex.work_dir or "")
        underscore = child_env.get("_", words[0])
        exports = self._exports(child_env, cwd)
        data = stdin.encode("utf-8", "surrogateescape") if stdin else b""
        if program is None or exports is None or len(data) > MAX_STDIN or "\0" in underscore:
            return None
        if cwd not in self._isdirs:
            if not os.path.isdir(cwd):
                return None
            self._isdirs.add(cwd)  # gone later: the job's set-up fails and it is spawned
        return Job(
            program, words[0], words[1], cwd, script, exports, underscore, data, ex.timeout_seconds
        )

    def _cwd(self, work_dir: str) -> str:
        """The absolute working directory for ``work_dir`` (``""``: the agent's)."""
        if not work_dir:
            return os.path.abspath(os.getcwd())
        cwd = self._cwds.get(work_dir)
        if cwd is None:
            cwd = self._cwds[work_dir] = os.path.abspath(work_dir)
        return cwd

    def _exports(self, env: dict[str, str], cwd: str) -> dict[str, str] | None:
        """The command's exported environment, as a new bash would have it, or ``None`` when
        the env must spawn. ``env`` (a fresh dict) is consumed and returned."""
        new = env.keys() - self._names
        if new:
            if not all(_name_ok(name) for name in new):
                return None
            self._names |= new
        inherited_pwd = env.pop("PWD", "")
        level = _shlvl(env.pop("SHLVL", None))
        env.pop("_", None)
        if level is None or "\0" in "".join(env.values()):
            return None
        oldpwd = env.get("OLDPWD")
        if oldpwd is not None:
            isdir = self._dirs.get(oldpwd)
            if isdir is None:
                isdir = self._dirs[oldpwd] = os.path.isdir(oldpwd)
            if not isdir:
                del env["OLDPWD"]  # bash keeps only a directory; else an exported unset OLDPWD
        key = (inherited_pwd, cwd)
        pwd = self._pwds.get(key)
        if pwd is None:
            pwd = self._pwds[key] = _pwd(*key)
        env["PWD"] = pwd
        env["SHLVL"] = level
        return env


#: Bytes that need no quoting in a bash word.
_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:=@%+,")


def bash_word(text: str) -> str:
    """``text`` as one bash word on one line (what ``printf %q`` gives, not byte for byte)."""
    data = text.encode("utf-8", "surrogateescape")
    if data and all(b in _PLAIN for b in data):
        return text
    if not any(b < 0x20 or b == 0x7F for b in data):
        return "'" + text.replace("'", "'\\''") + "'"
    out = []
    for b in data:
        if b < 0x20 or b == 0x7F or b in b"'\\":
            out.append(f"\\x{b:02x}")
        else:
            out.append(chr(b) if b < 0x80 else f"\\x{b:02x}")
    return "$'" + "".join(out) + "'"


def plan_job(
    ex: Exec, script: str, *, env: Mapping[str, str] | None = None, stdin: str = ""
) -> Job | None:
    """:meth:`Planner.plan` with nothing cached."""
    return Planner().plan(ex, script, env=env, stdin=stdin)
