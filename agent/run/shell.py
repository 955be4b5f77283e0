"""The one module that spawns processes.

Responsibility: run one script under an :class:`~agent.run.model.Exec` and return a
:class:`ShellResult`. Everything that starts a process (commands, checks, verify and signing
commands, containers) goes through :func:`run`.

Invariants:

- argv is built by the pure :func:`build_argv`: ``exec.command`` split with shell quoting rules
  (shlex) and the script appended as one last argument (none when the script is empty); an empty
  command shlex-splits the script itself and runs it without a shell. Containers wrap the argv in
  ``<docker|podman> run -i --rm ...``; ``sudo`` wraps it in ``sudo -E`` when not root.
- The child never reads the agent's stdin: it gets the command's ``stdin`` text or /dev/null.
- Output is stdout and stderr combined, capped at :data:`MAX_OUTPUT` bytes (the excess is
  discarded and a truncation note appended).
- Every child is the leader of a new session. On timeout (``exec.timeout``) or cancellation the
  whole process group gets SIGTERM, then SIGKILL after :data:`KILL_GRACE` seconds.
- ``${NAME}`` (braced form only) is pre-expanded from the command's environment; unknown names are
  left as they are. When the program is a POSIX shell the shell performs this expansion itself
  from the same environment, so values are never spliced into shell code (no injection through
  check outputs); with no ``exec.command`` the expansion is done per argument after splitting.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from agent.core.errors import CommandError
from agent.core.records import Record
from agent.run.model import Exec
from agent.run.selfexec import agent_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import Any

__all__ = [
    "KILL_GRACE",
    "MAX_OUTPUT",
    "ShellResult",
    "build_argv",
    "capped_output",
    "container_runtime",
    "expand_vars",
    "inherited_env",
    "process_env",
    "run",
    "spawn_pty",
]

MAX_OUTPUT = 4 * 1024 * 1024
"""Bytes of combined output kept per process."""

KILL_GRACE = 0.5
"""Seconds between SIGTERM and SIGKILL of a timed-out process group."""

PIPE_GRACE = 0.5
"""Seconds to keep reading output after the process exited (a background child may hold it)."""

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "fish"})


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class ShellResult(Record):
    """What a process did.

    Attributes:
        exit_code: the exit status; negative for a signal (``-9`` = SIGKILL).
        output: combined stdout+stderr, decoded as UTF-8 (invalid bytes replaced), untrimmed.
        duration: wall-clock seconds from spawn to exit.
        timed_out: the process group was killed because ``exec.timeout`` expired.
        truncated: output beyond :data:`MAX_OUTPUT` was discarded.
    """

    exit_code: int
    output: str
    duration: float
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """True when the process exited 0 and did not time out."""
        return self.exit_code == 0 and not self.timed_out


def capped_output(kept: bytes | bytearray, seen: int, cap: int) -> tuple[str, bool]:
    """``(output, truncated)`` of a process that wrote ``seen`` bytes, of which the first
    ``kept`` (at most ``cap``) were kept: decoded as UTF-8 (invalid bytes replaced), with a
    note of how much was dropped when it was truncated."""
    output = kept[:cap].decode("utf-8", errors="replace")
    truncated = seen > cap
    if truncated:
        output += f"\n[output truncated: {seen - cap} bytes over the {cap}-byte limit]"
    return output, truncated


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${NAME}`` with ``env[NAME]``; unknown names and ``$NAME`` are left untouched."""
    if "${" not in text:
        return text
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def container_runtime() -> str | None:
    """Return ``docker`` if it is on PATH, else ``podman``, else ``None``."""
    import shutil  # stdlib (with bz2 and lzma), only for a container exec

    for name in ("docker", "podman"):
        if shutil.which(name):
            return name
    return None


