"""Loading the effective config: defaults, one file, ``AGENT_CONFIG``, ``AGENT_*``, ``-x``.

Responsibility: find and read the config file (Jsonnet, JSON or YAML), turn environment
variables and ``-x path=value`` overrides into layers, merge every layer (each checked on its own
by :mod:`agent.config.layers`) onto the defaults, and build the frozen, fully typed
:class:`~agent.config.tree.Config`.

Invariants:

- Each step overrides the one before (see :func:`load_config`); an error names the layer.
- Commands and exec objects are parsed into the run model here, once; a config error is raised
  at load time, never at run time.
- ``run.stateDir`` is made absolute against ``cwd``.
- Importing this module is cheap: YAML and Jsonnet are imported when first needed.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from agent.config.fields import (
    BUILD,
    CLI,
    EXEC_SECTION,
    LINT,
    NATS,
    PUBLISH,
    RUN,
    SOURCE,
    TARGET,
    TYPED_JSON_KINDS,
    Field,
    default_value,
    snake,
)
from agent.config.layers import Layer, defaults, merge, normalize
from agent.config.tree import (
    BuildConfig,
    CLIConfig,
    Config,
    HTTPClientConfig,
    LintConfig,
    NATSConfig,
    PublishConfig,
    RunConfig,
    SourceConfig,
    TargetConfig,
)
from agent.config.values import Bad, convert, linter_execs
from agent.core.errors import AgentError, ConfigError
from agent.core.logs import get_logger
from agent.core.paths import directories_up, join_text, path_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

# Config messages keep the logger name they always had (log filters and tests select it).
logger = get_logger("agent.config.schema")

#: Names searched for, in each directory from the cwd upward; the nearest directory wins.
CONFIG_FILE_NAMES = ("agent.jsonnet", "agent.yaml", "agent.yml", "agent.json")
#: Prefix of the environment variables that override config keys.
ENV_PREFIX = "AGENT_"

_INT = re.compile(r"^[+-]?[0-9]+$")
_INT64 = 2**63


def find_config_file(cwd: str | os.PathLike[str]) -> Path | None:
    """The nearest config file from ``cwd`` upward (see :data:`CONFIG_FILE_NAMES`), or None."""
    from pathlib import Path  # lazy: load_config uses the text (start-up, issue 14)

    found = _find_config_text(cwd)
    return None if found is None else Path(found)


def _find_config_text(cwd: str | os.PathLike[str]) -> str | None:
    """:func:`find_config_file`, as the text ``str(Path)`` would show."""
    for directory in directories_up(cwd):
        for name in CONFIG_FILE_NAMES:
            candidate = join_text(directory, name)
            if os.path.isfile(candidate):
                return candidate
    return None


def _import_callback(directory: str, rel: str) -> tuple[str, bytes]:
    full = os.path.normpath(os.path.join(directory, rel))
    try:
        with open(full, "rb") as fh:
            return full, fh.read()
    except OSError as exc:
        raise RuntimeError(f"cannot import {rel}: {exc.strerror}") from exc


def evaluate_jsonnet(text: str, filename: str) -> Any:
    from agent.jsonnet.engine import evaluate_text  # lazy: the engine loads _gojsonnet

    try:
        return evaluate_text(text, filename, import_callback=_import_callback)
    except AgentError as exc:
        raise ConfigError(exc.message) from exc


def read_config_file(file: str | os.PathLike[str]) -> Any:
    """Read and evaluate one config file: YAML by extension, otherwise Jsonnet (JSON included).

    Raises:
        ConfigError: unreadable file, YAML or Jsonnet error.
    """
    path = path_text(file)  # as str(Path(file)) shows it, in messages
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError(f"config file {path}: expected a readable file, got {reason}") from exc
    name = os.path.basename(path)
    dot = name.rfind(".")
    if 0 < dot < len(name) - 1 and name[dot:] in (".yaml", ".yml"):  # Path.suffix
        import yaml  # lazy: only YAML config files need it

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"config file {path}: expected YAML, got {problem}{where}") from exc
        return {} if data is None else data
    plain = plain_json(text)
    return plain if plain is not None else evaluate_jsonnet(text, path)


def _json_number(text: str) -> float | int:
    """A JSON number as Jsonnet yields it: a double, integral ones as ints."""
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return int(value) if value.is_integer() else value


def _jsonnet_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object as Jsonnet yields it: fields sorted; duplicates refused."""
    out = dict(sorted(pairs))
    if len(out) != len(pairs):
        raise ValueError("duplicate field")  # Jsonnet refuses those: let it say so
    return out


