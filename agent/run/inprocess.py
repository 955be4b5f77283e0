"""Built-in helpers in-process: which scripts qualify, and the hook that runs them (issue 14).

The standard library renders its file, dir, copy, line and symlink commands as one helper
invocation, ``<agentBin> file check -p '0644' -- '/etc/motd' -``. Starting a Python process for
each costs far more than the check itself, so the engine hands such a script to an
:class:`~agent.run.hooks.InProcess` hook (:mod:`agent.tools.inprocess`, passed in by
``agent local``, ``agent test`` and the daemon), which runs the same verb functions in the agent.

A script qualifies (:func:`helper_argv`) only when all of this holds; otherwise it runs in a
shell exactly as before:

- the exec is the default one (:func:`exec_allows`): a plain ``bash``/``sh`` ``-c`` command with
  only ``-e``, ``-u`` and ``-o pipefail`` as options, no user, group, sudo (unless the agent is
  root, where sudo adds nothing), container, or work directory other than the agent's own;
- the script is one simple command: outside quotes only letters, digits, blanks and
  ``_ - . / : , + = @ %`` (no ``| & ; < > ( ) $ ` \\ * ? [ ] { } ~ # !``, no unquoted newline except
  trailing ones); inside double quotes no ``$``, backtick, ``\\`` or ``!``; single quotes are
  literal. So no pipe, list, redirection, variable, expansion, glob or comment can change what
  the words are;
- the first word is the agent itself: ``agent``, the agent's own executable as
  :func:`agent.run.selfexec.agent_command` renders it (an absolute path, or
  ``<python> -m agent``), or ``etcha`` when the hook allows it (``run.inProcessEtcha``);
- the second word is a helper verb (``copy``, ``dir``, ``file``, ``line``, ``link``).

The hook may still decline (return ``None``), e.g. for arguments its parser rejects or a URL
source; then the script runs in a shell.
"""

from __future__ import annotations

import os
import shlex

from agent.run.model import Exec
from agent.run.selfexec import DEFAULT_AGENT_BIN, agent_command

__all__ = ["HELPER_VERBS", "exec_allows", "helper_argv", "simple_words"]

#: The helper verbs that may run in-process.
HELPER_VERBS = frozenset({"copy", "dir", "file", "line", "link"})
#: The program name of patterns built with Etcha's library.
ETCHA_BIN = "etcha"

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:,+=@% \t")
_DQ_SPECIAL = frozenset("$`\\!")
_SHELLS = frozenset({"bash", "sh"})
_SHELL_OPTS = frozenset({"-e", "-u", "-eu", "-ue"})


def _quote_ok(script: str) -> bool:
    """True when no shell metacharacter or expansion can act in ``script`` (see module doc)."""
    text = script.rstrip("\n")
    quote = ""
    for ch in text:
        if quote == "'":
            if ch == "'":
                quote = ""
        elif quote == '"':
            if ch == '"':
                quote = ""
            elif ch in _DQ_SPECIAL:
                return False
        elif ch in ("'", '"'):
            quote = ch
        elif ch not in _SAFE:
            return False
    return quote == ""


def simple_words(script: str) -> list[str] | None:
    """The words of ``script`` when it is one simple command with nothing a shell would expand
    or interpret (see module doc); ``None`` otherwise."""
    if not script.strip() or not _quote_ok(script):
        return None
    if "'" not in script and '"' not in script:
        return script.split()  # only safe characters and blanks: what shlex gives, faster
    try:
        return shlex.split(script, posix=True)
    except ValueError:
        return None


def exec_allows(ex: Exec) -> bool:
    """Whether ``ex`` is the default kind of exec, where a helper may run in-process."""
    if ex.user or ex.group or ex.container_image:
        return False
    if ex.sudo and os.geteuid() != 0:
        return False
    if ex.work_dir and os.path.realpath(ex.work_dir) != os.path.realpath(os.getcwd()):
        return False
    try:
        words = shlex.split(ex.command or "")
    except ValueError:
        return False
    if len(words) < 2 or os.path.basename(words[0]) not in _SHELLS or words[-1] != "-c":
        return False
    opts = words[1:-1]
    i = 0
    while i < len(opts):
        if opts[i] == "-o" and i + 1 < len(opts) and opts[i + 1] == "pipefail":
            i += 2
        elif opts[i] in _SHELL_OPTS:
            i += 1
        else:
            return False
    return True


def _programs(etcha: bool) -> list[list[str]]:
    """The first words that name the agent (and ``etcha`` when allowed)."""
    out = [[DEFAULT_AGENT_BIN], shlex.split(agent_command())]
    if etcha:
        out.append([ETCHA_BIN])
    return out


def helper_argv(ex: Exec, script: str, *, etcha: bool) -> list[str] | None:
    """``[verb, args...]`` when ``script`` under ``ex`` is exactly one helper invocation (see
    module doc), else ``None``."""
    # The script test is the cheaper one: most scripts fail it before the exec is parsed.
    words = simple_words(script)
    if words is None:
        return None
    first = words[0]
    if first not in (DEFAULT_AGENT_BIN, ETCHA_BIN) and not os.path.isabs(first):
        return None  # no program of _programs starts so (they are these names or paths)
    for program in _programs(etcha):
        n = len(program)
        if words[:n] == program and len(words) > n and words[n] in HELPER_VERBS:
            return words[n:] if exec_allows(ex) else None
    return None
