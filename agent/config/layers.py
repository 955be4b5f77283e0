"""One config layer at a time: aliases, old names, ignored keys and the schema check.

Responsibility: turn one source of settings (a file, ``AGENT_CONFIG``, one ``AGENT_<path>``
variable, one ``-x``) into a checked, plain JSON layer in canonical names, and merge layers.

Invariants:

- Every layer is checked on its own before it is merged, so an unknown key or a wrong type is
  reported with the layer that holds it (``in /etc/agent.jsonnet``, ``in override -x run_x``).
  Keys inside commands and exec objects are checked too, and named with their full path
  (``sources.web.commands[0].exec.nope``), with the closest known key as a hint.
- Aliases (SPEC 16, 18) are resolved inside each layer: within one layer the newer name wins, and
  a later layer always wins over an earlier one whatever name it uses.
- Objects merge key-by-key; arrays and scalars replace; ``null`` resets a key to its default (and
  a ``null`` source or target deletes it).
- Error and log messages name keys, never values, so secrets never reach them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence

from agent.config.fields import (
    EXEC_SECTION,
    HTTP_CLIENT,
    IGNORED,
    IGNORED_SOURCE,
    IGNORED_TOP,
    LISTENER_KEYS,
    PUSH_TARGET,
    RAW_SECTIONS,
    RECORDS,
    SECTIONS,
    Field,
    default_value,
)
from agent.config.values import Bad, convert, format_time
from agent.core.errors import ConfigError, json_kind
from agent.core.logs import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Config warnings keep the logger name they always had (log filters and tests select it).
logger = get_logger("agent.config.schema")


class Layer:
    """One source of settings being checked; knows how to name itself in messages."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, path: str, message: str, hint: str | None = None) -> ConfigError:
        """A ConfigError naming the key ``path`` and this layer."""
        return ConfigError(f'config key "{path}" in {self.origin}: {message}', hint)

    def unknown(self, path: str, choices: Sequence[str]) -> ConfigError:
        """An unknown-key error naming the full ``path``, with the closest of ``choices``."""
        import difflib  # only to suggest a key in this error

        name = re.split(r"[.\]]", path)[-1]
        close = difflib.get_close_matches(name, list(choices), n=1)
        hint = f'did you mean "{close[0]}"?' if close else None
        return ConfigError(f'unknown config key "{path}" in {self.origin}', hint)

    def bad(self, path: str, exc: Bad) -> ConfigError:
        """The ConfigError for a value of ``path`` that did not convert."""
        full = f"{path}{exc.sub}"
        if exc.unknown:
            return self.unknown(full, exc.choices)
        return self.fail(full, str(exc))

    def warn_ignored(self, path: str) -> None:
        """Log that ``path`` is accepted and ignored."""
        logger.warning('config key "%s" in %s is accepted and ignored', path, self.origin)

    def resolve_alias(
        self,
        data: dict[str, Any],
        candidates: Sequence[tuple[tuple[str, str], bool]],
        canonical: tuple[str, str],
        prefix: str = "",
    ) -> None:
        """Move the winning candidate's value to ``canonical``; the last candidate given wins.

        ``candidates`` are ``((section, key), deprecated)`` in ascending precedence; a section of
        ``""`` means ``data`` itself. Deprecated names always warn; two names with different
        values warn naming the one that lost.
        """
        present: list[tuple[str, Any, bool]] = []
        for (section, key), deprecated in candidates:
            holder = data.get(section) if section else data
            if isinstance(holder, dict) and key in holder:
                name = f"{prefix}{section + '.' if section else ''}{key}"
                present.append((name, holder.pop(key), deprecated))
                if section and not holder:
                    del data[section]
        if not present:
            return
        new = f"{prefix}{canonical[0] + '.' if canonical[0] else ''}{canonical[1]}"
        winner_name, winner, _ = present[-1]
        for name, value, deprecated in present:
            if deprecated:
                logger.warning(
                    'config key "%s" in %s is an old name; use "%s"', name, self.origin, new
                )
            if name != winner_name and value != winner:
                logger.warning(
                    'config keys "%s" and "%s" both set in %s; "%s" wins',
                    name,
                    winner_name,
                    self.origin,
                    winner_name,
                )
        section, key = canonical
        holder = data.setdefault(section, {}) if section else data
        if not isinstance(holder, dict):
            raise self.fail(section, f"expected an object, got {json_kind(holder)}")
        holder[key] = winner


