"""Idempotency testing of patterns: ``agent test [-b] [-f filter] <path>``.

Responsibility: Etcha's ``Commands.Test`` and ``pattern.Test`` (reference etcha-run.md §9).

Invariants:

- A command list is run **five** times with ParentID ``""``; the errors of each run are ignored
  and only the output flags are read (exactly Etcha's logic):

  1. change run: ids with ``changed and checked`` form the set C; any ``change_fail`` →
     ``change had errors``;
  2. check run (change-mode checks): ids in C whose check still fails →
     ``check still failed after change``;
  3. remove run (reversed): ids with ``removed and checked`` form the set R; any ``remove_fail`` →
     ``remove had errors``;
  4. check run in remove mode: ids in R whose check still succeeds →
     ``check still failed after remove``;
  5. check run (change mode): ids in C whose check now succeeds →
     ``check did not fail after remove``.

  Commands without a check (``always`` or only triggered) are never in C or R. Messages
  accumulate per id in this order.
- Patterns render with the source ``test`` (so ``vars.test`` is true and ``sources.test`` applies).
  A pattern that does not render aborts the whole test with that error, as in Etcha.
- Each pattern also gets ``vars.testDir`` (``sources.test.vars`` may override it): a fresh
  private directory (0700, under ``$TMPDIR``) made for that pattern and deleted with everything
  in it after its test, so a pattern can keep every path it manages under it (see
  ``patterns/sandbox.libsonnet``).
- Safe by default: ``vars.root`` is that same directory, so the standard library's file, dir,
  copy, line and symlink functions put their absolute paths under it (creating parents there)
  and the real paths stay untouched. ``in_place`` (``agent test --in-place``) leaves
  ``vars.root`` to the config (``""``: the real paths). Commands outside those functions run as
  written either way; :func:`root_warning` says so to a root user testing without
  ``--in-place``.
- Build commands are tested only when asked (``-b``, the docs' meaning; SPEC 11), with the
  pattern's ``buildExec``; run commands always, with its ``runExec``.
- Failures are keyed ``<file>:<command id>``; the file is the path as walked from the argument.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.core.errors import SourceError
from agent.pattern.load import ROOT_VAR, TEST_DIR_VAR, load_from_disk
from agent.run.engine import Mode, Output, run_commands
from agent.run.model import Command, Exec
from agent.tools.inprocess import helper_runner

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.run.hooks import InProcess

__all__ = [
    "MSG_CHANGE_ERRORS",
    "MSG_CHECK_AFTER_CHANGE",
    "MSG_CHECK_AFTER_REMOVE",
    "MSG_CHECK_NOT_FAILED",
    "MSG_REMOVE_ERRORS",
    "TEST_DIR_VAR",
    "TEST_SOURCE",
    "IdempotencyReport",
    "check_idempotency",
    "count_commands",
    "find_pattern_files",
    "format_failures",
    "root_warning",
    "run_pattern_tests",
]

logger = logging.getLogger(__name__)

#: The source name patterns are rendered with in test mode (``vars.test`` is true).
TEST_SOURCE = "test"

MSG_CHANGE_ERRORS = "change had errors"
MSG_CHECK_AFTER_CHANGE = "check still failed after change"
MSG_REMOVE_ERRORS = "remove had errors"
MSG_CHECK_AFTER_REMOVE = "check still failed after remove"
MSG_CHECK_NOT_FAILED = "check did not fail after remove"

#: What ``agent test`` tells a root user who did not ask for ``--in-place``.
ROOT_WARNING = (
    "running as root: the standard library's file, dir, copy, line and symlink paths move under "
    "a temporary vars.root, but every other command in the patterns runs for real on this host"
)


def root_warning(*, in_place: bool, euid: int | None = None) -> str | None:
    """The one warning for ``agent test`` run as root without ``--in-place`` (else ``None``).

    Args:
        in_place: ``--in-place`` was given (the user asked for real paths).
        euid: the effective uid (default: this process's).
    """
    uid = os.geteuid() if euid is None else euid
    return ROOT_WARNING if uid == 0 and not in_place else None


@dataclass(frozen=True, slots=True)
class IdempotencyReport:
    """The outcome of testing one or more patterns.

    Args:
        files: the pattern files tested, in the order they were tested.
        commands: how many commands were tested (leaves, counting group children).
        failures: ``"<file>:<id>"`` → messages, in phase order.
    """

    files: tuple[str, ...] = ()
    commands: int = 0
    failures: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no command failed."""
        return not self.failures

    def summary(self) -> str:
        """One line: how much was tested and how much failed."""
        pats = f"{len(self.files)} pattern{'' if len(self.files) == 1 else 's'}"
        cmds = f"{self.commands} command{'' if self.commands == 1 else 's'}"
        if self.ok:
            return f"Tested {cmds} in {pats}: no failures"
        n = len(self.failures)
        return f"Tested {cmds} in {pats}: {n} failure{'' if n == 1 else 's'}"


def count_commands(cmds: Sequence[Command]) -> int:
    """Count the leaf commands of a list, descending into groups."""
    return sum(count_commands(c.commands) if c.commands else 1 for c in cmds)


def _add(results: dict[str, list[str]], cid: str, message: str) -> None:
    results.setdefault(cid, []).append(message)


async def check_idempotency(
    cmds: Sequence[Command],
    *,
    exec: Exec,
    parent_id_filter: re.Pattern[str] | None = None,
    inprocess: InProcess | None = None,
) -> dict[str, list[str]]:
    """Run Etcha's five-run idempotency test on one command list.

    Args:
        cmds: the commands to test.
        exec: the exec the list runs under.
        parent_id_filter: only leaves whose ParentID matches run (ParentID is ``""`` at the top).
        inprocess: runs lone helper invocations inside the agent (``None``: spawn them).

    Returns:
        Command id → failure messages (empty when the list is idempotent).
    """
    results: dict[str, list[str]] = {}

    async def run(mode: Mode, check_only: bool) -> tuple[Output, ...]:
        return await _run_phase(cmds, exec, parent_id_filter, mode, check_only, inprocess)

    changed = _record(
        await run(Mode.CHANGE, False),
        results,
        done=lambda o: o.changed and o.checked,
        failed=lambda o: o.change_fail,
        message=MSG_CHANGE_ERRORS,
    )
    _flag(
        await run(Mode.CHANGE, True),
        results,
        changed,
        MSG_CHECK_AFTER_CHANGE,
        lambda o: o.check_fail_change,
    )
    removed = _record(
        await run(Mode.REMOVE, False),
        results,
        done=lambda o: o.removed and o.checked,
        failed=lambda o: o.remove_fail,
        message=MSG_REMOVE_ERRORS,
    )
    _flag(
        await run(Mode.REMOVE, True),
        results,
        removed,
        MSG_CHECK_AFTER_REMOVE,
        lambda o: o.check_fail_remove,
    )
    _flag(
        await run(Mode.CHANGE, True),
        results,
        changed,
        MSG_CHECK_NOT_FAILED,
        lambda o: not o.check_fail_change,
    )
    return results


async def _run_phase(
    cmds: Sequence[Command],
    exec: Exec,
    parent_id_filter: re.Pattern[str] | None,
    mode: Mode,
    check_only: bool,
    inprocess: InProcess | None = None,
) -> tuple[Output, ...]:
    """One run of the test; its error is ignored like Etcha's (the output flags tell the story)."""
    outcome = await run_commands(
        cmds,
        exec=exec,
        mode=mode,
        check_only=check_only,
        parent_id="",
        parent_id_filter=parent_id_filter,
        inprocess=inprocess,
    )
    if outcome.error is not None:
        logger.debug("test %s run: %s", mode.value, outcome.error)
    return outcome.outputs


def _record(
    outputs: Sequence[Output],
    results: dict[str, list[str]],
    *,
    done: Callable[[Output], bool],
    failed: Callable[[Output], bool],
    message: str,
) -> set[str]:
    """The ids a change/remove run acted on; ``message`` for each that failed."""
    acted: set[str] = set()
    for o in outputs:
        if done(o):
            acted.add(o.id)
        if failed(o):
            _add(results, o.id, message)
    return acted


def _flag(
    outputs: Sequence[Output],
    results: dict[str, list[str]],
    acted: set[str],
    message: str,
    wrong: Callable[[Output], bool],
) -> None:
    """``message`` for each command acted on whose check run came out ``wrong``."""
    for o in outputs:
        if wrong(o) and o.id in acted:
            _add(results, o.id, message)


def find_pattern_files(path: Path) -> list[Path]:
    """The pattern files under ``path``: a file is itself, a directory is walked for ``*.jsonnet``.

    Args:
        path: a file or a directory.

    Returns:
        The files, sorted by path (a directory's files before its subdirectories' files).

    Raises:
        SourceError: ``path`` does not exist (``error opening path``).
    """
    if not path.exists():
        raise SourceError(f"error opening path {path}: expected a pattern file or directory")
    if not path.is_dir():
        return [path]
    found: list[Path] = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found.extend(Path(root) / name for name in sorted(files) if name.endswith(".jsonnet"))
    return found


async def run_pattern_tests(
    path: Path,
    *,
    config: Config,
    build: bool = False,
    parent_id_filter: re.Pattern[str] | None = None,
    disable_external: bool = False,
    in_place: bool = False,
) -> IdempotencyReport:
    """Test every pattern under ``path`` for idempotency.

    Args:
        path: a pattern file or a directory walked for ``*.jsonnet``.
        config: the loaded config (``sources.test`` applies).
        build: also test the build commands (``-b``).
        parent_id_filter: only leaves whose ParentID matches run.
        disable_external: disable the external Jsonnet natives (``-d``).
        in_place: do not set ``vars.root`` (``--in-place``): library paths are the real ones.

    Returns:
        The report; failures keyed ``<file>:<id>``.

    Raises:
        SourceError: ``path`` does not exist.
        RenderError: a pattern did not render (aborts the test).
        PatternError: a pattern is not valid.
    """
    files = find_pattern_files(path)
    hook = helper_runner(config)
    failures: dict[str, tuple[str, ...]] = {}
    count = 0
    for file in files:
        merged: dict[str, list[str]] = {}
        with tempfile.TemporaryDirectory(prefix="agent-test-") as test_dir:
            loaded = load_from_disk(
                file,
                config=config,
                source=TEST_SOURCE,
                extra_vars=_test_vars(test_dir, in_place=in_place),
                disable_external=disable_external,
            )
            lists: list[tuple[Sequence[Command], Exec]] = []
            if build:
                lists.append((loaded.pattern.build, loaded.build_exec))
            lists.append((loaded.pattern.run, loaded.run_exec))
            for cmds, ex in lists:
                if not cmds:
                    continue
                count += count_commands(cmds)
                res = await check_idempotency(
                    cmds, exec=ex, parent_id_filter=parent_id_filter, inprocess=hook
                )
                for cid, msgs in res.items():
                    merged.setdefault(cid, []).extend(msgs)
        for cid, msgs in merged.items():
            failures[f"{file}:{cid}"] = tuple(msgs)
    return IdempotencyReport(
        files=tuple(str(f) for f in files), commands=count, failures=dict(sorted(failures.items()))
    )


def _test_vars(test_dir: str, *, in_place: bool) -> dict[str, str]:
    """``vars.testDir``, and ``vars.root`` (the same directory) unless ``in_place``."""
    if in_place:
        return {TEST_DIR_VAR: test_dir}
    return {TEST_DIR_VAR: test_dir, ROOT_VAR: test_dir}


def format_failures(failures: Mapping[str, Sequence[str]]) -> list[str]:
    """The failure listing: ``<file>:<id>:`` then each message indented by four spaces, sorted."""
    lines: list[str] = []
    for key in sorted(failures):
        lines.append(f"{key}:")
        lines.extend(f"    {msg}" for msg in failures[key])
    return lines
