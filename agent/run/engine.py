"""The command engine: runs command lists in change, check or remove mode.

Responsibility: Etcha's ``Commands.Run``/``Command.Run`` (reference etcha-run.md §2), diff-run
(§3.2, SPEC 25); :class:`Result` (§3.3, SPEC 20) is re-exported from :mod:`agent.run.result`.
Processes start only through :mod:`agent.run.shell` (and the persistent shell, the hook).

Invariants:

- A leaf runs its check when it has one; its change (remove) runs when the check exits non-zero
  (zero in remove mode), when ``always`` is set, or when it was triggered by an earlier onChange
  (onRemove); ``always`` and triggered commands skip the check. A leaf with no check, no always
  and no trigger does not run (``P_CHECK=0``).
- Triggers live in the run (not on commands) and stay in their list; remove runs lists backwards.
- Groups run their children with ParentID ``<parent> > <group id>``; siblings after a group get
  the original parent back. A group fires its own onChange (onRemove) when any child changed
  (was removed) (SPEC 19).
- Env: one accumulated map per run flows down the list (names per reference §2.5); every process
  gets its own copy; a check sees only the vars of earlier commands, a change/remove also sees
  this command's check vars. Stored values are trimmed.
- After a failed change (not in check or remove mode), later ``always`` commands and later
  commands targeted by the failing command's onFail run their change without a check (SPEC 24);
  the run still fails with the original error.
- Each action logs one INFO line on ``agent.run.engine`` in the past tense with its duration; a
  passing check logs at DEBUG (as Etcha), so a no-op run is quiet at INFO.
- Each step's non-empty output is logged at DEBUG on ``agent.run.output`` (:data:`OUTPUT_LOGGER`)
  as ``Output of <id> (<step>):`` and the indented text; ``run -v``/``test -v`` lower that
  logger's level so it shows at any ``-l``.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from agent.core.durations import format_duration
from agent.core.errors import CommandError
from agent.core.logs import DEBUG, fields, get_logger
from agent.core.records import Record
from agent.run import shell
from agent.run.diff import diff, has_work
from agent.run.inprocess import helper_argv
from agent.run.lazyloop import NEED_LOOP, loop_running
from agent.run.model import EVENT_PREFIX, Command, Exec, resolve_target
from agent.run.result import Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agent.run.hooks import CommandObserver, InProcess
    from agent.run.persistent import Shells

__all__ = ["OUTPUT_LOGGER", "Mode", "Output", "Result", "RunOutcome", "diff_run", "run_commands"]

logger = get_logger(__name__)
#: The logger that receives every command's output at DEBUG (``-v`` lowers its level to show it).
OUTPUT_LOGGER = "agent.run.output"
_output_logger = get_logger(OUTPUT_LOGGER)


def _log_output(idstar: str, step: str, text: str) -> None:
    """Log one step's output under its id, each line indented by four spaces."""
    if text:
        body = "\n".join("    " + line for line in text.splitlines())
        _output_logger.debug("Output of %s (%s):\n%s", idstar, step, body)


class Mode(StrEnum):
    """How a list runs. ``CHECK`` is change mode with only checks run."""

    CHANGE = "change"
    CHECK = "check"
    REMOVE = "remove"


@dataclass(slots=True)
class Output:
    """What one command did in a run (Etcha's ``Output``), filled in as the run proceeds.

    ``change_out``/``remove_out``/``check_out`` are trimmed; ``change_raw`` is the change output
    exactly as the command wrote it (a webhook's reply). ``events`` are the names emitted by
    this output, in emission order.
    """

    id: str
    parent_id: str = ""
    checked: bool = False
    check_fail_change: bool = False
    check_fail_remove: bool = False
    changed: bool = False
    change_fail: bool = False
    removed: bool = False
    remove_fail: bool = False
    check_out: str = ""
    change_out: str = ""
    remove_out: str = ""
    events: tuple[str, ...] = ()
    change_raw: str = ""


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class RunOutcome(Record):
    """The outputs of a run, in the order the commands ran, and its error (if any).

    ``emitted`` holds ``(event name, output)`` pairs in emission order. A group's event is carried
    by an output for the group (id = the group id, ``change_out`` = the changed children's outputs
    joined by newlines) that is not part of ``outputs``.
    """

    outputs: tuple[Output, ...] = ()
    error: CommandError | None = None
    emitted: tuple[tuple[str, Output], ...] = ()

    def events(self) -> list[tuple[str, Output]]:
        """Return ``(event name, firing output)`` pairs in emission order."""
        return list(self.emitted)


