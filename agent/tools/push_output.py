"""What `agent push` prints: one block (or JSON line) per target as it finishes, then a recap.

Each target ends in one status, counted by the recap (Ansible's ``PLAY RECAP`` in one line):

- ``changed``: a Result without ``err`` that changed or removed something (or, in check mode,
  would);
- ``unchanged``: a Result without ``err`` and without changes;
- ``failed``: the target answered with an error (a Result with ``err``, 404, 429, an undecodable
  body), its certificate was not trusted (or not the pinned one), or its pattern could not be
  built or signed;
- ``unreachable``: no connection or no HTTP answer: refused, reset, unknown host, or timed out
  (``UNREACHABLE: timed out after 2m …``);
- ``skipped``: not pushed, because an earlier ``--serial`` batch failed.

Exit codes (:func:`exit_code`): 0 when nothing failed, 1 when a target failed or was
unreachable, and with ``--detailed-exitcode`` 2 when nothing failed but something changed (or
would change in check mode).

The Result reader (:mod:`agent.run.result`) and the summary lines (:mod:`agent.tools.report`) are
only needed once an answer is in: :func:`load_reporting` loads them, and ``agent push`` calls it
while the target processes the request, so loading them adds nothing to the round trip
(issue 14).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.core.errors import AgentError
from agent.core.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from agent.run.result import Result

__all__ = [
    "STATUSES",
    "PushOutcome",
    "Recap",
    "exit_code",
    "format_outcome",
    "load_reporting",
    "outcome_from_response",
    "outcome_json",
    "outcome_status",
]

#: Every status, in the recap's order.
STATUSES = ("changed", "unchanged", "failed", "unreachable", "skipped")


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class PushOutcome(Record):
    """What one target answered.

    Attributes:
        target: the target name.
        error: "" on success, else the reason (already worded for the user).
        has_result: whether a Result was received (so the ID lines are meaningful).
        changed_ids: ids changed (or, in check mode, that would change).
        changed_outputs: change outputs (command mode prints these).
        removed_ids: ids removed (or that would be removed).
        unreachable: no HTTP answer was received (``error`` says why).
        skipped: not pushed (``error`` says why).
        result: the daemon's whole Result, when one was received (``Failed N:`` and ``-v``).
    """

    target: str
    error: str = ""
    has_result: bool = False
    changed_ids: tuple[str, ...] = ()
    changed_outputs: tuple[str, ...] = ()
    removed_ids: tuple[str, ...] = ()
    unreachable: bool = False
    skipped: bool = False
    result: Result | None = field(default=None, compare=False)


def load_reporting() -> None:
    """Load what reading and printing an answer needs (see the module docstring)."""
    from agent.run.result import Result  # lazy: loaded while the target works (issue 14)
    from agent.tools.report import result_lines  # lazy: as above

    del Result, result_lines


def outcome_status(outcome: PushOutcome) -> str:
    """The outcome's status: one of :data:`STATUSES`."""
    if outcome.skipped:
        return "skipped"
    if outcome.unreachable:
        return "unreachable"
    if outcome.error:
        return "failed"
    if outcome.changed_ids or outcome.removed_ids:
        return "changed"
    return "unchanged"


def _text_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(v) for v in value)


def outcome_from_response(target: str, status: int, body: bytes) -> PushOutcome:
    """Interpret a push response (reference §6.6, SPEC 20).

    Args:
        target: the target name.
        status: the HTTP status.
        body: the response body.

    Returns:
        The outcome; ``error`` set for 404, 429, undecodable bodies and Results with ``err``.
    """
    if status == 404:
        return PushOutcome(target, error="push didn't match any sources")
    if status == 429:
        return PushOutcome(target, error="push destination is rate limiting")
    if status == 304:
        return PushOutcome(target, has_result=True)
    from agent.run.result import Result  # lazy: see load_reporting

    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        text = body.decode("utf-8", errors="replace").strip().splitlines()
        detail = f" {text[0][:200]}" if text else ""
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return PushOutcome(target, error=f"error decoding response: HTTP {status}{detail} ({why})")
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        return PushOutcome(
            target, error=f"error decoding response (HTTP {status}): expected a JSON object"
        )
    err = str(doc.get("err") or "")
    if not err and status >= 300:
        err = f"bad response from server: {status}"
    try:
        result: Result | None = Result.from_json(doc)
    except (AgentError, TypeError, ValueError):
        result = None  # not a Result this agent can read: the ID lines below still print
    return PushOutcome(
        target,
        error=err,
        has_result=True,
        changed_ids=_text_list(doc.get("changedIDs")),
        changed_outputs=_text_list(doc.get("changedOutputs")),
        removed_ids=_text_list(doc.get("removedIDs")),
        result=result,
    )