def _split(text: str, what: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise CommandError(f"error parsing {what}: expected shell-quoted words, got {exc}") from exc


def build_argv(
    ex: Exec,
    script: str,
    *,
    env: Mapping[str, str] | None = None,
    runtime: str | None = None,
    is_root: bool = True,
) -> list[str]:
    """Build the argv for running ``script`` under ``ex`` (pure; no lookups, no I/O).

    Args:
        ex: the resolved exec.
        script: the script; appended as the last argument of ``ex.command`` (if non-empty).
        env: the command env (exec env merged with accumulated vars), passed to containers as
            ``-e K=V`` sorted by name.
        runtime: the container runtime program, required when ``ex.container_image`` is set.
        is_root: whether the agent runs as root (``sudo`` is only added when not).

    Raises:
        CommandError: unbalanced quotes, nothing to run, or a container without a runtime.

    Returns:
        The argv list.
    """
    if ex.command:
        argv = _split(ex.command, "exec command")
        if script:
            argv.append(script)
    else:
        argv = _split(script, "script")
    if ex.container_image:
        argv = _container_argv(ex, env or {}, runtime) + argv
    if not argv:
        raise CommandError("nothing to run: expected a script or an exec command, got neither")
    if ex.sudo and not is_root:
        argv = ["sudo", "-E", *argv]
    return argv


def _container_argv(ex: Exec, env: Mapping[str, str], runtime: str | None) -> list[str]:
    """``<runtime> run -i --rm [-e K=V]... [flags] <image>``, the prefix of a container's argv."""
    if runtime is None:
        raise CommandError(
            "no container runtime found: expected docker or podman on PATH for "
            f"containerImage {ex.container_image}"
        )
    c = [runtime, "run", "-i", "--rm"]
    for k in sorted(env):
        c += ["-e", f"{k}={env[k]}"]
    if ex.container_entrypoint:
        c += ["--entrypoint", ex.container_entrypoint]
    if ex.container_network:
        c += ["--network", ex.container_network]
    if ex.container_privileged:
        c.append("--privileged")
    if ex.container_pull:
        c += ["--pull", ex.container_pull]
    if ex.container_user:
        c += ["-u", ex.container_user]
    for v in ex.container_volumes or ():
        c += ["-v", v]
    if ex.container_work_dir:
        c += ["-w", ex.container_work_dir]
    c.append(ex.container_image or "")
    return c


#: Prefix of the agent's own config variables, never passed to child processes.
AGENT_ENV_PREFIX = "AGENT_"


def inherited_env() -> dict[str, str]:
    """The agent's environment without its own ``AGENT_*`` settings: what a child inherits."""
    return {k: v for k, v in os.environ.items() if not k.startswith(AGENT_ENV_PREFIX)}


def process_env(
    ex: Exec,
    env: Mapping[str, str] | None = None,
    *,
    extra_path: str | None = "",
    inherited: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of the child process (a new dict every call).

    ``envInherit`` true: the agent's environment, then the exec env, then ``env`` (later wins).
    Otherwise only the exec env and ``env``, plus the agent's ``PATH`` when neither sets one.
    The agent's own ``AGENT_*`` settings (which may hold a signing key) are never inherited,
    as Etcha unsets its ``ETCHA_*`` settings.

    ``extra_path`` goes first on ``PATH`` (unless already first); ``""`` (the default) means the
    agent's own directory (:func:`agent.run.selfexec.agent_dir`), so the standard library's
    ``agent ...`` helpers work without ``agent`` on ``PATH``; ``None`` adds nothing.
    ``inherited`` is a snapshot of the agent's environment already without ``AGENT_*`` (one
    per run saves copying ``os.environ`` for every command); ``None`` reads ``os.environ``.
    """
    out: dict[str, str] = {}
    if ex.env_inherit:
        out = dict(inherited) if inherited is not None else inherited_env()
    if ex.env:
        out.update(ex.env)
    if env:
        out.update(env)
    if "PATH" not in out:
        out["PATH"] = os.environ.get("PATH", os.defpath)
    first = agent_dir() if extra_path == "" else extra_path
    if first and out["PATH"].split(os.pathsep)[0] != first:
        out["PATH"] = first + os.pathsep + out["PATH"] if out["PATH"] else first
    return out


def _lookup_user(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError as exc:
        raise CommandError(f"error looking up user: {name}: expected an existing user") from exc


def _lookup_group(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError as exc:
        raise CommandError(f"error looking up group: {name}: expected an existing group") from exc


def _expand_argv(
    ex: Exec, script: str, env: Mapping[str, str]
) -> tuple[str, Callable[[list[str]], list[str]]]:
    """Decide where ``${NAME}`` expansion happens; return (script, argv post-processor)."""
    if not ex.command:
        # No shell: expand each argument after splitting, so values cannot add arguments.
        return script, lambda argv: [expand_vars(a, env) for a in argv]
    program = os.path.basename(_split(ex.command, "exec command")[0]) if ex.command.strip() else ""
    if program in _SHELLS:
        # The shell expands ${NAME} from the same environment, treating values as data.
        return script, lambda argv: argv
    return expand_vars(script, env), lambda argv: argv


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group ``pid``, ignoring one that is gone or not ours."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def run(
    ex: Exec,
    script: str,
    *,
    env: Mapping[str, str] | None = None,
    stdin: str = "",
    max_output: int = MAX_OUTPUT,
) -> ShellResult:
    """Run ``script`` under ``ex`` and wait for it.

    Args:
        ex: the resolved exec (see :meth:`agent.run.model.Exec.override`).
        script: the script text.
        env: extra variables for this process (accumulated command vars); they win over the exec
            env. The mapping is copied, never modified.
        stdin: text fed to the process; ``""`` gives it /dev/null.
        max_output: bytes of combined output kept.

    Raises:
        CommandError: the argv cannot be built, the user/group does not exist, ``exec.timeout``
            is invalid, or the program cannot be started (not found, not permitted).

    Returns:
        The :class:`ShellResult`; a non-zero exit is a result, not an exception.
    """
    child_env = process_env(ex, env)
    script, post = _expand_argv(ex, script, child_env)
    container_env: dict[str, str] = {**(ex.env or {}), **(env or {})}
    runtime = container_runtime() if ex.container_image else None
    is_root = os.geteuid() == 0
    argv = post(build_argv(ex, script, env=container_env, runtime=runtime, is_root=is_root))
    timeout = ex.timeout_seconds
    kwargs: dict[str, Any] = {}
    if ex.user:
        kwargs["user"] = _lookup_user(ex.user)
    if ex.group:
        kwargs["group"] = _lookup_group(ex.group)
    from agent.run.aioproc import run_process  # lazy: asyncio, only when a process starts

    return await run_process(argv, ex, child_env, stdin, kwargs, max_output, timeout)


#: Runs in the child before the shell (as the agent's user): makes the pty (its stdin) the
#: controlling terminal of the new session, so job control and Ctrl-C reach the shell's
#: foreground job; then drops to the exec's groups, group and user, enters the work dir and
#: starts the shell. A separate process (not ``preexec_fn``) because the daemon has threads; the
#: real interpreter (not a virtualenv link), isolated and without ``site``.
#: argv: ``uid gid groups workdir program args...`` (``-`` = keep; groups comma-separated).
_CTTY = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "uid, gid, groups, cwd = sys.argv[1:5]\n"
    "if groups != '-': os.setgroups([int(g) for g in groups.split(',') if g])\n"
    "if gid != '-': os.setgid(int(gid))\n"
    "if uid != '-': os.setuid(int(uid))\n"
    "if cwd != '-': os.chdir(cwd)\n"
    "os.execvp(sys.argv[5], sys.argv[5:])\n"
)


def _identity(ex: Exec) -> list[str]:
    """``uid gid groups`` for :data:`_CTTY`: the exec's user with that user's own groups.

    Raises:
        CommandError: an unknown user or group, or a user to switch to while not root.
    """
    uid = gid = groups = "-"
    if ex.group:
        gid = str(_lookup_group(ex.group))
    if ex.user:
        number = _lookup_user(ex.user)
        if number != os.geteuid() and os.geteuid() != 0:
            raise CommandError(
                f"error starting shell: exec user {ex.user}: expected the agent to run as root "
                "to switch users"
            )
        try:
            entry: pwd.struct_passwd | None = pwd.getpwuid(number)
        except KeyError:
            entry = None
        if gid == "-":
            gid = str(entry.pw_gid if entry is not None else number)
        uid = str(number)
        if os.geteuid() == 0:
            ids = os.getgrouplist(entry.pw_name, int(gid)) if entry is not None else [int(gid)]
            groups = ",".join(str(g) for g in ids)
    elif gid != "-" and os.geteuid() == 0:
        groups = gid
    return [uid, gid, groups]


async def spawn_pty(
    ex: Exec, command: str, slave_fd: int, *, env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """Start ``command`` (shell words, no script) under ``ex`` on the terminal ``slave_fd``.

    Used by remote shell sessions. The process leads a new session whose controlling terminal
    is the pty; it gets ``ex``'s user (with that user's groups, never the agent's), group,
    environment (:func:`process_env`, plus ``TERM=xterm`` when unset), working directory,
    ``sudo`` and container. ``exec.timeout`` is not applied (the caller bounds the session).

    Raises:
        CommandError: nothing to run, unbalanced quotes, an unknown user or group, a user switch
            while not root, or the program could not be started.
    """
    child_env = process_env(ex, env)
    child_env.setdefault("TERM", "xterm")
    runtime = container_runtime() if ex.container_image else None
    argv = build_argv(
        replace(ex, command=command),
        "",
        env={**(ex.env or {}), **(env or {})},
        runtime=runtime,
        is_root=os.geteuid() == 0,
    )
    identity = _identity(ex)
    from agent.run.aioproc import start_pty  # lazy: asyncio, only for a remote shell

    return await start_pty(argv, identity, ex.work_dir or "-", slave_fd, child_env, _CTTY)