def _join(parent: str, cid: str) -> str:
    return f"{parent} > {cid}" if parent else cid


def _failure_reason(res: shell.ShellResult, ex: Exec) -> str:
    if res.timed_out:
        return f"timed out after {ex.timeout} (exec.timeout)"
    if res.exit_code < 0:
        try:
            name = signal.Signals(-res.exit_code).name.removeprefix("SIG").lower()
        except ValueError:
            name = str(-res.exit_code)
        return f"error running commands: signal: {name}"
    return f"error running commands: exit status {res.exit_code}"


@dataclass(slots=True, repr=False, eq=False)  # never compared or shown: two methods fewer
class _Run:
    """State of one run (all phases of a diff-run share one)."""

    exec: Exec
    check: bool
    env: dict[str, str]
    parent_filter: re.Pattern[str] | None
    observer: CommandObserver | None
    inprocess: InProcess | None = None
    shells_start: int | None = None
    shells: Shells | None = None
    inherited: dict[str, str] | None = None
    remove_unchecked: bool = False
    outputs: list[Output] = field(default_factory=list)
    emitted: list[tuple[str, Output]] = field(default_factory=list)

    def observe(self, cmd: Command, parent: str, mode: str, error: bool) -> None:
        if self.observer is not None:
            self.observer.command_done(id=cmd.id, parent_id=parent, mode=mode, error=error)

    async def spawn(
        self, ex: Exec, script: str, stdin: str
    ) -> tuple[shell.ShellResult, str | None]:
        """Run a script; return (result, failure reason or None). A lone helper invocation
        under the default exec runs in-process when there is a hook (:mod:`agent.run.inprocess`)
        that does not decline; other default-exec scripts run in the run's persistent shell
        (:mod:`agent.run.persistent`) when it is on; anything else spawns."""
        env = dict(self.env)
        hook = self.inprocess
        argv = None if hook is None else helper_argv(ex, script, etcha=hook.etcha)
        if hook is not None and argv is not None:
            if self.inherited is None:  # one snapshot of os.environ per run
                self.inherited = shell.inherited_env()
            res = hook.try_run(argv, shell.process_env(ex, env, inherited=self.inherited), stdin)
            if res is not None:
                return res, None if res.ok else _failure_reason(res, ex)
        try:
            res = None
            shells = self.persistent_shells()
            if shells is not None:  # no event loop needed (it blocks when none runs)
                res = await shells.run(ex, script, env=env, stdin=stdin)
            if res is None:
                await NEED_LOOP  # spawning needs asyncio: from here on (agent.run.lazyloop)
                res = await shell.run(ex, script, env=env, stdin=stdin)
        except CommandError as exc:
            return shell.ShellResult(-1, "", 0.0), exc.message
        if res.ok:
            return res, None
        return res, _failure_reason(res, ex)

    def persistent_shells(self) -> Shells | None:
        """The run's persistent shells, made at its first process (they need no event loop)."""
        if self.shells is None and self.shells_start is not None:
            from agent.run.persistent import Shells  # lazy: subprocess, once a process starts

            self.shells = Shells(start_after=self.shells_start)
        return self.shells

    async def close(self) -> None:
        """End the run's persistent shells."""
        if self.shells is not None:
            await self.shells.aclose()

    def outcome(self, error: CommandError | None) -> RunOutcome:
        return RunOutcome(tuple(self.outputs), error, tuple(self.emitted))

    # -- lists ---------------------------------------------------------------------------------

    async def run_list(
        self, cmds: Sequence[Command], *, remove: bool, parent: str
    ) -> tuple[bool, CommandError | None]:
        """Run one list; return (whether anything changed/was removed, error)."""
        n = len(cmds)
        ids = [c.id for c in cmds]
        triggers: list[list[str]] = [[] for _ in range(n)]
        acted = False
        for i in range(n - 1, -1, -1) if remove else range(n):
            cmd = cmds[i]
            if cmd.commands:
                first = len(self.outputs)
                child_acted, err = await self.run_list(
                    cmd.commands, remove=remove, parent=_join(parent, cmd.id)
                )
                if err is not None:
                    return acted or child_acted, err
                if child_acted:
                    acted = True
                    done = [o for o in self.outputs[first:] if (o.removed if remove else o.changed)]
                    text = "\n".join(o.remove_out if remove else o.change_out for o in done)
                    group_out = Output(id=cmd.id, parent_id=parent)
                    if remove:
                        group_out.removed, group_out.remove_out = True, text
                    else:
                        group_out.changed, group_out.change_out = True, text
                        group_out.change_raw = "\n".join(o.change_raw for o in done)
                    err = self.fire(cmd, i, ids, triggers, group_out, remove=remove)
                    if err is not None:
                        return acted, err
                continue
            flt = self.parent_filter
            if flt is not None and flt.pattern and not flt.search(parent):
                continue
            out, err = await self.run_one(cmd, triggers[i], remove=remove, parent=parent)
            self.outputs.append(out)
            if err is not None:
                if not remove and not self.check:
                    await self.on_fail(cmds, i, ids, out, parent)
                return acted, err
            if out.removed if remove else out.changed:
                acted = True
                err = self.fire(cmd, i, ids, triggers, out, remove=remove)
                if err is not None:
                    return acted, err
        return acted, None

    def emit(self, name: str, out: Output, text: str) -> None:
        out.events = (*out.events, name)
        self.emitted.append((name, out))
        if name in ("stdout", "stderr"):
            stream = sys.stdout if name == "stdout" else sys.stderr
            stream.write(text + "\n")
            stream.flush()

    def fire(
        self,
        cmd: Command,
        i: int,
        ids: list[str],
        triggers: list[list[str]],
        out: Output,
        *,
        remove: bool,
    ) -> CommandError | None:
        """Process onChange (onRemove) of a command that changed (was removed)."""
        if self.check:
            return None
        key = "onRemove" if remove else "onChange"
        for t in cmd.on_remove if remove else cmd.on_change:
            if t.startswith(EVENT_PREFIX):
                self.emit(t[len(EVENT_PREFIX) :], out, out.remove_out if remove else out.change_out)
                continue
            try:
                matches = resolve_target(t, ids)
            except re.error as exc:
                return CommandError(f"error parsing {key} {t} for {cmd.id}: {exc}")
            for j in matches:
                # Only commands that have not run yet in this list can be triggered.
                if (j < i) if remove else (j > i):
                    triggers[j].append(cmd.id)
        return None

    # -- one command ---------------------------------------------------------------------------

    async def run_one(
        self, cmd: Command, triggered_by: list[str], *, remove: bool, parent: str
    ) -> tuple[Output, CommandError | None]:
        """Etcha's ``Command.Run`` (reference §2.1)."""
        p = cmd.env_prefix
        idstar = _join(parent, cmd.id)
        out = Output(id=cmd.id, parent_id=parent)
        unchecked_present = remove and self.remove_unchecked
        if not cmd.check and not cmd.always and not triggered_by and not unchecked_present:
            self.env[p + "_CHECK"] = "0"
            self.observe(cmd, parent, "check", False)
            return out, None
        cfg = self.exec.override(cmd.exec)
        checked = None
        if not cmd.always and not triggered_by and cmd.check:
            checked = await self._run_check(cmd, cfg, out, remove=remove, parent=parent)
            if checked is None:
                return out, None
        done, would = _messages(cmd, triggered_by, remove=remove, idstar=idstar)
        if checked is not None and self.check:
            would = f"Checked {idstar} [{checked}]"
        if remove:
            out.check_fail_remove = True
        else:
            out.check_fail_change = True
        self.observe(cmd, parent, "check", True)
        self.env[p + "_CHECK"] = "1"
        script = cmd.remove if remove else cmd.change
        if self.check or not script:
            if self.check and script and would:
                logger.info("%s", would)
            return out, None
        return await self._run_script(
            cmd, cfg, script, out, remove=remove, parent=parent, done=done
        )

    async def _run_check(
        self, cmd: Command, cfg: Exec, out: Output, *, remove: bool, parent: str
    ) -> str | None:
        """Run ``cmd.check``: ``None`` when the command is in state (nothing more runs), else the
        check's formatted duration."""
        p = cmd.env_prefix
        idstar = _join(parent, cmd.id)
        out.checked = True
        res, reason = await self.spawn(cfg, cmd.check, cmd.stdin)
        text = res.output.strip()
        out.check_out = text
        _log_output(idstar, "check", text)
        self.env[p + "_CHECK_OUT"] = text
        if p:
            self.env[p] = text
        if res.timed_out and reason:
            logger.warning("Check of %s failed: %s", idstar, reason)
        present = reason is None
        if present != remove:  # change mode: check passed; remove mode: already absent
            self.env[p + "_CHECK"] = "0"
            self.observe(cmd, parent, "check", False)
            if logger.isEnabledFor(DEBUG):
                logger.debug("Checked %s [%s]", idstar, format_duration(res.duration))
            return None
        return format_duration(res.duration)

    async def _run_script(
        self,
        cmd: Command,
        cfg: Exec,
        script: str,
        out: Output,
        *,
        remove: bool,
        parent: str,
        done: str,
    ) -> tuple[Output, CommandError | None]:
        """Run the change or remove script and record its outcome."""
        p = cmd.env_prefix
        idstar = _join(parent, cmd.id)
        if remove:
            out.removed = True
        else:
            out.changed = True
        res, reason = await self.spawn(cfg, script, cmd.stdin)
        text = res.output.strip()
        key = "_REMOVE" if remove else "_CHANGE"
        self.env[p + key] = "1" if reason else "0"
        self.env[p + key + "_OUT"] = text
        _log_output(idstar, "remove" if remove else "change", text)
        if remove:
            out.remove_out = text
            out.remove_fail = reason is not None
        else:
            out.change_out = text
            out.change_raw = res.output
            out.change_fail = reason is not None
        self.observe(cmd, parent, "remove" if remove else "change", reason is not None)
        duration = format_duration(res.duration)
        if reason is not None:
            verb = "removing" if remove else "changing"
            logger.error(
                "Failed %s %s [%s]",
                verb,
                idstar,
                duration,
                extra=fields(id=idstar, duration=res.duration, error=reason),
            )
            return out, CommandError(f"error {verb} id {idstar}: {reason}: {text}")
        logger.info("%s [%s]", done, duration)
        return out, None

    async def on_fail(
        self, cmds: Sequence[Command], i: int, ids: list[str], out: Output, parent: str
    ) -> None:
        """SPEC 24: after a failed change, run later always/onFail-targeted changes."""
        cmd = cmds[i]
        targeted: set[int] = set()
        for t in cmd.on_fail:
            if t.startswith(EVENT_PREFIX):
                self.emit(t[len(EVENT_PREFIX) :], out, out.change_out)
                continue
            try:
                targeted.update(resolve_target(t, ids))
            except re.error as exc:
                logger.error("Error parsing onFail %s for %s: %s", t, cmd.id, exc)
        for j in range(i + 1, len(cmds)):
            other = cmds[j]
            if other.commands or not other.change:
                continue
            if other.always:
                done = f"Always changed {_join(parent, other.id)}"
            elif j in targeted:
                done = f"Triggered {_join(parent, other.id)} via {cmd.id}.onFail"
            else:
                continue
            res, reason = await self.spawn(
                self.exec.override(other.exec), other.change, other.stdin
            )
            o = Output(
                id=other.id,
                parent_id=parent,
                changed=True,
                change_fail=reason is not None,
                change_out=res.output.strip(),
            )
            self.outputs.append(o)
            _log_output(_join(parent, other.id), "change", o.change_out)
            self.observe(other, parent, "change", reason is not None)
            if reason is not None:
                logger.error(
                    "error changing id %s: %s: %s", _join(parent, other.id), reason, o.change_out
                )
            else:
                logger.info("%s [%s]", done, format_duration(res.duration))


