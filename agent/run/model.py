"""The command model: :class:`Exec` and :class:`Command`, parsing, flattening and validation.

Responsibility: turn the raw JSON of a command list (pattern ``build``/``run``, source
``commands``, ``verifyCommands``, ``signingCommands``) into frozen :class:`Command` trees, and
resolve exec override chains. Nothing here runs a process.

Invariants:

- Every :class:`Command` returned by :func:`parse_commands` comes from a list that validated:
  ids present, ``envPrefix`` well formed, every onChange/onFail/onRemove entry is an
  ``etcha:<name>`` event with a non-empty name or resolves (see :func:`resolve_target`) to at least
  one *other* command of the same list, onChange/onFail targets come after the command and
  onRemove targets before it (SPEC 7). Validation is per list: a group's ``commands`` are
  validated on their own, so targets never leave their group.
- Nested JSON lists are flattened depth-first (``[a, [b, [c]]]`` → ``a, b, c``).
- Unknown fields are errors naming the field (typo guard).
- :class:`Exec` fields are ``None`` when unset; :meth:`Exec.override` follows SPEC 8 (set fields
  replace, ``env`` maps merge with the child winning, every link needs ``allowOverride: true``).
- Run-time trigger state (Etcha's ``ChangedBy``/``RemovedBy``) is not stored here; the engine
  keeps it per run, so there are no stale triggers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

from agent.core.durations import parse_duration
from agent.core.errors import CommandError, ConfigError, json_kind
from agent.core.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "COMMAND_KEYS",
    "DEFAULT_EXEC",
    "EVENT_PREFIX",
    "EXEC_KEYS",
    "Command",
    "Exec",
    "commands_from_json",
    "commands_to_json",
    "parse_commands",
    "resolve_target",
]

EVENT_PREFIX = "etcha:"

# JSON name -> (attribute, kind). Kinds: "bool", "str", "strs" (list of strings), "env" (map).
_EXEC_FIELDS: dict[str, tuple[str, str]] = {
    "allowOverride": ("allow_override", "bool"),
    "command": ("command", "str"),
    "containerEntrypoint": ("container_entrypoint", "str"),
    "containerImage": ("container_image", "str"),
    "containerNetwork": ("container_network", "str"),
    "containerPrivileged": ("container_privileged", "bool"),
    "containerPull": ("container_pull", "str"),
    "containerUser": ("container_user", "str"),
    "containerVolumes": ("container_volumes", "strs"),
    "containerWorkDir": ("container_work_dir", "str"),
    "env": ("env", "env"),
    "envInherit": ("env_inherit", "bool"),
    "group": ("group", "str"),
    "sudo": ("sudo", "bool"),
    "timeout": ("timeout", "str"),
    "user": ("user", "str"),
    "workDir": ("work_dir", "str"),
}

_COMMAND_FIELDS = (
    "always",
    "change",
    "changeIgnore",
    "check",
    "commands",
    "envPrefix",
    "exec",
    "id",
    "onChange",
    "onFail",
    "onRemove",
    "remove",
    "removeAfter",
    "stdin",
)

#: The keys a command object may have (config checks name unknown ones with their full path).
COMMAND_KEYS = _COMMAND_FIELDS
#: The keys an exec object may have.
EXEC_KEYS = tuple(_EXEC_FIELDS)

_ENV_PREFIX_START = re.compile(r"^[0-9]")
_ENV_PREFIX_CHARS = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Exec(Record):
    """How a script is run: every Etcha exec field plus ``timeout``; ``None`` means unset.

    ``timeout`` is a Go duration string (``"30s"``); ``""`` or unset means no timeout.
    """

    allow_override: bool | None = None
    command: str | None = None
    container_entrypoint: str | None = None
    container_image: str | None = None
    container_network: str | None = None
    container_privileged: bool | None = None
    container_pull: str | None = None
    container_user: str | None = None
    container_volumes: tuple[str, ...] | None = None
    container_work_dir: str | None = None
    env: Mapping[str, str] | None = None
    env_inherit: bool | None = None
    group: str | None = None
    sudo: bool | None = None
    timeout: str | None = None
    user: str | None = None
    work_dir: str | None = None

    @classmethod
    def from_dict(cls, d: Any, *, where: str) -> Exec:
        """Build an Exec from its JSON object.

        Args:
            d: the decoded JSON object (``None`` gives an all-unset Exec); an :class:`Exec`
                (already parsed, e.g. from the config) is returned as it is.
            where: what is being parsed (``"config exec"``, ``"command a exec"``), for messages.

        Raises:
            CommandError: ``d`` is not an object, a field is unknown or has the wrong type, or
                ``timeout`` is not a duration.

        Returns:
            The Exec, with the fields present in ``d`` set and the others ``None``.
        """
        if d is None:
            return cls()
        if isinstance(d, Exec):
            return d
        if not isinstance(d, Mapping):
            raise CommandError(f"{where}: expected an exec object, got {json_kind(d)}")
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            spec = _EXEC_FIELDS.get(key)
            if spec is None:
                known = ", ".join(sorted(_EXEC_FIELDS))
                raise CommandError(f"{where}: unknown exec field {key!r} (expected one of {known})")
            attr, kind = spec
            kwargs[attr] = _exec_value(value, kind, f"{where}: exec field {key}")
        timeout = kwargs.get("timeout")
        if timeout:
            try:
                parse_duration(timeout, name=f"{where}: exec field timeout")
            except ConfigError as exc:
                raise CommandError(exc.message) from exc
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object of the set fields (camelCase names)."""
        out: dict[str, Any] = {}
        for key, (attr, kind) in _EXEC_FIELDS.items():
            value = getattr(self, attr)
            if value is None:
                continue
            if kind == "strs":
                value = list(value)
            elif kind == "env":
                value = dict(value)
            out[key] = value
        return out

    def override(self, *others: Exec | None) -> Exec:
        """Apply child execs in order (SPEC 8).

        Starting from ``self``: when ``self.allow_override`` is not true, ``self`` is returned.
        Otherwise each non-``None`` override is merged in (its set fields replace the current
        ones; ``env`` maps merge, the child winning), and the chain continues only while the
        merged result still has ``allow_override`` true.

        Args:
            others: overrides, nearest-last (e.g. ``source.exec, pattern.runExec``).

        Returns:
            The resulting Exec.
        """
        out = self
        for other in others:
            if out.allow_override is not True:
                break
            if other is None:
                continue
            out = out._merge(other)
        return out

    def _merge(self, other: Exec) -> Exec:
        changes: dict[str, Any] = {}
        for f in fields(Exec):
            value = getattr(other, f.name)
            if value is None:
                continue
            if f.name == "env" and self.env is not None:
                value = {**self.env, **value}
            changes[f.name] = value
        return replace(self, **changes) if changes else self

    @property
    def timeout_seconds(self) -> float:
        """The timeout in seconds; ``0.0`` means none.

        Raises:
            CommandError: ``timeout`` is not a duration (only for Execs not built by from_dict).
        """
        if not self.timeout:
            return 0.0
        try:
            return parse_duration(self.timeout, name="exec field timeout")
        except ConfigError as exc:
            raise CommandError(exc.message) from exc


