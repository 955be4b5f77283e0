"""The answer of a run: Etcha's ``Result`` (reference etcha-run.md §3.3, SPEC 20), plus failures.

Invariants:

- Etcha's keys keep their meaning and their values: ``changedIDs``/``changedOutputs`` list every
  command whose change ran, a failed one included (Etcha does the same), and empty lists are
  ``null``.
- ``failedIDs``/``failedOutputs`` are this agent's addition: the commands whose change or remove
  failed, with their outputs. Etcha clients ignore the keys; reports use them to list a failure
  as ``Failed N: ids`` and never as a change.
- ``auditSeq``/``auditHash`` (only when the host keeps an audit log) are the receipt: the ``seq``
  and ``hash`` of the run's line in the host's audit log (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.core.errors import CommandError
from agent.core.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from agent.run.engine import RunOutcome

__all__ = ["Result"]


def _list_or_none(values: tuple[str, ...]) -> list[str] | None:
    return list(values) if values else None


def _strings(d: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = d.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CommandError(f"result field {key}: expected a list of strings or null, got {value!r}")
    return tuple(value)


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Result(Record):
    """The answer of a run (Etcha's ``Result``; JSON keys per SPEC, plus ``failed*``)."""

    changed_ids: tuple[str, ...] = ()
    changed_outputs: tuple[str, ...] = ()
    err: str = ""
    exit: bool = False
    removed_ids: tuple[str, ...] = ()
    removed_outputs: tuple[str, ...] = ()
    failed_ids: tuple[str, ...] = ()
    failed_outputs: tuple[str, ...] = ()
    audit_seq: int = 0
    audit_hash: str = ""

    @classmethod
    def from_outcome(cls, outcome: RunOutcome, *, check: bool, exit: bool = False) -> Result:
        """Summarise a run.

        Args:
            outcome: the run.
            check: check mode: ids are the outputs whose checks found drift, outputs stay empty.
            exit: the event-dispatch exit flag.

        Returns:
            The Result; ids are filled even when the run failed (SPEC 20). A failed change is in
            ``changed_ids`` (as in Etcha) and in ``failed_ids``.
        """
        err = outcome.error.message if outcome.error is not None else ""
        outs = outcome.outputs
        if check:
            return cls(
                changed_ids=tuple(o.id for o in outs if o.check_fail_change),
                err=err,
                exit=exit,
                removed_ids=tuple(o.id for o in outs if o.check_fail_remove),
            )
        changed = [o for o in outs if o.changed]
        removed = [o for o in outs if o.removed]
        failed = [o for o in outs if o.change_fail or o.remove_fail]
        return cls(
            changed_ids=tuple(o.id for o in changed),
            changed_outputs=tuple(o.change_out for o in changed),
            err=err,
            exit=exit,
            removed_ids=tuple(o.id for o in removed),
            removed_outputs=tuple(o.remove_out for o in removed),
            failed_ids=tuple(o.id for o in failed),
            failed_outputs=tuple(o.remove_out if o.remove_fail else o.change_out for o in failed),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object; empty lists are ``null`` as in Etcha; the receipt only when set."""
        out: dict[str, Any] = {
            "changedIDs": _list_or_none(self.changed_ids),
            "changedOutputs": _list_or_none(self.changed_outputs),
            "err": self.err,
            "exit": self.exit,
            "failedIDs": _list_or_none(self.failed_ids),
            "failedOutputs": _list_or_none(self.failed_outputs),
            "removedIDs": _list_or_none(self.removed_ids),
            "removedOutputs": _list_or_none(self.removed_outputs),
        }
        if self.audit_seq:
            out["auditHash"] = self.audit_hash
            out["auditSeq"] = self.audit_seq
        return out

    @classmethod
    def from_json(cls, d: Any) -> Result:
        """Parse a Result JSON object (``None`` gives an empty Result, reference §11.12).

        An Etcha daemon sends no ``failed*`` keys: they read as empty.

        Raises:
            CommandError: not an object, or a field of the wrong type.
        """
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise CommandError(f"result: expected a JSON object, got {type(d).__name__}")
        err = d.get("err") or ""
        exit_ = d.get("exit") or False
        if not isinstance(err, str) or not isinstance(exit_, bool):
            raise CommandError("result: expected err to be a string and exit a bool")
        return cls(
            changed_ids=_strings(d, "changedIDs"),
            changed_outputs=_strings(d, "changedOutputs"),
            err=err,
            exit=exit_,
            removed_ids=_strings(d, "removedIDs"),
            removed_outputs=_strings(d, "removedOutputs"),
            failed_ids=_strings(d, "failedIDs"),
            failed_outputs=_strings(d, "failedOutputs"),
            audit_seq=_receipt_seq(d.get("auditSeq")),
            audit_hash=str(d.get("auditHash") or ""),
        )


def _receipt_seq(value: Any) -> int:
    """``auditSeq`` (absent from Etcha and from hosts without an audit log: 0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