async def run_commands(
    cmds: Sequence[Command],
    *,
    exec: Exec,
    mode: Mode,
    check_only: bool = False,
    env: Mapping[str, str] | None = None,
    parent_id: str = "",
    parent_id_filter: re.Pattern[str] | None = None,
    observer: CommandObserver | None = None,
    inprocess: InProcess | None = None,
    persistent_shell: bool = True,
) -> RunOutcome:
    """Run a command list.

    Args:
        cmds: the commands (from :func:`agent.run.model.parse_commands`).
        exec: the list's exec; each command runs under ``exec.override(cmd.exec)``.
        mode: change, check (change-mode checks only) or remove (reversed, removals).
        check_only: run only checks (with ``Mode.REMOVE``: remove-mode checks).
        env: initial variables (``ETCHA_*``) for every process; copied, never modified.
        parent_id: the ParentID of top-level commands (the source name, or ``""``).
        parent_id_filter: when set and non-empty, leaves whose ParentID it does not match
            (``re.search``) are skipped.
        observer: metrics hook.
        inprocess: runs lone helper invocations inside the agent (:mod:`agent.run.inprocess`);
            ``None`` spawns every script.
        persistent_shell: run default-exec scripts in one long-lived bash for this run
            (:mod:`agent.run.persistent`, ``run.persistentShell``); ``False`` spawns each.

    Returns:
        The :class:`RunOutcome`; a failed command is its ``error``, never an exception.
    """
    run = _Run(
        exec=exec,
        check=check_only or mode is Mode.CHECK,
        env=dict(env or {}),
        parent_filter=parent_id_filter,
        observer=observer,
        inprocess=inprocess,
        shells_start=_shells_start(persistent_shell, cmds),
    )
    try:
        _, err = await run.run_list(cmds, remove=mode is Mode.REMOVE, parent=parent_id)
    finally:
        await run.close()
    return run.outcome(err)


