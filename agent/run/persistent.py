"""The persistent shell runner: one long-lived bash forks a subshell per script (issue 14).

Spawning ``bash -e -o pipefail -c SCRIPT`` from the agent costs a fork of the (large) agent
process, an exec of bash and asyncio's subprocess machinery, for every check. Under the default
exec a :class:`Shells` instance (owned by one run of the engine) instead keeps one bash running
and sends it each script; bash forks ONE subshell per script, which sets the command's
environment up exactly and ``eval``\\ s the script. Nothing else is forked.

Protocol (Linux only; ``/proc`` is required):

- The runner is ``<exec's bash> -c RUNNER <argv0>`` in ``/``, in a new session, stdin a pipe
  of jobs, stdout a status pipe, stderr ``/dev/null``. It runs with ``set -m`` so
  every job is the leader of its own process group (a timeout kills the whole group, as for a
  spawned command) and background processes of the script do not ignore SIGINT/SIGQUIT more
  than they would under ``bash -c``.
- The runner's environment is the first job's; each job sends only the names to unset and the
  variables that differ (plus ``PWD``, ``SHLVL`` and ``OLDPWD``, computed as bash does at
  start-up).
- The agent holds three fds per runner whose numbers are baked into its code: a memfd of the
  job's fields, an output slot and a stdin slot. For each job it puts the write end of a new
  output pipe in the output slot (between jobs the slot holds a directory: opening it to
  write fails) and the command's stdin pipe, or ``/dev/null``, in the stdin slot, rewrites the
  memfd with NUL-separated fields (working directory, options, script, ``$_`` quoted, names to
  unset, then ``NAME=VALUE`` exports) and writes one byte to the job pipe (read with
  ``read -N 1``: one read). The runner forks a subshell whose stdout and stderr are
  ``/proc/<agent>/fd/<output slot>`` and stdin ``/proc/<agent>/fd/<stdin slot>``; it reads
  the memfd, ``cd``\\ s, applies the environment, sets ``-e``/``-u``/``-o pipefail`` as the
  exec says, writes its pid as the first line of its output, then evals the script (on line
  1, so ``$LINENO`` matches ``-c``). A set-up step that fails exits before that line.
- The runner writes the job's status as one line after ``wait``; the agent then puts the
  directory back in the output slot and reads the output to EOF: it started the script iff
  the output begins with the pid line (which is split off).
- A job whose pid line never came provably ran none of the script (the line is written right
  before the ``eval``, and a dead output reader kills the writer with SIGPIPE): if the runner
  died, the agent empties the output slot and waits for the pid line or EOF (a subshell
  holds the status pipe until it has opened the output slot, which is its first redirection,
  so after the status pipe's EOF every subshell holds the output pipe or is gone); without the
  line the runner is restarted and the job retried once. If the runner is alive (the set-up
  failed, e.g. a directory vanished), the caller spawns the command as before. A job that
  started and lost its runner is killed (its process group) and fails with a clear error:
  nothing runs twice.

Remaining differences from ``bash -c`` are listed in docs/patterns.md (``$$`` names the runner,
a signal death reports ``128+N`` as an exit status, ``$_`` and ``BASH_SUBSHELL`` details).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping

from agent.core.errors import CommandError
from agent.run.jobpipe import JobPipe
from agent.run.model import Exec
from agent.run.planner import MAX_STDIN, PER_JOB, Job, Planner, bash_word, plan_job
from agent.run.reactor import Reactor, running_loop, until
from agent.run.shell import KILL_GRACE, MAX_OUTPUT, PIPE_GRACE, ShellResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio

    from agent.run.reactor import Step

__all__ = ["MAX_STDIN", "Job", "PersistentShell", "Planner", "RunnerDied", "Shells", "plan_job"]

#: Seconds a job runs before its output pipe is watched (see :meth:`PersistentShell._wait`).
QUICK = 0.005
#: Exit status of a job whose set-up failed before its script started.
SETUP_FAILED = 121
# One line, so the script's eval runs on line 1 ($LINENO and error messages as with -c). The
# fields: 0 cwd, 1 options, 2 script, 3 $_ (quoted), 4 names to unset, 5... NAME=VALUE exports.
_RUNNER = (
    "set -m; while read -r -N 1 __agent_j; do ( "
    "mapfile -t -d '' __agent_a </proc/{pid}/fd/{spec} || exit {bad}; "
    'cd -- "${{__agent_a[0]}}" || exit {bad}; '
    "unset -v OLDPWD ${{__agent_a[4]}}; "
    'declare -x OLDPWD "${{__agent_a[@]:5}}" || exit {bad}; '
    "BASH_SUBSHELL=0 BASH_EXECUTION_STRING=${{__agent_a[2]}}; set +m ${{__agent_a[1]}}; "
    'echo "$BASHPID" || exit {bad}; '
    'eval "unset -v __agent_a __agent_j PIPESTATUS; : ${{__agent_a[3]}}; ${{__agent_a[2]}}" '
    ") >/proc/{pid}/fd/{out} 2>&1 </proc/{pid}/fd/{inp} & "
    'wait "$!"; echo "$?"; done'
)


class RunnerDied(Exception):
    """The runner exited while a job was in flight (``started``: the script had begun)."""

    def __init__(self, started: bool) -> None:
        super().__init__("persistent shell exited")
        self.started = started


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _fill(fd: int, data: bytes) -> bool:
    """Write all of ``data`` to the empty pipe ``fd`` without blocking; False if it cannot hold
    it (the job has not been sent yet, so the caller can still spawn the command)."""
    os.set_blocking(fd, False)
    try:
        return os.write(fd, data) == len(data)
    except BlockingIOError:
        return False


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _signal_group(pid: int | None, sig: int) -> None:
    if pid is not None and pid > 0:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


class PersistentShell:
    """One runner process (see module doc); one job at a time (:meth:`run` serialises).

    The logic is written once as steps (:mod:`agent.run.reactor`): :meth:`run_sync` and
    :meth:`close` block without an event loop, :meth:`run` and :meth:`aclose` await."""

    def __init__(self, program: str, argv0: str, reactor: Reactor | None = None) -> None:
        self.program = program
        self.argv0 = argv0
        #: The runner's own exported environment (the first job's): jobs send only changes.
        self._base: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._jobs_w = -1
        self._status_r = -1
        #: The memfd of the job's fields, the output and stdin slots the subshell opens, and
        #: the directory held in the output slot between jobs (opening it to write fails).
        self._spec = self._out = self._in = self._dir = -1
        self._spec_len = 0
        #: The last ``$_`` and its quoted form (it rarely changes).
        self._underscore = ("", "''")
        #: The output slot holds a job's pipe (not the directory), the stdin slot (not /dev/null).
        self._held_out = self._held_in = False
        self._pending = b""
        self._job: JobPipe | None = None
        self._own_reactor = reactor is None
        self._reactor = Reactor() if reactor is None else reactor
        self._lock: asyncio.Lock | None = None

    @property
    def pid(self) -> int | None:
        """The runner's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    def _start(self, job: Job) -> None:
        base = {k: v for k, v in job.exports.items() if k not in PER_JOB}
        self._open_slots()
        code = _RUNNER.format(
            pid=os.getpid(), spec=self._spec, out=self._out, inp=self._in, bad=SETUP_FAILED
        )
        jobs_r, jobs_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [self.argv0, "-c", code, self.argv0],
                executable=self.program,
                stdin=jobs_r,
                stdout=status_w,
                stderr=subprocess.DEVNULL,
                env={_encode(k): _encode(v) for k, v in base.items()},
                cwd="/",
                start_new_session=True,
            )
        except OSError:
            _close(jobs_w, status_r)
            self._close_slots()
            raise
        finally:
            os.close(jobs_r)
            os.close(status_w)
        self._jobs_w, self._status_r, self._pending = jobs_w, status_r, b""
        self._base = base
        os.set_blocking(status_r, False)
        self._reactor.watch(status_r, self._on_status)

    def _open_slots(self) -> None:
        self._spec = os.memfd_create("agent-job")  # rewritten for every job (one at a time)
        self._spec_len = 0
        self._dir = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._out = os.dup(self._dir)
        self._in = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def _close_slots(self) -> None:
        _close(self._spec, self._out, self._in, self._dir)
        self._spec = self._out = self._in = self._dir = -1

    def _on_status(self) -> bool:
        """Read status lines; True when the job in flight may proceed (see :class:`Reactor`)."""
        try:
            data = os.read(self._status_r, 4096)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._stop_reading()
            return True
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        job = self._job
        if job is None or job.status is not None:
            return False
        for raw in lines:
            if raw.isdigit():
                job.status = int(raw)
                return True
        return False

    def _stop_reading(self) -> None:
        """The status pipe hit EOF: the runner is gone (or being closed)."""
        if self._status_r >= 0:
            self._reactor.unwatch(self._status_r)
            os.close(self._status_r)
            self._status_r = -1
        _close(self._jobs_w)
        self._jobs_w = -1
        job = self._job
        if job is not None and job.status is None:
            job.died = True
        self._reap(block=False)

    def _reap(self, *, block: bool) -> None:
        proc = self._proc
        if proc is None:
            return
        if block:
            proc.wait()
        elif proc.poll() is None:
            return
        self._proc = None

    # -- the two ways in ----------------------------------------------------------------------

    async def run(self, job: Job, *, max_output: int = MAX_OUTPUT) -> ShellResult | None:
        """Run one job; ``None`` when its set-up failed before the script started.

        Raises:
            RunnerDied: the runner exited under the job.
            OSError: the runner cannot be started.
        """
        if self._lock is None:
            import asyncio  # already loaded: a loop is running

            self._lock = asyncio.Lock()
        async with self._lock:
            return await self._reactor.drive_async(self.job_step(job, max_output))

    def run_sync(self, job: Job, *, max_output: int = MAX_OUTPUT) -> ShellResult | None:
        """:meth:`run` without an event loop (it blocks)."""
        return self._reactor.drive(self.job_step(job, max_output))

    async def aclose(self) -> None:
        """End the runner (EOF on its job pipe) and reap it."""
        await self._reactor.drive_async(self.close_step())

    def close(self) -> None:
        """:meth:`aclose` without an event loop (it blocks)."""
        self._reactor.drive(self.close_step())

    # -- steps --------------------------------------------------------------------------------

    def job_step(self, job: Job, max_output: int) -> Step[ShellResult | None]:
        """Run one job (starting the runner first if needed); see :meth:`run`."""
        if self._jobs_w < 0:
            self._start(job)
        state: JobPipe | None = None
        try:
            if job.stdin and not self._stdin(job.stdin):
                return None  # a pipe smaller than the text (pipe-user-pages limits): spawn
            out_r, out_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            os.dup2(out_w, self._out, inheritable=False)
            os.close(out_w)
            self._held_out = True
            state = self._job = JobPipe(out_r, max_output, self._reactor)
            start = time.monotonic()
            self._send(job)
            timed_out = yield from self._wait(state, job.timeout)
            ended = time.monotonic()
            self._release()
            yield from state.finish(PIPE_GRACE)
        finally:
            self._job = None
            self._release()
            if state is not None:
                state.close()
        if state.pid is None:
            return None
        if state.status is None:
            raise RunnerDied(True)
        output, truncated = state.text()
        return ShellResult(state.status, output, ended - start, timed_out, truncated)

    def _stdin(self, text: bytes) -> bool:
        """Put a pipe holding ``text`` in the stdin slot; False when it does not fit."""
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        try:
            if not _fill(in_w, text):
                return False
            os.dup2(in_r, self._in, inheritable=False)
            self._held_in = True
            return True
        finally:
            _close(in_r, in_w)

    def _release(self) -> None:
        """Drop the agent's copies of the job's pipes: the output slot holds the directory
        again (a subshell opening it now fails before its script), the stdin slot /dev/null."""
        if self._held_out and self._out >= 0:
            os.dup2(self._dir, self._out, inheritable=False)
        self._held_out = False
        if self._held_in and self._in >= 0:
            null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            os.dup2(null, self._in, inheritable=False)
            os.close(null)
        self._held_in = False

    def _send(self, job: Job) -> None:
        """Write the job's fields to the memfd and a byte to the runner."""
        if job.underscore != self._underscore[0]:
            self._underscore = (job.underscore, bash_word(job.underscore))
        fields = [job.cwd, job.options, job.script, self._underscore[1]]
        fields += self._delta(job)
        data = _encode("\0".join(fields)) + b"\0"
        spec = self._spec
        if len(data) < self._spec_len:
            os.ftruncate(spec, len(data))
        os.pwrite(spec, data, 0)
        self._spec_len = len(data)
        try:
            os.write(self._jobs_w, b"j")
        except OSError as exc:
            raise RunnerDied(False) from exc

    def _delta(self, job: Job) -> list[str]:
        """The names to unset (one field), then ``NAME=VALUE`` words to export, that turn the
        runner's environment into the job's (in any order: it does not matter to bash)."""
        base = self._base
        exports = job.exports
        gone = base.keys() - exports.keys()
        # PER_JOB names are never in the base: always sent
        return [" ".join(gone), *[f"{k}={v}" for k, v in exports.items() if base.get(k) != v]]

    def _wait(self, state: JobPipe, timeout: float) -> Step[bool]:
        """Wait for the job's status, killing its process group on timeout or on an exception
        thrown in while waiting (cancellation, KeyboardInterrupt). True when it timed out.

        The output pipe is watched only once the job has run for :data:`QUICK` seconds: most
        checks end sooner, and their output is read after they end (a job that fills the pipe
        before then waits at most that long)."""
        start = time.monotonic()
        deadline = start + timeout if timeout else None
        quick = start + QUICK
        try:
            while state.waiting:
                now = time.monotonic()
                if not state.watching and now >= quick:
                    state.watch()
                if deadline is not None and now >= deadline:
                    state.watch()
                    yield from self._kill(state)
                    return True
                limit = deadline if state.watching else min(quick, deadline or quick)
                yield None if limit is None else limit - now
            if state.died:
                self._release()
                raise RunnerDied((yield from state.started()))
        except RunnerDied as exc:
            if exc.started:
                _signal_group(state.pid, signal.SIGKILL)
            raise
        except GeneratorExit:
            raise
        except BaseException:
            state.watch()
            yield from self._kill(state)
            raise
        return False

    def _kill(self, state: JobPipe) -> Step[None]:
        """SIGTERM the job's process group, SIGKILL it after :data:`KILL_GRACE`."""
        # The pid comes first on the output; a job that ends before it sends only its status.
        state.killing = True
        while state.pid is None and state.waiting:
            yield None
        pid = state.pid
        if pid is None or not state.waiting:
            return
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        while state.waiting and (yield from until(deadline)):
            pass
        _signal_group(pid, signal.SIGKILL)
        while state.waiting:
            yield None

    def close_step(self) -> Step[None]:
        """End the runner (EOF on its job pipe), wait up to a second for it, and reap it."""
        if self._jobs_w >= 0:
            os.close(self._jobs_w)
            self._jobs_w = -1
        deadline = time.monotonic() + 1.0
        while self._status_r >= 0 and (yield from until(deadline)):
            pass
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if self._status_r >= 0:
            self._stop_reading()
        self._reap(block=True)
        self._close_slots()
        if self._own_reactor:
            self._reactor.close()