def check_record(layer: Layer, data: Any, fields: Sequence[Field], path: str) -> dict[str, Any]:
    """Check one object of typed fields (a section, a source, a target); return it as a dict."""
    if not isinstance(data, Mapping):
        raise layer.fail(path, f"expected an object, got {json_kind(data)}")
    by_key = {f.key: f for f in fields}
    for key, value in data.items():
        f = by_key.get(key)
        if f is None:
            raise layer.unknown(f"{path}.{key}", list(by_key))
        if value is None:
            continue
        try:
            convert(f, value)
        except Bad as exc:
            raise layer.bad(f"{path}.{key}", exc) from None
    return dict(data)


def normalize(data: Any, origin: str) -> dict[str, Any]:
    """Check one layer and return it with aliases resolved and ignored keys dropped.

    Raises:
        ConfigError: unknown key, wrong type or bad value (a jwtRule that does not compile).
    """
    layer = Layer(origin)
    if not isinstance(data, Mapping):
        raise ConfigError(f"config in {origin}: expected an object, got {json_kind(data)}")
    d: dict[str, Any] = _plain(data, layer, "")
    # Sections given as null are "not given".
    for key in [k for k, v in d.items() if v is None and k not in RECORDS]:
        del d[key]
    _drop_ignored_top(layer, d)
    for section in ("run", "http", "httpServer", "build", "httpClient", "cli"):
        if section in d and not isinstance(d[section], dict):
            raise layer.fail(section, f"expected an object, got {json_kind(d[section])}")
    _resolve_aliases(layer, d)
    _drop_ignored_in_sections(layer, d)
    for section in ("http", "httpServer"):
        rest = d.pop(section, None)
        if rest:
            raise layer.unknown(f"{section}.{next(iter(rest))}", LISTENER_KEYS)
    for key, value in list(d.items()):
        _check_section(layer, d, key, value)
    return d


def _drop_ignored_top(layer: Layer, d: dict[str, Any]) -> None:
    for key in IGNORED_TOP:
        if key in d:
            layer.warn_ignored(key)
            del d[key]
    if "jsonnet" in d:
        section = d.pop("jsonnet")
        if not isinstance(section, Mapping):
            raise layer.fail("jsonnet", f"expected an object, got {json_kind(section)}")
        for key in section:
            layer.warn_ignored(f"jsonnet.{key}")


def _drop_ignored_in_sections(layer: Layer, d: dict[str, Any]) -> None:
    for section, keys in IGNORED.items():
        for key in keys:
            if isinstance(d.get(section), dict) and key in d[section]:
                layer.warn_ignored(f"{section}.{key}")
                del d[section][key]


def _resolve_aliases(layer: Layer, d: dict[str, Any]) -> None:
    """The listener keys, the client TLS keys, ``build.pushTargets`` and the metrics secrets."""
    for key in LISTENER_KEYS:
        layer.resolve_alias(
            d,
            [(("run", key), False), (("http", key), True), (("httpServer", key), False)],
            ("run", key),
        )
    layer.resolve_alias(
        d, [(("build", "caFile"), False), (("httpClient", "caFile"), False)], ("build", "caFile")
    )
    layer.resolve_alias(
        d,
        [
            (("build", "pushTLSSkipVerify"), True),
            (("build", "tlsSkipVerify"), False),
            (("httpClient", "tlsSkipVerify"), False),
        ],
        ("build", "tlsSkipVerify"),
    )
    if isinstance(d.get("build"), dict) and "pushTargets" in d["build"]:
        _push_targets(layer, d)
    for name in ("Metrics", "Pprof"):
        layer.resolve_alias(
            d,
            [(("run", f"system{name}Secret"), True), (("run", f"system{name}Key"), False)],
            ("run", f"system{name}Key"),
        )


def _check_section(layer: Layer, d: dict[str, Any], key: str, value: Any) -> None:
    if key in SECTIONS:
        check_record(layer, value, SECTIONS[key], key)
    elif key == "httpClient":
        check_record(layer, value, HTTP_CLIENT, key)
    elif key in RAW_SECTIONS:
        if not isinstance(value, dict):
            raise layer.fail(key, f"expected an object, got {json_kind(value)}")
        if key == "exec":
            try:
                convert(EXEC_SECTION, value)
            except Bad as exc:
                raise layer.bad(key, exc) from None
    elif key in RECORDS:
        _normalize_records(layer, d, key)
    else:
        choices = [*SECTIONS, *RECORDS, *RAW_SECTIONS, "httpClient", "httpServer"]
        raise layer.unknown(key, choices)