async def diff_run(
    new: Sequence[Command],
    old: Sequence[Command] | None,
    *,
    exec: Exec,
    check: bool,
    no_remove: bool,
    source: str,
    parent_id_filter: re.Pattern[str] | None = None,
    env: Mapping[str, str] | None = None,
    observer: CommandObserver | None = None,
    inprocess: InProcess | None = None,
    persistent_shell: bool = True,
) -> RunOutcome:
    """Run a new command list after an old one (reference §3.2, SPEC 10 and 25).

    Phases, sharing one env: the old commands to remove before (reversed, remove mode), the new
    list (change mode, or check mode), then the old commands to remove after. A removed old
    command with no check counts as present. When nothing in ``new`` has a check or ``always``
    (recursively) and nothing is to be removed, no process runs.

    Args:
        new: the new pattern's commands; all of them are checked every run.
        old: the previous pattern's commands, or ``None``.
        exec: the run exec.
        check: check mode (removals run remove-mode checks only).
        no_remove: skip the removal phases.
        source: the ParentID of top-level commands.
        env: initial variables; copied.
        parent_id_filter, observer, inprocess, persistent_shell: see :func:`run_commands`.

    Returns:
        The concatenated :class:`RunOutcome` of the phases that ran; the first error stops it.
    """
    before: tuple[Command, ...] = ()
    after: tuple[Command, ...] = ()
    if old is not None and not no_remove:
        before, after = diff(old, new)
    if not has_work(new) and not before and not after:
        return RunOutcome()
    run = _Run(
        exec=exec,
        check=check,
        env=dict(env or {}),
        parent_filter=parent_id_filter,
        observer=observer,
        inprocess=inprocess,
        shells_start=_shells_start(persistent_shell, (*before, *new, *after)),
    )
    try:
        for cmds, remove in ((before, True), (new, False), (after, True)):
            if not cmds:
                continue
            run.remove_unchecked = remove
            _, err = await run.run_list(cmds, remove=remove, parent=source)
            if err is not None:
                return run.outcome(err)
    finally:
        await run.close()
    return run.outcome(None)