class Shells:
    """The persistent shells of one owner (an engine run): started lazily, one per bash.

    :meth:`run` (in an event loop) and :meth:`run_sync` (without one, e.g. ``agent local``
    before anything needs asyncio) return ``None`` when the caller must spawn: the exec does
    not qualify (:meth:`Planner.plan`), the runner cannot start, or the job's set-up failed
    before its script started. The first ``start_after`` qualifying commands are spawned too
    (the engine passes 1 for a run of one command, which a spawn does more cheaply)."""

    def __init__(self, *, start_after: int = 1) -> None:
        self._shells: dict[tuple[str, str], PersistentShell] = {}
        self._planner = Planner()
        self._reactor = Reactor()
        self._seen = 0
        self._start_after = start_after
        self._broken = False
        self._lock: asyncio.Lock | None = None

    async def run(
        self, ex: Exec, script: str, *, env: Mapping[str, str] | None = None, stdin: str = ""
    ) -> ShellResult | None:
        """Run ``script`` in a persistent shell, or return ``None`` (spawn it). Without a
        running event loop (``agent local`` driven by :mod:`agent.run.lazyloop`) this is
        :meth:`run_sync`: it blocks and never yields to a loop.

        Raises:
            CommandError: the runner died after the script had started (it is not re-run).
        """
        if running_loop() is None:
            return self.run_sync(ex, script, env=env, stdin=stdin)
        sh, job = self._take(ex, script, env, stdin)
        if sh is None or job is None:
            return None
        if self._lock is None:
            import asyncio  # already loaded: a loop is running

            self._lock = asyncio.Lock()
        async with self._lock:  # one job at a time in this owner's runners (and restarts)
            return await self._reactor.drive_async(self._step(sh, job))

    def run_sync(
        self, ex: Exec, script: str, *, env: Mapping[str, str] | None = None, stdin: str = ""
    ) -> ShellResult | None:
        """:meth:`run` without an event loop (it blocks)."""
        sh, job = self._take(ex, script, env, stdin)
        if sh is None or job is None:
            return None
        return self._reactor.drive(self._step(sh, job))

    def _take(
        self, ex: Exec, script: str, env: Mapping[str, str] | None, stdin: str
    ) -> tuple[PersistentShell | None, Job | None]:
        """The shell and the job for ``script``, or ``None``\\ s when it must be spawned."""
        if self._broken:
            return None, None
        job = self._planner.plan(ex, script, env=env, stdin=stdin)
        if job is None:
            return None, None
        self._seen += 1
        if self._seen <= self._start_after:
            return None, None
        return self._shell(job), job

    def _shell(self, job: Job) -> PersistentShell:
        key = (job.program, job.argv0)
        sh = self._shells.get(key)
        if sh is None:
            sh = self._shells[key] = PersistentShell(job.program, job.argv0, self._reactor)
        return sh

    def _step(self, sh: PersistentShell, job: Job) -> Step[ShellResult | None]:
        """Run ``job`` in ``sh``, restarting a runner that died before the job started once."""
        for attempt in (1, 2):
            try:
                res = yield from sh.job_step(job, MAX_OUTPUT)
            except OSError:
                self._broken = True
                return None
            except RunnerDied as exc:
                yield from sh.close_step()
                key = (job.program, job.argv0)
                if self._shells.get(key) is sh:
                    del self._shells[key]
                if exc.started:
                    raise CommandError(
                        "error running commands: the persistent shell exited while the command "
                        "ran (pid gone); the command was stopped and is not re-run"
                    ) from exc
                if attempt == 2:
                    raise CommandError(
                        "error running commands: the persistent shell exited twice before the "
                        "command started; expected it to run (set run.persistentShell false)"
                    ) from exc
                sh = self._shell(job)
                continue
            return res  # None: set-up failed before the script, spawn it (e.g. a vanished dir)
        return None  # pragma: no cover (the loop returns or raises)

    def pids(self) -> list[int]:
        """The pids of the running runners (diagnostics and tests)."""
        return [pid for sh in self._shells.values() if (pid := sh.pid) is not None]

    def _close_step(self) -> Step[None]:
        shells, self._shells = list(self._shells.values()), {}
        for sh in shells:
            yield from sh.close_step()

    async def aclose(self) -> None:
        """End every runner (:meth:`close` without a running event loop)."""
        if running_loop() is None:
            self.close()
            return
        await self._reactor.drive_async(self._close_step())
        self._reactor.close()

    def close(self) -> None:
        """:meth:`aclose` without an event loop (it blocks)."""
        self._reactor.drive(self._close_step())
        self._reactor.close()