def _push_targets(layer: Layer, d: dict[str, Any]) -> None:
    """Turn Etcha's old ``build.pushTargets`` into ``targets`` (a name in ``targets`` wins).

    ``{name: {hostname, insecure, path, port, sources: [...], vars}}`` becomes ``targets.<name>``
    with ``pathPush: path`` and ``sourcePatterns: {source: ""}`` for each listed source, so a push
    of a listed source goes to the target with the pattern or command given on the command line.
    """
    build = d["build"]
    old = build.pop("pushTargets")
    if not build:
        del d["build"]
    logger.warning(
        'config key "build.pushTargets" in %s is an old name; use "targets"', layer.origin
    )
    if old is None:
        return
    if not isinstance(old, dict):
        raise layer.fail("build.pushTargets", f"expected an object, got {json_kind(old)}")
    targets = d.setdefault("targets", {})
    if targets is None:
        targets = d["targets"] = {}
    if not isinstance(targets, dict):
        return  # _normalize_records reports it
    for name, record in old.items():
        path = f"build.pushTargets.{name}"
        if record is None:
            continue
        rec = check_record(layer, record, PUSH_TARGET, path)
        new: dict[str, Any] = {}
        for key in ("hostname", "insecure", "port", "vars"):
            if rec.get(key) is not None:
                new[key] = rec[key]
        if rec.get("path"):
            new["pathPush"] = rec["path"]
        new["sourcePatterns"] = {source: "" for source in rec.get("sources") or ()}
        if name in targets:
            logger.warning(
                'config keys "%s" and "targets.%s" both set in %s; "targets.%s" wins',
                path,
                name,
                layer.origin,
                name,
            )
            continue
        targets[name] = new


def _normalize_records(layer: Layer, d: dict[str, Any], section: str) -> None:
    records = d[section]
    if records is None:
        del d[section]
        return
    if not isinstance(records, dict):
        raise layer.fail(section, f"expected an object, got {json_kind(records)}")
    for name, record in records.items():
        path = f"{section}.{name}"
        if record is None:
            continue
        if not isinstance(record, dict):
            raise layer.fail(path, f"expected an object, got {json_kind(record)}")
        if section == "sources":
            for key in IGNORED_SOURCE:
                if key in record:
                    layer.warn_ignored(f"{path}.{key}")
                    del record[key]
            layer.resolve_alias(
                record,
                [(("", "runFrequencySec"), True), (("", "runFrequency"), False)],
                ("", "runFrequency"),
                prefix=f"{path}.",
            )
        else:
            layer.resolve_alias(
                record, [(("", "string"), True), (("", "port"), False)], ("", "port"), f"{path}."
            )
        check_record(layer, record, RECORDS[section], path)


def _plain(value: Any, layer: Layer, path: str) -> Any:
    """Deep-copy ``value`` into plain dicts/lists with string keys (YAML may give other keys)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(k, int | float) and not isinstance(k, bool):
                k = str(k)
            if not isinstance(k, str):
                where = path or "config"
                raise layer.fail(where, f"expected string keys, got {json_kind(k)}")
            out[k] = _plain(v, layer, f"{path}.{k}" if path else k)
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, layer, path) for v in value]
    if isinstance(value, str | int | float | None):
        return value
    from datetime import date, datetime  # stdlib: only YAML gives dates (and loaded it already)

    if isinstance(value, datetime):
        return format_time(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Objects merge key-by-key; everything else (lists, scalars, null) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def defaults() -> dict[str, Any]:
    """The default of every section, as the plain JSON layer every other layer merges onto."""
    out: dict[str, Any] = {s: {f.key: default_value(f) for f in fs} for s, fs in SECTIONS.items()}
    for key, (default, _) in RAW_SECTIONS.items():
        out[key] = copy.deepcopy(default)
    out["httpClient"] = {f.key: default_value(f) for f in HTTP_CLIENT}
    out["sources"] = {}
    out["targets"] = {}
    return out


__all__ = ["Layer", "check_record", "defaults", "merge", "normalize"]