def _leaves(cmds: Sequence[Command], stop: int) -> int:
    """The number of leaf commands in ``cmds``, counting no further than ``stop``."""
    n = 0
    for c in cmds:
        n += _leaves(c.commands, stop - n) if c.commands else 1
        if n >= stop:
            break
    return n


def _shells_start(enabled: bool, cmds: Sequence[Command]) -> int | None:
    """``start_after`` of the run's persistent shells (``None``: off): 1 for a lone command under
    an event loop (a spawn is cheaper), else 0 (without a loop, a spawn would import asyncio)."""
    if not enabled:
        return None
    return 0 if _leaves(cmds, 2) >= 2 or not loop_running() else 1


def _messages(
    cmd: Command, triggered_by: Sequence[str], *, remove: bool, idstar: str
) -> tuple[str, str]:
    """``(done, would)``: the log lines of a command that ran, and of one that check mode skips."""
    mode = "remove" if remove else "change"
    if cmd.always:
        return (
            f"Always {'removed' if remove else 'changed'} {idstar}",
            f"Would always {mode} {idstar}",
        )
    if triggered_by:
        via = ", ".join(triggered_by)
        return f"Triggered {idstar} via {via}", f"Would trigger {idstar} via {via}"
    # remove_unchecked: no check, counts as present
    return f"{'Removed' if remove else 'Changed'} {idstar}", f"Would remove {idstar}"