def plain_json(text: str) -> Any | None:
    """``text`` parsed as strict JSON with Jsonnet's result, or None (then Jsonnet evaluates it).

    Issue 14: most config files are plain JSON, and evaluating them would load the Go Jsonnet
    runtime (~6 MiB resident, and its start-up) into every CLI verb and every daemon. Numbers
    become doubles as in Jsonnet (integral ones ints) and fields are sorted, as Jsonnet does;
    duplicate fields, non-finite numbers and anything that is not strict JSON (comments, Jsonnet
    syntax) go to Jsonnet, which gives the same value or the same error as before.
    """
    try:
        return json.loads(
            text,
            parse_int=_json_number,
            parse_float=_json_number,
            parse_constant=_json_number,
            object_pairs_hook=_jsonnet_object,
        )
    except ValueError:
        return None


def parse_override_value(text: str) -> Any:
    """Type an override value the way Etcha does (reference §6.1).

    Go ``Atoi`` integers (``+5``, ``-3``, ``007``) become ints, ``true``/``false`` booleans,
    text starting with ``[`` or ``{`` is JSON, ``null`` is None, anything else a string.

    Raises:
        ConfigError: text starting with ``[``/``{`` that is not JSON.
    """
    if _INT.match(text) and -_INT64 <= int(text) < _INT64:
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"expected JSON, got invalid JSON ({exc.msg})") from exc
    return text


def _override_layer(key: str, value: str, origin: str) -> Any:
    if not key:
        raise ConfigError(f"{origin}: expected KEY=VALUE with a non-empty KEY")
    if key == "config":
        return evaluate_jsonnet(value, origin)
    try:
        typed = parse_override_value(value)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc.message}") from None
    parts = key.split("_")
    layer: dict[str, Any] = {}
    node = layer
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = typed
    return layer


def load_config(
    *,
    path: str | None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str],
    cwd: str | os.PathLike[str],
) -> Config:
    """Load the effective config; each step overrides the one before.

    1. defaults; 2. the config file (``path``, else the nearest of :data:`CONFIG_FILE_NAMES` from
    ``cwd`` upward; none found means defaults); 3. ``AGENT_CONFIG`` (Jsonnet); 4. ``AGENT_<path>``
    variables whose name has a lowercase letter, in name order; 5. ``overrides`` (``path=value``,
    ``config=<jsonnet>``), in order.

    Args:
        path: explicit config file (``-c``); it must exist.
        overrides: ``-x`` arguments.
        environ: the environment to read ``AGENT_*`` from (never modified).
        cwd: where the search starts and what a relative ``run.stateDir`` is resolved against.

    Raises:
        ConfigError: missing explicit file, unreadable file, bad key or value in any layer.

    Returns:
        The frozen config.
    """
    merged: dict[str, Any] = {}
    file_path: str | None  # as str(Path) shows it
    if path is not None:
        file_path = path_text(path) if os.path.isabs(path) else join_text(cwd, path)
        if not os.path.isfile(file_path):
            raise ConfigError(f"config file {path}: expected an existing file, got none")
    else:
        file_path = _find_config_text(cwd)
    if file_path is not None:
        logger.debug("loading config file %s", file_path)
        merged = merge(merged, normalize(read_config_file(file_path), file_path))
    text = environ.get(f"{ENV_PREFIX}CONFIG")
    if text:
        origin = f"env {ENV_PREFIX}CONFIG"
        merged = merge(merged, normalize(evaluate_jsonnet(text, origin), origin))
    for name in sorted(environ):
        key = name[len(ENV_PREFIX) :]
        if not name.startswith(ENV_PREFIX) or not any(c.islower() for c in key):
            continue
        origin = f"env {name}"
        merged = merge(merged, normalize(_override_layer(key, environ[name], origin), origin))
    for item in overrides:
        key, sep, value = item.partition("=")
        origin = f"override -x {key}"
        if not sep:
            raise ConfigError('override -x: expected KEY=VALUE, got no "="')
        merged = merge(merged, normalize(_override_layer(key, value, origin), origin))
    return config_from_dict(merged, cwd=cwd, origin="merged config")


