"""Human and JSON summaries of a run :class:`~agent.run.result.Result`, for `push` and `local`.

Lines (reference etcha-run.md §6.6, SPEC 20, issue 15):

- ``ERROR: <err>`` first when the run failed, then what it still changed or removed;
- ``Changed N: a, b`` / ``Removed N: c``, or ``No changes`` when nothing changed, was removed or
  failed; a command whose change or remove failed is never counted there but listed as
  ``Failed N: x``, with its output under it (always, without ``-v``);
- in check mode ``Would change N: a, b`` / ``Would remove N: c``;
- in command mode (an ad-hoc `push` command) the change outputs themselves;
- with ``verbose`` (``push -v``), each change and remove output under its id.

An output block is ``<id> (<step>):`` followed by the output, each line indented by four spaces.
``local -v`` prints every step's output (check, change, remove) of the run that way, in run order,
before the summary; ``local --diff`` prints the outputs of the commands that changed, or in check
mode of the checks that found drift (the file helpers print their diffs there). With ``-f json``
the summary is one JSON object: the Result's keys plus ``outputs``, a list of
``{"id", "parentID", "step", "output"}`` objects.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from agent.run.engine import RunOutcome
    from agent.run.result import Result

#: :data:`agent.run.engine.OUTPUT_LOGGER`, not imported from there: the engine imports asyncio,
#: which ``agent push`` (that prints results) does not need. A test keeps the two equal.
OUTPUT_LOGGER = "agent.run.output"

__all__ = [
    "StepOutput",
    "log_command_output",
    "output_block",
    "result_json",
    "result_lines",
    "shown_outputs",
]


@dataclass(frozen=True, slots=True)
class StepOutput:
    """The output of one step (``check``, ``change`` or ``remove``) of one command."""

    id: str
    parent_id: str
    step: str
    output: str

    def to_json(self) -> dict[str, str]:
        """``{"id", "parentID", "step", "output"}``."""
        return {"id": self.id, "parentID": self.parent_id, "step": self.step, "output": self.output}


def log_command_output() -> None:
    """Show the engine's per-step output log lines at any ``-l`` (``run -v``, ``test -v``).

    The engine logs each output at DEBUG on :data:`~agent.run.engine.OUTPUT_LOGGER`; this lowers
    that one logger's level, so its records reach the ``agent`` handler even when the ``agent``
    logger itself stays at INFO (or is silenced, as ``agent test`` does).
    """
    logging.getLogger(OUTPUT_LOGGER).setLevel(logging.DEBUG)


def output_block(id: str, step: str, text: str) -> list[str]:
    """``<id> (<step>):`` and ``text`` indented by four spaces (nothing for empty text)."""
    if not text:
        return []
    return [f"{id} ({step}):", *("    " + line for line in text.splitlines())]


def _without(ids: Sequence[str], gone: Iterable[str]) -> list[str]:
    """``ids`` minus one occurrence of each id in ``gone``, order kept."""
    left = Counter(gone)
    kept: list[str] = []
    for i in ids:
        if left[i] > 0:
            left[i] -= 1
            continue
        kept.append(i)
    return kept


def _failed_blocks(result: Result) -> list[str]:
    lines: list[str] = []
    changed = set(result.changed_ids)
    for fid, text in zip(result.failed_ids, result.failed_outputs, strict=False):
        step = "remove" if fid in result.removed_ids and fid not in changed else "change"
        lines.extend(output_block(fid, step, text))
    return lines


def _verbose_blocks(
    ids: Sequence[str], outputs: Sequence[str], step: str, shown: Sequence[str]
) -> list[str]:
    """The output blocks of the ids that are in ``shown`` (not failed)."""
    lines: list[str] = []
    for cid, text in zip(ids, outputs, strict=False):
        if cid in shown:
            lines.extend(output_block(cid, step, text))
    return lines


def result_lines(
    result: Result,
    *,
    check: bool = False,
    command_mode: bool = False,
    verbose: bool = False,
    failed_output: bool = True,
) -> list[str]:
    """Summarise ``result`` as output lines (without colour or indentation).

    Args:
        result: the run's Result (from the engine, or a daemon's answer).
        check: check mode (``Would change``).
        command_mode: an ad-hoc command: print its change outputs only.
        verbose: print each change and remove output under its id (``push -v``).
        failed_output: print a failed command's output under ``Failed N:`` (``local -v`` prints
            it with the other outputs instead).
    """
    lines: list[str] = []
    if result.err:
        lines.append(f"ERROR: {result.err}")
    if command_mode and not check:
        lines.extend(out for out in result.changed_outputs if out)
        return lines
    changed = _without(result.changed_ids, result.failed_ids)
    removed = _without(result.removed_ids, result.failed_ids)
    verb_change, verb_remove = ("Would change", "Would remove") if check else ("Changed", "Removed")
    if changed:
        lines.append(f"{verb_change} {len(changed)}: {', '.join(changed)}")
        if verbose:
            lines.extend(
                _verbose_blocks(result.changed_ids, result.changed_outputs, "change", changed)
            )
    if removed:
        lines.append(f"{verb_remove} {len(removed)}: {', '.join(removed)}")
        if verbose:
            lines.extend(
                _verbose_blocks(result.removed_ids, result.removed_outputs, "remove", removed)
            )
    if result.failed_ids:
        lines.append(f"Failed {len(result.failed_ids)}: {', '.join(result.failed_ids)}")
        if failed_output or verbose:
            lines.extend(_failed_blocks(result))
    if not changed and not removed and not result.failed_ids and not result.err:
        lines.append("No changes")
    return lines


def shown_outputs(
    outcome: RunOutcome, *, verbose: bool, diff: bool, check: bool
) -> list[StepOutput]:
    """The step outputs ``local`` prints, in run order.

    Args:
        outcome: the run.
        verbose: every non-empty output of every step.
        diff: the outputs of commands that changed or were removed (in check mode: the outputs
            of the checks that found drift), where the file helpers print their diffs.
        check: the run was in check mode.
    """
    shown: list[StepOutput] = []
    for o in outcome.outputs:
        steps = (("check", o.check_out), ("change", o.change_out), ("remove", o.remove_out))
        for step, text in steps:
            if not text:
                continue
            if verbose:
                keep = True
            elif not diff:
                keep = False
            elif check:
                keep = step == "check" and (o.check_fail_change or o.check_fail_remove)
            else:
                keep = (step == "change" and o.changed) or (step == "remove" and o.removed)
            if keep:
                shown.append(StepOutput(o.id, o.parent_id, step, text))
    return shown


def result_json(result: Result, outputs: Sequence[StepOutput] | None) -> dict[str, Any]:
    """The Result's JSON, plus ``outputs`` when ``outputs`` is not ``None``."""
    doc = result.to_json()
    if outputs is not None:
        doc["outputs"] = [s.to_json() for s in outputs]
    return doc