def _error_line(outcome: PushOutcome, color: bool) -> str:
    label = "UNREACHABLE" if outcome.unreachable else "SKIPPED" if outcome.skipped else "ERROR"
    line = f"{label}: {outcome.error}"
    if not color:
        return line
    return f"\033[{'33' if outcome.skipped else '31'}m{line}\033[0m"


def _result_lines(outcome: PushOutcome, *, check: bool, command_mode: bool) -> list[str]:
    if command_mode and not check:
        return list(outcome.changed_outputs)
    if not outcome.changed_ids and not outcome.removed_ids:
        return ["No changes"]
    change_word, remove_word = ("Would change", "Would remove") if check else ("Changed", "Removed")
    lines: list[str] = []
    if outcome.changed_ids:
        n = len(outcome.changed_ids)
        lines.append(f"{change_word} {n}: {', '.join(outcome.changed_ids)}")
    if outcome.removed_ids:
        n = len(outcome.removed_ids)
        lines.append(f"{remove_word} {n}: {', '.join(outcome.removed_ids)}")
    return lines


def format_outcome(
    outcome: PushOutcome, *, check: bool, command_mode: bool, color: bool, verbose: bool = False
) -> str:
    """Render one target's block: ``<target>:`` then 4-space-indented lines.

    Args:
        outcome: the target's outcome.
        check: the push was in check mode (``Would change``/``Would remove``).
        command_mode: an ad-hoc command was pushed (print its change outputs).
        color: wrap ``ERROR:``/``UNREACHABLE:`` lines in red, ``SKIPPED:`` in yellow.
        verbose: ``push -v``: each command's output under its id.

    Returns:
        The block, without a trailing newline.
    """
    lines: list[str] = []
    if outcome.error:
        lines.append(_error_line(outcome, color))
    if outcome.result is not None:
        from agent.tools.report import result_lines  # lazy: see load_reporting

        # The one summary (agent.tools.report): a failed command is `Failed N:`, never `Changed`.
        quiet = dataclasses.replace(outcome.result, err="")  # the error line is printed above
        lines.extend(
            result_lines(quiet, check=check, command_mode=command_mode, verbose=verbose)
            or ["No changes"]
        )
        if verbose and outcome.result.audit_seq:  # the host's audit receipt (docs/security.md)
            lines.append(f"Audit receipt: {outcome.result.audit_seq}:{outcome.result.audit_hash}")
    elif outcome.has_result:
        lines.extend(_result_lines(outcome, check=check, command_mode=command_mode))
    body = "".join("\n    " + line.replace("\n", "\n    ") for line in lines)
    return f"{outcome.target}:{body}"


def outcome_json(outcome: PushOutcome, *, check: bool) -> dict[str, Any]:
    """One target as a JSON object (``-f json``), with the Result's own key names.

    Returns:
        ``{"target", "status", "check", "err", "changedIDs", "changedOutputs", "removedIDs"}``.
    """
    return {
        "target": outcome.target,
        "status": outcome_status(outcome),
        "check": check,
        "err": outcome.error,
        "changedIDs": list(outcome.changed_ids),
        "changedOutputs": list(outcome.changed_outputs),
        "removedIDs": list(outcome.removed_ids),
    }


class Recap:
    """Counts outcomes by status, and words them as Ansible's recap does, on one line."""

    def __init__(self, outcomes: Iterable[PushOutcome] = ()) -> None:
        self.counts: Counter[str] = Counter()
        for outcome in outcomes:
            self.add(outcome)

    def add(self, outcome: PushOutcome) -> None:
        """Count one more outcome."""
        self.counts[outcome_status(outcome)] += 1

    @property
    def total(self) -> int:
        """Targets counted."""
        return sum(self.counts.values())

    def line(self) -> str:
        """``5 targets: 2 changed, 1 unchanged, 1 failed, 1 unreachable`` (``, N skipped`` when
        some were skipped)."""
        shown = [s for s in STATUSES if s != "skipped" or self.counts[s]]
        noun = "target" if self.total == 1 else "targets"
        return f"{self.total} {noun}: " + ", ".join(f"{self.counts[s]} {s}" for s in shown)

    def as_json(self) -> dict[str, Any]:
        """``{"recap": {"targets": 5, "changed": 2, …, "skipped": 0}}``."""
        return {"recap": {"targets": self.total, **{s: self.counts[s] for s in STATUSES}}}


def exit_code(recap: Recap, *, detailed: bool) -> int:
    """0 when nothing failed; 1 when a target failed or was unreachable; with ``detailed``, 2
    when nothing failed but something changed (or would change in check mode).

    Skipped targets only follow a failed batch, so they never stand alone.
    """
    if recap.counts["failed"] or recap.counts["unreachable"]:
        return 1
    if detailed and recap.counts["changed"]:
        return 2
    return 0