# --------------------------------------------------------------------------------------------
# Building the typed tree


def _build_record(
    cls: Callable[..., Any], fields: Sequence[Field], data: Mapping[str, Any], **extra: Any
) -> Any:
    """One typed record from its merged JSON; commands and exec objects keep their JSON in raw."""
    kwargs: dict[str, Any] = dict(extra)
    raw: dict[str, Any] = {}
    for f in fields:
        value = data.get(f.key)
        value = default_value(f) if value is None else value
        kwargs[snake(f.key)] = convert(f, value)
        if f.kind in TYPED_JSON_KINDS and value is not None:
            raw[f.key] = copy.deepcopy(value)
    if raw:
        kwargs["raw"] = raw
    return cls(**kwargs)


def _build_targets(layer: Layer, records: Mapping[str, Any]) -> dict[str, TargetConfig]:
    targets = {}
    for name, rec in sorted(records.items()):
        if rec is None:
            continue
        if not rec.get("hostname"):
            rec = {**rec, "hostname": name}
        target = _build_record(TargetConfig, TARGET, rec, name=name)
        if target.fingerprint and target.insecure:
            raise layer.fail(
                f"targets.{name}.fingerprint",
                "expected an https target to pin a certificate, got insecure: true",
            )
        targets[name] = target
    return targets


def _build_config(merged: Mapping[str, Any], base: str | os.PathLike[str], layer: Layer) -> Config:
    build = _build_record(BuildConfig, BUILD, merged["build"])
    run = _build_record(RunConfig, RUN, merged["run"])
    state_dir = run.state_dir
    resolved = os.path.normpath(os.path.join(base, state_dir)) if state_dir else os.fspath(base)
    lint = _build_record(LintConfig, LINT, merged["lint"])
    client = merged["httpClient"]
    return Config(
        build=build,
        cli=_build_record(CLIConfig, CLI, merged["cli"]),
        exec=convert(EXEC_SECTION, merged["exec"]),
        http_client=HTTPClientConfig(
            ca_file=build.ca_file,
            no_system_ca=bool(client.get("noSystemCA")),
            tls_skip_verify=build.tls_skip_verify,
            follow_cross_origin_redirects=bool(client.get("followCrossOriginRedirects")),
        ),
        lint=replace(lint, linter_execs=linter_execs(lint.linters)),
        nats=_build_record(NATSConfig, NATS, merged["nats"]),
        run=replace(run, state_dir=resolved),
        sources={
            name: _build_record(SourceConfig, SOURCE, rec, name=name)
            for name, rec in sorted(merged["sources"].items())
            if rec is not None
        },
        targets=_build_targets(layer, merged["targets"]),
        vars=dict(merged["vars"]),
        raw_exec=copy.deepcopy(dict(merged["exec"])),
        publish=_build_record(PublishConfig, PUBLISH, merged["publish"]),
    )


def config_from_dict(
    data: Mapping[str, Any], *, cwd: str | os.PathLike[str] | None = None, origin: str = "config"
) -> Config:
    """Build a :class:`Config` from one camelCase mapping merged onto the defaults.

    Args:
        data: config keys as in a config file (aliases accepted).
        cwd: directory a relative ``run.stateDir`` is resolved against (default: the cwd).
        origin: how ``data`` is named in error messages.

    Raises:
        ConfigError: unknown key, wrong type or bad value.

    Returns:
        The frozen config.
    """
    return _typed(merge(defaults(), normalize(data, origin)), cwd=cwd, origin=origin)


def _typed(merged: Mapping[str, Any], *, cwd: str | os.PathLike[str] | None, origin: str) -> Config:
    layer = Layer(origin)
    try:
        return _build_config(merged, os.getcwd() if cwd is None else cwd, layer)
    except Bad as exc:  # pragma: no cover - every value was checked by normalize
        raise layer.fail("config", str(exc)) from None


__all__ = [
    "CONFIG_FILE_NAMES",
    "ENV_PREFIX",
    "config_from_dict",
    "evaluate_jsonnet",
    "find_config_file",
    "load_config",
    "parse_override_value",
    "read_config_file",
]
