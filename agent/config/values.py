"""Typing one config value: check it against its field and return the typed value.

Responsibility: the conversions behind every field kind of :mod:`agent.config.fields`, and the
way back to JSON (:func:`to_json`) for ``Config.to_dict``.

Invariants:

- :func:`convert` never returns raw command or exec JSON: ``commands`` become a tuple of
  :class:`~agent.run.model.Command`, ``exec`` an :class:`~agent.run.model.Exec` (SPEC 7, 8), so
  nothing parses them again at run time.
- A value that does not fit raises :class:`Bad`; it carries the path below the field
  (``[0].exec.nope``) and, for an unknown key, the names that were possible, so the caller can
  name the full key and suggest the closest one.
- Messages name keys and kinds, never values of free-form objects, so secrets never reach them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.config.bad import Bad, duration_value, expect
from agent.config.fields import ACTION_NAMES, Field
from agent.config.jwtrule import check_rule
from agent.config.publishing import (
    PublishArtifact,
    artifacts_json,
    parse_artifacts,
    parse_file_mode,
)
from agent.core.durations import format_go_duration
from agent.core.errors import AgentError, CommandError, json_kind
from agent.core.records import Record
from agent.run.model import COMMAND_KEYS, EXEC_KEYS, Command, Exec, parse_commands

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

_RATE = re.compile(r"^[0-9]+-[SMHD]$")
_FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, repr=False, eq=False)
class VerifyKeyEntry(Record):
    """One configured verify key, optionally limited to a validity window (UTC).

    Args:
        key: the public key string (``ed25519public:...:kid``).
        not_before: tokens are not accepted with this key before this time.
        not_after: tokens are not accepted with this key after this time.
    """

    key: str
    not_before: datetime | None = None
    not_after: datetime | None = None
    sources: tuple[str, ...] | None = None
    actions: tuple[str, ...] | None = None


@dataclass(frozen=True, repr=False, eq=False)
class RevocationEntry(Record):
    """``run.revocations`` item: tokens signed by ``key`` with ``iat`` before ``before`` are
    refused.

    Args:
        key: a key id or a public key string.
        before: the revocation time (UTC).
    """

    key: str
    before: datetime


def parse_fingerprint(text: str) -> str:
    """Check a certificate fingerprint and return its canonical form.

    Accepts ``sha256:`` and 64 hex digits, in either case, optionally separated by colons (as
    ``openssl x509 -fingerprint -sha256`` prints them).

    Args:
        text: the fingerprint.

    Returns:
        ``sha256:<64 lowercase hex digits>``.

    Raises:
        ValueError: any other text; the message says what was expected.
    """
    prefix, sep, digits = text.strip().partition(":")
    canonical = f"{prefix.lower()}:{digits.replace(':', '').lower()}" if sep else text
    if not _FINGERPRINT.match(canonical):
        raise ValueError(
            "expected sha256:<64 hex digits> (the SHA-256 of the DER certificate, "
            "as `agent fingerprint` prints it), got "
            + (f"{len(digits.replace(':', ''))} characters after {prefix}:" if sep else "no prefix")
        )
    return canonical


# --------------------------------------------------------------------------------------------
# Scalars and plain JSON


def _string(f: Field, value: Any) -> str:
    expect(value, isinstance(value, str), "a string")
    if f.kind == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise Bad(f"expected a regular expression, got {value!r} ({exc})") from exc
    if f.kind == "rate" and not _RATE.match(value):
        raise Bad(f"expected a rate such as 10-M (<n>-<S|M|H|D>), got {value!r}")
    if f.kind == "choice" and value not in f.choices:
        raise Bad(f"expected one of {', '.join(f.choices)}, got {value!r}")
    return str(value)


def _bool(_: Field, value: Any) -> bool:
    expect(value, isinstance(value, bool), "a boolean")
    return bool(value)


def _int(f: Field, value: Any) -> int:
    expect(value, isinstance(value, int) and not isinstance(value, bool), "an integer")
    minimum = 1 if f.kind == "posint" else 0
    if value < minimum:
        raise Bad(f"expected an integer >= {minimum}, got {value}")
    return int(value)


def _duration(_: Field, value: Any) -> float:
    return duration_value(value)


def _str_list(_: Field, value: Any) -> tuple[str, ...]:
    expect(value, isinstance(value, list | tuple), "a list of strings")
    for item in value:
        expect(item, isinstance(item, str), "a list of strings (item)")
    return tuple(value)


def _object(_: Field, value: Any) -> dict[str, Any]:
    expect(value, isinstance(value, Mapping), "an object")
    return copy.deepcopy(dict(value))


#: The keys of ``nats.tls``.
NATS_TLS_KEYS = ("caFile", "certFile", "keyFile")


def _nats_tls(f: Field, value: Any) -> dict[str, Any]:
    obj = _object(f, value)
    for k, v in obj.items():
        if k not in NATS_TLS_KEYS:
            raise Bad(f"expected keys {', '.join(NATS_TLS_KEYS)}, got {k!r}")
        expect(v, isinstance(v, str), "a file path string")
    return obj


def _str_map(f: Field, value: Any) -> dict[str, Any]:
    obj = _object(f, value)
    for v in obj.values():
        expect(v, isinstance(v, str), "an object of strings (value)")
    return obj


def _port(_: Field, value: Any) -> str:
    valid = isinstance(value, str | int) and not isinstance(value, bool)
    expect(value, valid, "a port (string or integer)")
    text = str(value)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise Bad(f"expected a port between 1 and 65535, got {text!r}")
    return text


def _fingerprint(_: Field, value: Any) -> str:
    expect(value, isinstance(value, str), "a string")
    if value == "":
        return ""
    try:
        return parse_fingerprint(value)
    except ValueError as exc:
        raise Bad(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Verify keys


def _parse_time(value: Any, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    expect(value, isinstance(value, str), f"{name} as an RFC 3339 time string")
    from datetime import UTC, datetime  # stdlib, only for a configured validity window

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise Bad(f"expected {name} as an RFC 3339 time, got {value!r}") from exc
    if parsed.tzinfo is None:
        raise Bad(f"expected {name} as an RFC 3339 time with a zone (Z), got {value!r}")
    return parsed.astimezone(UTC)


def _names(value: Any, what: str, allowed: Sequence[str] = ()) -> tuple[str, ...]:
    """A non-empty list of distinct strings (each in ``allowed`` when given)."""
    expect(value, isinstance(value, list | tuple) and bool(value), f"{what} as a non-empty list")
    seen: list[str] = []
    for item in value:
        expect(item, isinstance(item, str) and bool(item), f"{what} items as non-empty strings")
        if allowed and item not in allowed:
            raise Bad(f"expected {what} among {', '.join(allowed)}, got {item!r}")
        if item in seen:
            raise Bad(f"expected distinct {what}, got {item!r} twice")
        seen.append(item)
    return tuple(seen)


def parse_scope_object(value: Any, *, required: bool) -> tuple[tuple[str, ...] | None, ...]:
    """``{sources: [...], actions: [...]}`` (both, or each optional unless ``required``).

    Returns:
        ``(sources, actions)``; ``None`` for an absent list (no limit).
    """
    expect(value, isinstance(value, Mapping), "an object {sources, actions}")
    unknown = sorted(set(value) - {"sources", "actions"})
    if unknown:
        raise Bad(f"expected keys sources, actions, got {unknown[0]!r}")
    out: list[tuple[str, ...] | None] = []
    for name, allowed in (("sources", ()), ("actions", ACTION_NAMES)):
        if name in value:
            out.append(_names(value[name], name, allowed))
        elif required:
            raise Bad(f"expected {name}, got none")
        else:
            out.append(None)
    return tuple(out)


def _verify_key(index: int, item: Any, *, scoped: bool = True) -> VerifyKeyEntry:
    keys = {"key", "notBefore", "notAfter"} | ({"sources", "actions"} if scoped else set())
    sources = actions = None
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - keys)
        if unknown:
            raise Bad(f"item {index}: expected keys {', '.join(sorted(keys))}, got {unknown[0]!r}")
        key = item.get("key")
        not_before = _parse_time(item.get("notBefore"), "notBefore")
        not_after = _parse_time(item.get("notAfter"), "notAfter")
        scope = {k: item[k] for k in ("sources", "actions") if k in item}
        if scope:
            try:
                sources, actions = parse_scope_object(scope, required=False)
            except Bad as exc:
                raise Bad(f"item {index}: {exc}") from None
    else:
        key, not_before, not_after = item, None, None
    if not isinstance(key, str) or not key:
        raise Bad(f"expected item {index} to be a key string, got {json_kind(key)}")
    if not_before and not_after and not_before > not_after:
        raise Bad(f"item {index}: expected notBefore before notAfter")
    # Lazy on purpose: importing the config loads no key code unless keys are configured
    # (tests/unit/config/test_config.py::test_importing_config_loads_no_heavy_modules guards it).
    from agent.jws.keys import parse_verify_key  # lazy: key code only when keys are configured

    try:
        parse_verify_key(key)
    except AgentError as exc:
        raise Bad(f"item {index}: {exc.message}") from exc
    return VerifyKeyEntry(key, not_before, not_after, sources, actions)


def _verify_keys(f: Field, value: Any) -> tuple[VerifyKeyEntry, ...]:
    if value == "":
        return ()
    if isinstance(value, str):
        value = [value]
    expect(value, isinstance(value, list | tuple), "a list of verify keys")
    scoped = f.kind == "verifykeys"
    return tuple(_verify_key(i, item, scoped=scoped) for i, item in enumerate(value))


def _revocations(_: Field, value: Any) -> tuple[RevocationEntry, ...]:
    expect(value, isinstance(value, list | tuple), "a list of {key, before} objects")
    out: list[RevocationEntry] = []
    for index, item in enumerate(value):
        expect(item, isinstance(item, Mapping), f"item {index} as an object {{key, before}}")
        unknown = sorted(set(item) - {"key", "before"})
        if unknown:
            raise Bad(f"item {index}: expected keys key, before, got {unknown[0]!r}")
        key = item.get("key")
        expect(key, isinstance(key, str) and bool(key), f"item {index} key as a key id string")
        before = _parse_time(item.get("before"), "before")
        if before is None:
            raise Bad(f"item {index}: expected before as an RFC 3339 time, got none")
        out.append(RevocationEntry(key, before))
    return tuple(out)


def _scope(_: Field, value: Any) -> dict[str, Any]:
    if value is None or value == {}:
        return {}
    sources, actions = parse_scope_object(value, required=True)
    return {"sources": list(sources or ()), "actions": list(actions or ())}


def _jwt_rule(_: Field, value: Any) -> str:
    expect(value, isinstance(value, str), "a CEL expression string")
    if value.strip():
        problem = check_rule(value)
        if problem:
            raise Bad(
                f"expected a CEL expression evaluating to a boolean, got one that does not "
                f"compile ({problem}); see docs/configuration.md#jwtrule"
            )
    return str(value)


# --------------------------------------------------------------------------------------------
# Commands and exec objects, parsed into the run model


def _check_exec_keys(value: Mapping[str, Any], sub: str) -> None:
    for key in value:
        if key not in EXEC_KEYS:
            raise Bad("unknown key", sub=f"{sub}.{key}", choices=EXEC_KEYS)


def _check_command_keys(value: Any, sub: str) -> None:
    """Name the first unknown key in a command list (nested lists and groups included)."""
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_command_keys(item, f"{sub}[{index}]")
        return
    if not isinstance(value, Mapping):
        return  # parse_commands names the wrong type
    for key, item in value.items():
        if key not in COMMAND_KEYS:
            raise Bad("unknown key", sub=f"{sub}.{key}", choices=COMMAND_KEYS)
        if key == "exec" and isinstance(item, Mapping):
            _check_exec_keys(item, f"{sub}.exec")
        elif key == "commands":
            _check_command_keys(item, f"{sub}.commands")


def parse_exec(value: Any, sub: str = "") -> Exec:
    """Type an exec object: unknown keys and wrong values are :class:`Bad` naming the key.

    Args:
        value: the JSON object.
        sub: the path of ``value`` below the field (for a linter: ``.shellcheck``).
    """
    if not isinstance(value, Mapping):
        raise Bad(f"expected an object, got {json_kind(value)}", sub=sub)
    _check_exec_keys(value, sub)
    for key, item in value.items():
        where = f"exec{sub}"
        try:
            Exec.from_dict({key: item}, where=where)
        except CommandError as exc:
            message = exc.message.removeprefix(f"{where}: exec field {key}: ")
            raise Bad(message, sub=f"{sub}.{key}") from None
    return Exec.from_dict(value, where=f"exec{sub}")


def _exec(_: Field, value: Any) -> Exec | None:
    return None if value is None else parse_exec(value)


def _commands(_: Field, value: Any) -> tuple[Command, ...]:
    expect(value, isinstance(value, list | tuple), "a list of commands")
    _check_command_keys(value, "")
    try:
        return parse_commands(copy.deepcopy(list(value)), where="")
    except CommandError as exc:
        raise Bad(exc.message) from None


def _shell(f: Field, value: Any) -> str | Exec:
    if isinstance(value, Mapping):
        return parse_exec(value)
    expect(value, isinstance(value, str), "a string or an exec object")
    return str(value)


def _linters(f: Field, value: Any) -> dict[str, Any]:
    # A null entry switches a linter off (e.g. the default shellcheck), as in Etcha.
    obj = {k: v for k, v in _object(f, value).items() if v is not None}
    for v in obj.values():
        expect(v, isinstance(v, Mapping), "an object of exec objects (value)")
    for name, v in obj.items():
        parse_exec(v, f".{name}")
    return obj


def linter_execs(linters: Mapping[str, Any]) -> dict[str, Exec]:
    """The checked ``lint.linters`` objects as :class:`Exec` values (name -> exec)."""
    return {name: parse_exec(v, f".{name}") for name, v in linters.items()}


_CONVERTERS: dict[str, Callable[[Field, Any], Any]] = {
    "str": _string,
    "regex": _string,
    "rate": _string,
    "choice": _string,
    "bool": _bool,
    "int": _int,
    "posint": _int,
    "duration": _duration,
    "duration_opt": _duration,
    "strlist": _str_list,
    "strmap": _str_map,
    "object": _object,
    "linters": _linters,
    "exec": _exec,
    "commands": _commands,
    "verifykeys": _verify_keys,
    "trustroots": _verify_keys,
    "revocations": _revocations,
    "scope": _scope,
    "jwtrule": _jwt_rule,
    "port": _port,
    "fingerprint": _fingerprint,
    "shell": _shell,
    "artifacts": lambda _, value: parse_artifacts(value),
    "filemode": lambda _, value: parse_file_mode(value),
    "natstls": _nats_tls,
}


def convert(f: Field, value: Any) -> Any:
    """Check ``value`` against ``f`` and return the typed value.

    Raises:
        Bad: the value does not fit; its message says what was expected and what was got.
    """
    return _CONVERTERS[f.kind](f, value)


# --------------------------------------------------------------------------------------------
# Back to JSON


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` zone."""
    from datetime import UTC  # stdlib, loaded already by whoever made ``value``

    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _verify_keys_json(value: Sequence[VerifyKeyEntry]) -> list[Any]:
    out: list[Any] = []
    for entry in value:
        obj: dict[str, Any] = {"key": entry.key}
        if entry.not_before is not None:
            obj["notBefore"] = format_time(entry.not_before)
        if entry.not_after is not None:
            obj["notAfter"] = format_time(entry.not_after)
        if entry.sources is not None:
            obj["sources"] = list(entry.sources)
        if entry.actions is not None:
            obj["actions"] = list(entry.actions)
        out.append(obj if len(obj) > 1 else entry.key)
    return out


def to_json(f: Field, value: Any) -> Any:
    """The JSON form of a typed value of ``f`` (loadable again by :func:`convert`)."""
    if f.kind == "duration":
        return format_go_duration(value)
    if f.kind == "duration_opt":
        return format_go_duration(value) if value else ""
    if f.kind in ("verifykeys", "trustroots"):
        return _verify_keys_json(value)
    if f.kind == "artifacts":
        return artifacts_json(value)
    if f.kind == "revocations":
        return [{"key": r.key, "before": format_time(r.before)} for r in value]
    if isinstance(value, Exec):
        return value.to_dict()
    if isinstance(value, tuple) and value and all(isinstance(c, Command) for c in value):
        return [c.to_json() for c in value]
    if isinstance(value, tuple):
        return copy.deepcopy(list(value))
    if isinstance(value, Mapping):
        return copy.deepcopy(dict(value))
    return value


__all__ = [
    "Bad",
    "PublishArtifact",
    "RevocationEntry",
    "VerifyKeyEntry",
    "convert",
    "expect",
    "format_go_duration",
    "format_time",
    "linter_execs",
    "parse_exec",
    "parse_fingerprint",
    "parse_scope_object",
    "to_json",
]
