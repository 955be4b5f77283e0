"""Pure diff of an old command list against a new one (reference etcha-run.md §3.1, SPEC 10).

Responsibility: decide which *old* commands must be removed when a pattern changes, and whether a
list has anything to run. No process is started and no input is modified.

Invariants:

- An old leaf is removed when no command of the same list level has its id, or when the first new
  command with its id has a different ``change`` and no ``changeIgnore``. Only ``change`` is
  compared.
- Groups are compared recursively, level by level; a group that is gone removes all its removable
  descendants. A group's own ``remove`` is never run (its own scripts are ignored at run time).
- Only old commands with a ``remove`` script are returned; ``removeAfter`` puts them in the second
  list. Both lists keep old order (the engine runs them reversed).
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.run.model import Command

__all__ = ["diff", "has_work"]


def diff(
    old: Sequence[Command], new: Sequence[Command]
) -> tuple[tuple[Command, ...], tuple[Command, ...]]:
    """Old commands to remove because of the change from ``old`` to ``new``.

    Args:
        old: the previous list.
        new: the new list.

    Returns:
        ``(remove_before, remove_after)``: old leaf commands (as they were in ``old``) to remove
        before the new list runs, and after it (``removeAfter``).
    """
    before: list[Command] = []
    after: list[Command] = []
    _diff(old, new, before, after)
    return tuple(before), tuple(after)


def _diff(
    old: Sequence[Command], new: Sequence[Command], before: list[Command], after: list[Command]
) -> None:
    first: dict[str, Command] = {}
    for c in new:
        first.setdefault(c.id, c)
    for o in old:
        n = first.get(o.id)
        if o.commands:
            _diff(o.commands, n.commands if n is not None else (), before, after)
            continue
        if n is not None and (n.change_ignore or o.change == n.change):
            continue
        if o.remove:
            (after if o.remove_after else before).append(o)


def has_work(cmds: Sequence[Command]) -> bool:
    """True when any leaf, at any depth, has a check or ``always`` (SPEC 10)."""
    for c in cmds:
        if c.commands:
            if has_work(c.commands):
                return True
        elif c.check or c.always:
            return True
    return False