def _exec_value(value: Any, kind: str, where: str) -> Any:
    if kind == "bool":
        if not isinstance(value, bool):
            raise CommandError(f"{where}: expected a bool, got {json_kind(value)}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise CommandError(f"{where}: expected a string, got {json_kind(value)}")
        return value
    if kind == "strs":
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CommandError(f"{where}: expected a list of strings, got {json_kind(value)}")
        return tuple(value)
    # env
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise CommandError(f"{where}: expected an object of strings, got {json_kind(value)}")
    return dict(value)


DEFAULT_EXEC = Exec(
    allow_override=True, command="/usr/bin/bash -e -o pipefail -c", env_inherit=True
)


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Command(Record):
    """One entry of a command list; a group when ``commands`` is non-empty.

    A group's own check/change/remove/always/stdin are ignored at run time; its onChange and
    onRemove fire when any child changed or was removed (SPEC 19).
    """

    id: str
    always: bool = False
    change: str = ""
    change_ignore: bool = False
    check: str = ""
    commands: tuple[Command, ...] = ()
    env_prefix: str = ""
    exec: Exec | None = None
    on_change: tuple[str, ...] = ()
    on_fail: tuple[str, ...] = ()
    on_remove: tuple[str, ...] = ()
    remove: str = ""
    remove_after: bool = False
    stdin: str = ""

    @property
    def is_group(self) -> bool:
        """True when this command has children (its own scripts are then ignored)."""
        return bool(self.commands)

    def to_json(self) -> dict[str, Any]:
        """Return the Etcha JSON object (``envPrefix``, ``id`` and ``stdin`` always present)."""
        out: dict[str, Any] = {"envPrefix": self.env_prefix, "id": self.id, "stdin": self.stdin}
        if self.always:
            out["always"] = True
        if self.change:
            out["change"] = self.change
        if self.change_ignore:
            out["changeIgnore"] = True
        if self.check:
            out["check"] = self.check
        if self.commands:
            out["commands"] = commands_to_json(self.commands)
        if self.exec is not None:
            out["exec"] = self.exec.to_dict()
        if self.on_change:
            out["onChange"] = list(self.on_change)
        if self.on_fail:
            out["onFail"] = list(self.on_fail)
        if self.on_remove:
            out["onRemove"] = list(self.on_remove)
        if self.remove:
            out["remove"] = self.remove
        if self.remove_after:
            out["removeAfter"] = True
        return out


def commands_to_json(cmds: Sequence[Command]) -> list[dict[str, Any]]:
    """Return the JSON list of ``cmds`` (see :meth:`Command.to_json`)."""
    return [c.to_json() for c in cmds]


def resolve_target(entry: str, ids: Sequence[str]) -> list[int]:
    """Indexes of the commands an onChange/onFail/onRemove entry targets (SPEC 7).

    An entry equal to an id targets every command with exactly that id; otherwise it is a
    regular expression that must match a whole id.

    Args:
        entry: the target entry (not an ``etcha:`` event).
        ids: the ids of the list, in order.

    Raises:
        re.error: the entry is not a valid regular expression.

    Returns:
        The matching indexes, ascending.
    """
    if entry in ids:
        return [j for j, x in enumerate(ids) if x == entry]
    rx = re.compile(entry)
    return [j for j, x in enumerate(ids) if rx.fullmatch(x)]


def parse_commands(value: Any, *, where: str) -> tuple[Command, ...]:
    """Parse, flatten and validate a JSON command list.

    Args:
        value: the decoded JSON (a list, possibly nested; ``None`` gives an empty tuple). A list
            or tuple of :class:`Command` (already parsed, e.g. from the config) is returned as a
            tuple without parsing again.
        where: what is being parsed (``"pattern run"``), named in the error message.

    Raises:
        CommandError: ``error validating commands in <where>: <problem>; <problem>...`` with
            every problem found, each naming its command.

    Returns:
        The validated commands.
    """
    if isinstance(value, list | tuple) and value and all(isinstance(c, Command) for c in value):
        return tuple(value)
    problems: list[str] = []
    cmds = _parse_list(value, "", problems)
    if problems:
        prefix = f"error validating commands in {where}" if where else "error validating commands"
        raise CommandError(f"{prefix}: " + "; ".join(problems))
    return cmds


def _flatten(value: list[Any], out: list[Any]) -> None:
    for item in value:
        if isinstance(item, list):
            _flatten(item, out)
        else:
            out.append(item)


def _parse_list(value: Any, path: str, problems: list[str]) -> tuple[Command, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        where = f"commands of {path}" if path else "commands"
        problems.append(f"{where}: expected a list, got {json_kind(value)}")
        return ()
    items: list[Any] = []
    _flatten(value, items)
    parsed: list[tuple[str, Command]] = []
    for index, item in enumerate(items):
        label = _label(item, index, path)
        cmd = _parse_one(item, label, path, problems)
        if cmd is not None:
            parsed.append((label, cmd))
    _validate(parsed, problems)
    return tuple(c for _, c in parsed)


def _label(item: Any, index: int, path: str) -> str:
    cid = item.get("id") if isinstance(item, Mapping) else None
    name = cid if isinstance(cid, str) and cid else f"#{index + 1}"
    return f"command {path} > {name}" if path else f"command {name}"


class _Fields:
    """Typed reads of one command object's fields; each problem is recorded, none raised."""

    def __init__(self, item: Mapping[str, Any], label: str, problems: list[str]) -> None:
        self.item = item
        self.label = label
        self.problems = problems
        self.ok = True

    def problem(self, message: str) -> None:
        self.problems.append(message)
        self.ok = False

    def text(self, key: str) -> str:
        v = self.item.get(key, "")
        if v is None:
            return ""
        if not isinstance(v, str):
            self.problem(f"{self.label}: field {key}: expected a string, got {json_kind(v)}")
            return ""
        return v

    def flag(self, key: str) -> bool:
        v = self.item.get(key, False)
        if v is None:
            return False
        if not isinstance(v, bool):
            self.problem(f"{self.label}: field {key}: expected a bool, got {json_kind(v)}")
            return False
        return v

    def targets(self, key: str) -> tuple[str, ...]:
        v = self.item.get(key)
        if v is None:
            return ()
        if isinstance(v, str):
            return (v,)
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return tuple(v)
        self.problem(
            f"{self.label}: field {key}: expected a string or a list of strings, got {json_kind(v)}"
        )
        return ()

    def exec(self) -> Exec | None:
        if self.item.get("exec") is None:
            return None
        try:
            return Exec.from_dict(self.item["exec"], where=self.label)
        except CommandError as exc:
            self.problem(exc.message)
            return None


def _parse_one(item: Any, label: str, path: str, problems: list[str]) -> Command | None:
    if not isinstance(item, Mapping):
        problems.append(f"{label}: expected an object, got {json_kind(item)}")
        return None
    f = _Fields(item, label, problems)
    for key in item:
        if key not in _COMMAND_FIELDS:
            f.problem(f"{label}: unknown field {key!r}")
    cid = f.text("id")
    if not cid:
        f.problem(f"{label}: id is a required property for a command")
    exec_ = f.exec()
    children: tuple[Command, ...] = ()
    if item.get("commands") is not None:
        child_path = f"{path} > {cid or '?'}" if path else (cid or "?")
        children = _parse_list(item["commands"], child_path, problems)
    cmd = Command(
        id=cid,
        always=f.flag("always"),
        change=f.text("change"),
        change_ignore=f.flag("changeIgnore"),
        check=f.text("check"),
        commands=children,
        env_prefix=f.text("envPrefix"),
        exec=exec_,
        on_change=f.targets("onChange"),
        on_fail=f.targets("onFail"),
        on_remove=f.targets("onRemove"),
        remove=f.text("remove"),
        remove_after=f.flag("removeAfter"),
        stdin=f.text("stdin"),
    )
    return cmd if f.ok else None


def _validate(parsed: list[tuple[str, Command]], problems: list[str]) -> None:
    ids = [c.id for _, c in parsed]
    for i, (label, cmd) in enumerate(parsed):
        p = cmd.env_prefix
        if p:
            if _ENV_PREFIX_START.match(p):
                problems.append(
                    f"{label}: invalid environment prefix: {p}: must not start with a number"
                )
            elif not _ENV_PREFIX_CHARS.match(p):
                problems.append(
                    f"{label}: invalid environment prefix: {p}: "
                    "must only contain letters, underscores, and numbers"
                )
        for key, entries in (
            ("onChange", cmd.on_change),
            ("onFail", cmd.on_fail),
            ("onRemove", cmd.on_remove),
        ):
            for t in entries:
                msg = _check_target(key, t, i, ids)
                if msg:
                    problems.append(f"{label}: {msg}")


def _check_target(key: str, t: str, i: int, ids: list[str]) -> str:
    me = ids[i]
    if t == me:
        return f"{key} target {t} cannot target the command itself"
    if t.startswith(EVENT_PREFIX):
        if t == EVENT_PREFIX:
            return f"{key} event {t!r} has an empty name, expected etcha:<name>"
        return ""
    try:
        matches = resolve_target(t, ids)
    except re.error as exc:
        return f"{key} target {t} is not a valid regular expression: {exc}"
    others = [j for j in matches if j != i]
    if not others:
        if matches:
            return f"{key} target {t} cannot target the command itself"
        return f"{key} target {t} does not match any command id in this list" + _did_you_mean(
            t, ids, me
        )
    if key == "onRemove":
        wrong = [ids[j] for j in others if j > i]
        if wrong:
            return f"{key} target {t} must come before {me}, got {', '.join(wrong)} after it"
    else:
        wrong = [ids[j] for j in others if j < i]
        if wrong:
            return f"{key} target {t} must come after {me}, got {', '.join(wrong)} before it"
    return ""


def _did_you_mean(target: str, ids: Sequence[str], me: str) -> str:
    """`` (did you mean "x"?)`` naming the known ids closest to ``target``, or ``""``."""
    import difflib  # stdlib, only for an error message

    known = sorted({x for x in ids if x and x != me})
    close = difflib.get_close_matches(target, known, n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f'"{c}"' for c in close) + "?)"


def commands_from_json(text: str, *, where: str) -> tuple[Command, ...]:
    """Parse a JSON document holding a command list (convenience for tests and tools).

    Raises:
        CommandError: invalid JSON or an invalid command list.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{where}: expected a JSON command list, got invalid JSON: {exc}"
        ) from exc
    return parse_commands(value, where=where)
