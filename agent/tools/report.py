"""Human summaries of a run :class:`~agent.run.engine.Result`, shared by `push` and `local`.

Lines (reference etcha-run.md §6.6, SPEC 20):

- ``ERROR: <err>`` first when the run failed, then what it still changed or removed;
- ``Changed N: a, b`` / ``Removed N: c``, or ``No changes`` when both lists are empty;
- in check mode ``Would change N: a, b`` / ``Would remove N: c``;
- in command mode (an ad-hoc `push` command) the change outputs themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.run.engine import Result


def result_lines(result: Result, *, check: bool = False, command_mode: bool = False) -> list[str]:
    """Summarise ``result`` as output lines (without colour or indentation)."""
    lines: list[str] = []
    if result.err:
        lines.append(f"ERROR: {result.err}")
    if command_mode and not check:
        lines.extend(out for out in result.changed_outputs if out)
        return lines
    changed = list(result.changed_ids)
    removed = list(result.removed_ids)
    verb_change, verb_remove = ("Would change", "Would remove") if check else ("Changed", "Removed")
    if changed:
        lines.append(f"{verb_change} {len(changed)}: {', '.join(changed)}")
    if removed:
        lines.append(f"{verb_remove} {len(removed)}: {', '.join(removed)}")
    if not changed and not removed and not result.err:
        lines.append("No changes")
    return lines
